#!/usr/bin/env bash
# What the status page's polling costs a relay under load. One shard pinned
# to cpu 0 (so every poll lands on the shard doing the fan-out); the
# generator on cpu 1 at a fixed rate below saturation; runs alternate (ABBA)
# without and with a poller that fetches /status.json once a second on one
# keep-alive connection, as the page does. Then, apart, the cost of one
# request: the relay's cpu time over N back-to-back requests of /version
# (the cheapest answer), /status.json and /metrics on an idle relay; the
# difference from /version is what building the snapshot costs.
#
# Prints one Markdown row per run. Usage:
#   [POLLS_PER_SEC=1] [REQUESTS=20000] loadtest/status-poll-cost.sh [PAIRS] [MEMBERS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}
members=${2:-200}
rate=${3:-1000}
port=${PORT:-18350}
cargo build --release -q -p itty-relay -p itty-loadtest
out=$(mktemp -d)
# The relay binds with SO_REUSEPORT: a second server on the same port would
# silently take half the connections. Refuse to start beside one, and leave
# nothing running on exit.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
port_free || { echo "port $port is in use (PORT=... to choose another)" >&2; exit 1; }
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
lifted=(--upgrades-per-ip-per-sec 100000 --upgrades-per-ip-burst 100000)

# The page's polling: one keep-alive connection, POLLS_PER_SEC GETs a second
# (1, as the page; more to magnify an effect), until killed.
polls_per_sec=${POLLS_PER_SEC:-1}
poller() {
  exec taskset -c 1 python3 - "$port" "$polls_per_sec" <<'PY'
import http.client, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
interval = 1 / float(sys.argv[2])
while True:
    conn.request("GET", "/status.json")
    body = conn.getresponse().read()
    assert body.startswith(b'{"version"'), body[:80]
    time.sleep(interval)
PY
}

# Relay cpu time in seconds (utime + stime of /proc/PID/stat).
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

echo "poller: $polls_per_sec request(s) a second; members $members, rate $rate msg/s, 15 s a run"
echo
echo "| run | poller | deliveries/s | p50 ms | p99 ms | max ms | lost | relay cpu s | load before |"
echo "|---|---|---|---|---|---|---|---|---|"
for pair in $(seq "$pairs"); do
  # ABBA: the order alternates, so a drift in the machine's load or a
  # first-or-second effect does not side with one kind.
  order="no yes"
  [ $((pair % 2)) -eq 0 ] && order="yes no"
  for polled in $order; do
    port_free || { echo "port $port is in use" >&2; exit 1; }
    taskset -c 0 ./target/release/itty-relay --listen "127.0.0.1:$port" --shards 1 --log warn "${lifted[@]}" \
      --messages-per-conn-per-sec 1000000 --messages-per-conn-burst 1000000 >/dev/null 2>&1 &
    relay=$!
    sleep 0.5
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    poll=
    if [ "$polled" = yes ]; then poller & poll=$!; fi
    ./target/release/itty-loadtest fanout --url "ws://127.0.0.1:$port" --channel "poll-cost-$pair-$polled" \
      --members "$members" --publishers 1 --rate "$rate" --payload-bytes 64 --duration 15 --grace 3 \
      --cpus 1 --relay-pid "$relay" --json > "$out/run.json" 2>"$out/run.err" || true
    if [ -n "$poll" ]; then
      # The poller must have lasted the whole run.
      kill -0 "$poll" 2>/dev/null || echo "WARNING: the poller died during run $pair" >&2
      kill "$poll" 2>/dev/null || true; wait "$poll" 2>/dev/null || true
    fi
    kill "$relay"; wait "$relay" 2>/dev/null || true
    python3 - "$out/run.json" "$pair" "$polled" "$load" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {d['deliveries_per_s']:,.0f} | {d['latency_ms_p50']:.2f} | "
      f"{d['latency_ms_p99']:.2f} | {d['latency_ms_max']:.1f} | {d['lost']} | {d['relay_cpu_s']:.2f} | {sys.argv[4]} |")
PY
    sleep 1
  done
done

# One request's cost, apart: N requests of each path on one keep-alive
# connection against an idle relay, its cpu time before and after.
n=${REQUESTS:-20000}
echo
echo "| path | requests | relay cpu s | relay cpu per request, us |"
echo "|---|---|---|---|"
for round in 1 2; do
  for path in /version /status.json /metrics; do
    port_free || { echo "port $port is in use" >&2; exit 1; }
    taskset -c 0 ./target/release/itty-relay --listen "127.0.0.1:$port" --shards 1 --log warn >/dev/null 2>&1 &
    relay=$!
    sleep 0.5
    before=$(cpu_s "$relay")
    taskset -c 1 python3 - "$port" "$n" "$path" <<'PY'
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
for _ in range(int(sys.argv[2])):
    conn.request("GET", sys.argv[3])
    conn.getresponse().read()
PY
    after=$(cpu_s "$relay")
    kill "$relay"; wait "$relay" 2>/dev/null || true
    awk -v p="$path" -v b="$before" -v a="$after" -v n="$n" 'BEGIN {
      printf "| %s | %d | %.2f | %.1f |\n", p, n, a - b, (a - b) / n * 1e6 }'
  done
done
