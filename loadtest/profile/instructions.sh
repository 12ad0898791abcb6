#!/usr/bin/env bash
# User-space instructions per message of a relay at light load, counted by
# valgrind's callgrind: the same run gives the same count to within a few
# tenths of a percent, where cpu time on this shared host moves +-10%
# between back-to-back runs. For comparing two builds' user-space work (a
# change to our code or to glommio); it does not see the kernel, and an
# instruction is not a nanosecond, so a gain here still wants a time
# measurement before it is claimed as speed.
#
#   loadtest/profile/instructions.sh [--scenario rooms|fanout|connect] [--top N] [--keep FILE] RELAY [PORT]
#
# RELAY is an itty-relay binary, or `uws` for the uWebSockets itty relay in
# $UWS_BIN_DIR (default target/uws). The relay runs under callgrind on cpu
# 0 with one shard and its limits lifted; the generator on cpu 1 joins, and
# after 8 s the counters are zeroed, 10 s counted and dumped:
#   rooms:  10 rooms x 10 members, each 3 messages/s (300 messages/s,
#           each one a wake-up of its own, as in the light-load runs)
#   fanout: 100 members, one publisher at 300 messages/s
#   connect: 300 joins/s (open loop, 100 channels), each one connecting,
#           upgrading, joining and leaving; counted per join
# Prints the instructions per message (or join) and the top functions by
# their own instructions per message. --keep FILE keeps callgrind's output
# (callers, call counts: callgrind_annotate or kcachegrind read it).
# Needs valgrind (Debian's package) and a release build of itty-loadtest
# ($GEN). rooms and fanout repeat within 0.2%; connect within about 10%
# (how often a connection finds the backlog empty or its request not yet
# there depends on timing, and each costs a glommio wait).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
GEN=${GEN:-$repo/target/release/itty-loadtest}
UWS_BIN_DIR=${UWS_BIN_DIR:-$repo/target/uws}
scenario=rooms top=25 keep=
while [[ $# -gt 0 ]]; do
  case $1 in
    --scenario) scenario=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) break ;;
  esac
done
relay=${1:?usage: instructions.sh [--scenario rooms|fanout|connect] [--top N] [--keep FILE] RELAY [PORT]}
port=${2:-19700}
rate=300 window=10 unit=message
case $scenario in
  rooms) load=(rooms --rooms 10 --room-size 10 --rate-per-member 3 --payload-bytes 64) ;;
  fanout) load=(fanout --members 100 --publishers 1 --rate $rate --payload-bytes 64) ;;
  connect) load=(connect --rate $rate --channels 100) unit=join ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
out=$(mktemp -d)
trap 'kill $vg $gen 2>/dev/null || true; rm -rf "$out"' EXIT
lift=(--messages-per-conn-per-sec 1000000000 --messages-per-conn-burst 1000000000
  --upgrades-per-ip-per-sec 1000000000 --upgrades-per-ip-burst 1000000000)
cg=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$out/cg")
if [[ $relay == uws ]]; then
  taskset -c 0 "${cg[@]}" "$UWS_BIN_DIR/uws-itty-relay" "127.0.0.1:$port" >"$out/relay.log" 2>&1 &
else
  taskset -c 0 "${cg[@]}" "$relay" --listen "127.0.0.1:$port" --shards 1 --log error "${lift[@]}" \
    >"$out/relay.log" 2>&1 &
fi
vg=$!
for _ in $(seq 1 120); do ss -ltn | grep -q "127.0.0.1:$port " && break; sleep 0.5; done
taskset -c 1 "$GEN" "${load[@]}" --url "ws://127.0.0.1:$port" \
  --duration $((window + 12)) --cpus 1 --json >"$out/gen.json" 2>/dev/null &
gen=$!
sleep 8
callgrind_control -z $vg >/dev/null 2>&1
sleep $window
callgrind_control -d $vg >/dev/null 2>&1
wait $gen || true
kill $vg 2>/dev/null || true
wait $vg 2>/dev/null || true
if [[ -n $keep ]]; then cp "$out/cg.1" "$keep"; fi
python3 - "$out/cg.1" $((rate * window)) "$top" "$out/gen.json" "$unit" <<'EOF'
import collections, json, sys
path, messages, top, gen, unit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
own = collections.Counter()
fn, call_line = None, False
for line in open(path):
    if line.startswith("fn="):
        fn = line[3:].strip()
    elif line.startswith("calls="):
        call_line = True  # the next cost line is the callee's, not ours
    elif line[:1].isdigit() or line[:1] in "+-*":
        parts = line.split()
        if len(parts) >= 2 and fn is not None:
            if call_line:
                call_line = False
            else:
                own[fn] += int(parts[1])
total = sum(own.values())
report = json.load(open(gen))
lost = report.get("lost", report.get("failures"))
print(f"{total / messages:.0f} instructions per {unit} ({total} over {messages} {unit}s; lost or failed: {lost})")
for name, n in own.most_common(top):
    print(f"{n / messages:8.0f} {100 * n / total:5.1f}%  {name[:120]}")
EOF
