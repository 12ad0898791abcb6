#!/usr/bin/env bash
# A cluster's cost, same run, same box: one node without a backplane, one
# node on Redis, three nodes on Redis (the generator spreading connections
# over them: connection i goes to node i mod 3), at fan-out 1,000 and in
# rooms, at fixed rates below the generator's limit. Everything on the
# server side (relays, their bridge threads, redis-server) shares cpu 0;
# the generator has cpu 1. On two cores the three-node figure is the
# backplane's cost, not scale-out.
#
#   loadtest/cluster.sh [RELAY] [ROUNDS]
#
#   RELAY   an itty-relay binary (default target/release/itty-relay)
#   ROUNDS  runs per configuration and scenario, interleaved (default 3)
#
# Environment: LOADTEST (default target/release/itty-loadtest), PORT (first
# relay port, default 18300; Redis on PORT+10), DURATION (s, default 8),
# FANOUT_RATE (msg/s to 1,000 members; default 300), ROOMS_RATE (msg/s per
# member, 100 rooms of 10; default 20). A third scenario, `pair`, sends
# 200 msg/s from a publisher to one member (on another node with three
# nodes): the latency a crossing adds.
set -euo pipefail
cd "$(dirname "$0")/.."
relay=${1:-target/release/itty-relay}
rounds=${2:-3}
gen=${LOADTEST:-target/release/itty-loadtest}
port=${PORT:-18300}
redis_port=$((port + 10))
duration=${DURATION:-8}
fanout_rate=${FANOUT_RATE:-300}
rooms_rate=${ROOMS_RATE:-20}
out=$(mktemp -d)
echo "results in $out" >&2
export ITTY_CLUSTER_SECRET=loadtest-cluster-secret-0123456789

pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

wait_health() {
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "node on $1 not healthy" >&2
  return 1
}

# start CONFIG: CONFIG is single, single-redis or three-redis. Sets urls,
# relay_args (--relay-pid ...) and engine_args (--engine-pid ...).
start() {
  local config=$1 nodes=1 backplane=()
  urls=() relay_args=() engine_args=()
  if [[ $config != single ]]; then
    taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
      --appendonly no --logfile /dev/null &
    pids+=($!)
    engine_args=(--engine-pid $!)
    until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
    backplane=(--backplane "redis://127.0.0.1:$redis_port")
  fi
  [[ $config == three-redis ]] && nodes=3
  for n in $(seq 0 $((nodes - 1))); do
    local p=$((port + n))
    taskset -c 0 "$relay" --listen "127.0.0.1:$p" --shards 1 --pin false --log error \
      --messages-per-conn-per-sec 1000000 --messages-per-conn-burst 1000000 \
      "${backplane[@]}" 2>/dev/null &
    pids+=($!)
    relay_args+=(--relay-pid $!)
    urls+=(--url "ws://127.0.0.1:$p")
  done
  for n in $(seq 0 $((nodes - 1))); do wait_health $((port + n)); done
}

run() {
  local label=$1 config=$2
  shift 2
  start "$config"
  "$gen" "$@" "${urls[@]}" --duration "$duration" --cpus 1 \
    "${relay_args[@]}" "${engine_args[@]}" --json >"$out/$label.json" 2>"$out/$label.err" || true
  printf 'load %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >"$out/$label.state"
  stop_all
  sleep 1
}

configs=(single single-redis three-redis)
for round in $(seq 1 "$rounds"); do
  for config in "${configs[@]}"; do
    run "fanout-$config-$round" "$config" fanout --members 1000 --publishers 1 \
      --rate "$fanout_rate" --payload-bytes 64
    run "rooms-$config-$round" "$config" rooms --rooms 100 --room-size 10 \
      --rate-per-member "$rooms_rate" --payload-bytes 64
    # One member and one publisher, at a low rate: with three nodes the
    # member is on node 0 and the publisher on node 1, so every message
    # crosses the engine; the latency added to an idle relay's.
    run "pair-$config-$round" "$config" fanout --members 1 --publishers 1 \
      --rate 200 --payload-bytes 64
  done
done

python3 - "$out" "$rounds" "${configs[@]}" <<'PY'
import json, statistics, sys, pathlib
out, rounds, configs = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
keys = [("deliveries_per_s", "deliveries/s", "{:,.0f}"),
        ("latency_ms_p50", "p50 ms", "{:.2f}"),
        ("latency_ms_p99", "p99 ms", "{:.2f}"),
        ("relay_cpu_s_per_million_deliveries", "relays cpu-s per M deliveries", "{:.3f}"),
        ("engine_util", "redis cpu (cores)", "{:.3f}"),
        ("engine_cpu_us_per_message", "redis cpu us per message", "{:.2f}")]
notes = []
print("| scenario | measure | " + " | ".join(f"{c} median (min-max)" for c in configs) + " |")
print("|---|---|" + "---|" * len(configs))
for scenario in ["fanout", "rooms", "pair"]:
    runs = {}
    for c in configs:
        runs[c] = []
        for r in range(1, rounds + 1):
            f = out / f"{scenario}-{c}-{r}.json"
            try:
                d = json.load(open(f))
            except Exception:
                notes.append(f"{scenario} {c} run {r}: no result ({(out / f'{scenario}-{c}-{r}.err').read_text()[-300:]!r})")
                continue
            if d.get("lost") or d.get("generator_saturated"):
                notes.append(f"{scenario} {c} run {r}: lost {d.get('lost')}, generator saturated {d.get('generator_saturated')}")
            notes.append(f"{scenario} {c} run {r}: {(out / f'{scenario}-{c}-{r}.state').read_text().strip()}")
            runs[c].append(d)
    for key, name, fmt in keys:
        cells = []
        for c in configs:
            vals = [d[key] for d in runs[c] if d.get(key) is not None]
            if not vals:
                cells.append("-"); continue
            m = statistics.median(vals)
            cells.append(f"{fmt.format(m)} ({fmt.format(min(vals))}-{fmt.format(max(vals))})")
        print(f"| {scenario} | {name} | " + " | ".join(cells) + " |")
print()
for n in notes:
    print(f"- {n}")
PY
