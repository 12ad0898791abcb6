#!/usr/bin/env bash
# A soak: the relay (2 shards) under a steady chat load with connection
# churn for SECONDS (default 600), its RSS and open connections sampled
# every 10 s. Memory is flat when, after the first minute (warm-up), the
# last minute's mean RSS is within 5% of the second minute's and the fitted
# slope stays under 1% of the mean per minute. Not part of .ci/run (it
# takes ten minutes); run it before a release and keep the output in
# loadtest/runs/.
#
# Load: `itty-loadtest rooms` (100 rooms of 10, each member publishing 5
# messages a second: 5,000 messages and 45,000 deliveries a second) and
# `itty-loadtest connect` (20 connections a second opened, joined and
# closed), both inside the default limits.
#
# Usage: loadtest/soak.sh [SECONDS]    (env PORT, default 18300;
#        SAMPLE_SECONDS, default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
port=${PORT:-18300}
cargo build --release -q -p itty-relay -p itty-loadtest
out=$(mktemp -d)
url="ws://127.0.0.1:$port"

./target/release/itty-relay --listen "127.0.0.1:$port" --shards 2 --log warn \
  --upgrades-per-ip-per-sec 100000 --upgrades-per-ip-burst 100000 &
relay=$!
trap 'kill "$relay" 2>/dev/null || true' EXIT
sleep 0.5

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$relay/status"; }
open_conns() {
  curl -s "http://127.0.0.1:$port/metrics" |
    awk '/^itty_connections_open\{/ { sum += $2 } END { print sum + 0 }'
}

echo "soak: ${seconds} s, relay pid $relay, load before $(cut -d' ' -f1-3 /proc/loadavg)"
./target/release/itty-loadtest rooms --url "$url" --rooms 100 --room-size 10 \
  --rate-per-member 5 --payload-bytes 64 --duration "$seconds" --cpus 1 --json \
  > "$out/rooms.json" 2> "$out/rooms.err" &
rooms=$!
./target/release/itty-loadtest connect --url "$url" --rate 20 --duration "$seconds" \
  --channels 50 --cpus 1 --json > "$out/connect.json" 2> "$out/connect.err" &
churn=$!

echo "t_s,rss_kib,connections_open" | tee "$out/samples.csv"
start=$(date +%s)
while kill -0 "$rooms" 2>/dev/null; do
  sleep "${SAMPLE_SECONDS:-10}"
  kill -0 "$rooms" 2>/dev/null || break
  echo "$(( $(date +%s) - start )),$(rss_kib),$(open_conns)" | tee -a "$out/samples.csv"
done
wait "$rooms" || true
wait "$churn" || true
sleep 3
echo "after the load: rss $(rss_kib) KiB, connections open $(open_conns)"

python3 - "$out" <<'PY'
import csv, json, sys
out = sys.argv[1]
rows = [(int(r["t_s"]), int(r["rss_kib"])) for r in csv.DictReader(open(f"{out}/samples.csv"))]
rooms = json.load(open(f"{out}/rooms.json"))
churn = json.load(open(f"{out}/connect.json"))
print(f"rooms: {rooms['deliveries_per_s']:,.0f} deliveries/s, p50 {rooms['latency_ms_p50']:.2f} ms, "
      f"p99 {rooms['latency_ms_p99']:.2f} ms, lost {rooms['lost']}")
failed = sum(churn['failed'].values())
print(f"churn: {churn['joined']} of {churn['attempts']} connections opened, joined and closed "
      f"(join p99 {churn['join_ms_p99']:.2f} ms), failed {failed} {churn['failed'] or ''}")
steady = [(t, r) for t, r in rows if t > 60]
if len(steady) < 8:
    sys.exit("too few samples after the first minute to judge")
second = [r for t, r in steady if t <= 120]
last = [r for t, r in steady if t > steady[-1][0] - 60]
mean = lambda xs: sum(xs) / len(xs)
n = len(steady)
tm, rm = mean([t for t, _ in steady]), mean([r for _, r in steady])
slope = sum((t - tm) * (r - rm) for t, r in steady) / sum((t - tm) ** 2 for t, _ in steady)
growth = (mean(last) - mean(second)) / mean(second)
per_min = slope * 60 / rm
print(f"rss: min {min(r for _, r in steady)} KiB, max {max(r for _, r in steady)} KiB; "
      f"second minute {mean(second):.0f} KiB, last minute {mean(last):.0f} KiB ({growth:+.1%}); "
      f"fitted slope {slope * 60:+.1f} KiB/min ({per_min:+.2%} of the mean per minute)")
flat = abs(growth) < 0.05 and abs(per_min) < 0.01
print("verdict: memory flat" if flat else "verdict: memory NOT flat")
sys.exit(0 if flat else 1)
PY
