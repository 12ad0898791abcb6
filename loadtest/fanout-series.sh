#!/usr/bin/env bash
# One shard, one publisher, N members: the relay pinned to cpu 0, the
# generator to cpu 1, one 10 s run per rate. Prints one Markdown row per
# rate, with the machine's load before each run.
#
#   loadtest/fanout-series.sh MEMBERS RATE...      e.g.  loadtest/fanout-series.sh 1000 200 1000 4000
set -euo pipefail
cd "$(dirname "$0")/.."
members=$1; shift
port=${PORT:-18100}
cargo build --release -q -p itty-relay -p itty-loadtest
./target/release/itty-relay --listen "127.0.0.1:$port" --shards 1 --log warn &
relay=$!
trap 'kill $relay 2>/dev/null' EXIT
sleep 0.5
out=$(mktemp -d)
echo "| members | rate msg/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | lost | relay cpu-s per M deliveries | generator busy | publisher lag p99 ms | load before |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for rate in "$@"; do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  ./target/release/itty-loadtest fanout --url "ws://127.0.0.1:$port" --members "$members" --publishers 1 \
    --rate "$rate" --payload-bytes 64 --duration 10 --cpus 1 --relay-pid "$relay" --json > "$out/$rate.json" 2>/dev/null
  python3 - "$out/$rate.json" "$load" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
busy = f"{d['generator_util_avg']*100:.0f}%" + (" (saturated)" if d['generator_saturated'] else "")
print(f"| {d['members']} | {d['rate_msgs_per_s']} | {d['deliveries_per_s']:,.0f} | {d['latency_ms_p50']:.1f} | {d['latency_ms_p99']:.1f} | "
      f"{d['latency_ms_p999']:.1f} | {d['lost']} | {d['relay_cpu_s_per_million_deliveries']:.2f} | {busy} | {d['publisher_lag_ms_p99']:.1f} | {sys.argv[2]} |")
PY
  sleep 1
done
