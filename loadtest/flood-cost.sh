#!/usr/bin/env bash
# What a flood of 100,000 messages from one client costs the other members
# of its channel. One shard pinned to cpu 0; the generator (100 members, 4
# publishers at 30 msg/s each: inside the default per-connection limit) on
# cpu 1; the flooder (loadtest/flood.py) joins the same channel and, 3 s in,
# writes 100,000 messages at once. Three runs:
#
#   baseline   no flood
#   limited    the flood, default limits (40/s, burst 100, 3 warnings, kick)
#   unlimited  the flood with the message limit lifted: every message relayed
#
# Prints one Markdown row per run. Usage: loadtest/flood-cost.sh [MEMBERS]
set -euo pipefail
cd "$(dirname "$0")/.."
members=${1:-100}
port=${PORT:-18200}
cargo build --release -q -p itty-relay -p itty-loadtest
out=$(mktemp -d)
lifted=(--upgrades-per-ip-per-sec 100000 --upgrades-per-ip-burst 100000)
echo "| run | deliveries/s (all) | p50 ms | p99 ms | max ms | lost (of the publishers' messages) | relay cpu s | flood messages relayed to each member | flooder got | load before |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for run in baseline limited unlimited; do
  extra=()
  [ "$run" = unlimited ] && extra=(--messages-per-conn-per-sec 1000000000 --messages-per-conn-burst 1000000000)
  ./target/release/itty-relay --listen "127.0.0.1:$port" --shards 1 --log warn "${lifted[@]}" "${extra[@]}" &
  relay=$!
  sleep 0.5
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  channel="flood-cost-$run-$$"
  ./target/release/itty-loadtest fanout --url "ws://127.0.0.1:$port" --channel "$channel" \
    --members "$members" --publishers 4 --rate 120 --payload-bytes 64 --duration 10 --grace 5 \
    --cpus 1 --relay-pid "$relay" --json > "$out/$run.json" 2>"$out/$run.err" &
  gen=$!
  if [ "$run" != baseline ]; then
    # Join after the members (the generator's setup takes well under 2 s).
    sleep 2
    taskset -c 1 python3 loadtest/flood.py --port "$port" --channel "$channel" --count 100000 \
      --delay 3 --timeout 20 > "$out/$run.flood.json" || true
  fi
  wait "$gen" || true
  kill "$relay"; wait "$relay" 2>/dev/null || true
  python3 - "$out/$run.json" "$out/$run.flood.json" "$run" "$load" <<'PY'
import json, os, sys
d = json.load(open(sys.argv[1]))
flood = json.load(open(sys.argv[2])) if os.path.exists(sys.argv[2]) else None
got = "-" if flood is None else f"{flood['error_events']} warnings, close {flood['close']}"
relayed = "-" if flood is None else f"{d.get('unstamped', 0) // max(d['members_joined'], 1):,}"
# Flood frames carry no stamp: they count as received but not expected.
lost = d['lost'] + d.get('unstamped', 0)
print(f"| {sys.argv[3]} | {d['deliveries_per_s']:,.0f} | {d['latency_ms_p50']:.2f} | {d['latency_ms_p99']:.2f} | "
      f"{d['latency_ms_max']:.1f} | {lost} | {d['relay_cpu_s']:.2f} | {relayed} | {got} | {sys.argv[4]} |")
PY
  sleep 1
done
