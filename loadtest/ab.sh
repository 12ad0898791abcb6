#!/usr/bin/env bash
# Two relay builds on the same scenarios, interleaved and repeated (A, B,
# A, B, ...), so that the box's drift hits both alike: the before/after
# check of a change. Each run records the machine's state (load, cpu and
# io pressure) beside its figures; the summary gives each build's median
# and spread (min-max) and the ratio B/A of the medians.
#
#   loadtest/ab.sh RELAY_A RELAY_B [ROUNDS]
#
#   RELAY_A, RELAY_B  two itty-relay binaries (e.g. a copy of the build
#                     before a change, and target/release/itty-relay)
#   ROUNDS            runs per build and scenario (default 3)
#
# Environment: LOADTEST (the generator; default target/release/itty-loadtest,
# the same binary for both builds), PORT (default 18200), DURATION (s per
# run, default 8), FANOUT_RATE (msg/s to 1,000 members, 1 shard; default
# 600), ROOMS_RATE (msg/s per member, 100 rooms of 10, 2 shards; default
# 40). Rates are fixed and below the generator's limit, so the figures
# that compare are the relay's cost (cpu-s per million deliveries) and
# its latency; a run that lost anything or saturated the generator is
# flagged in the table.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 rounds=${3:-3}
gen=${LOADTEST:-target/release/itty-loadtest}
port=${PORT:-18200}
duration=${DURATION:-8}
fanout_rate=${FANOUT_RATE:-600}
rooms_rate=${ROOMS_RATE:-40}
out=$(mktemp -d)
echo "results in $out" >&2

# run LABEL RELAY SHARDS SCENARIO-ARGS...
run() {
  local label=$1 relay=$2 shards=$3
  shift 3
  # The per-connection message limit is lifted: a publisher sends far over
  # a chat client's 40 msg/s.
  "$relay" --listen "127.0.0.1:$port" --shards "$shards" --log error \
    --messages-per-conn-per-sec 1000000 --messages-per-conn-burst 1000000 2>/dev/null &
  local pid=$!
  sleep 0.5
  local state
  state=$(printf 'load %s; cpu %s; io %s' "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(head -1 /proc/pressure/cpu | cut -d' ' -f2)" "$(head -1 /proc/pressure/io | cut -d' ' -f2)")
  "$gen" "$@" --url "ws://127.0.0.1:$port" --duration "$duration" --cpus 1 \
    --relay-pid "$pid" --json >"$out/$label.json" 2>"$out/$label.err" || true
  echo "$state" >"$out/$label.state"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 1
}

for round in $(seq 1 "$rounds"); do
  for build in A B; do
    relay=$a
    [[ $build == B ]] && relay=$b
    run "fanout-$build-$round" "$relay" 1 fanout --members 1000 --publishers 1 \
      --rate "$fanout_rate" --payload-bytes 64
    run "rooms-$build-$round" "$relay" 2 rooms --rooms 100 --room-size 10 \
      --rate-per-member "$rooms_rate" --payload-bytes 64
  done
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, pathlib
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
keys = [("deliveries_per_s", "deliveries/s", "{:,.0f}"),
        ("relay_cpu_s_per_million_deliveries", "relay cpu-s per M", "{:.3f}"),
        ("latency_ms_p50", "p50 ms", "{:.2f}"),
        ("latency_ms_p99", "p99 ms", "{:.2f}")]
print("| scenario | measure | A median (min-max) | B median (min-max) | B/A |")
print("|---|---|---|---|---|")
notes = []
for scenario in ["fanout", "rooms"]:
    runs = {}
    for build in "AB":
        runs[build] = []
        for r in range(1, rounds + 1):
            f = out / f"{scenario}-{build}-{r}.json"
            try:
                d = json.load(open(f))
            except Exception:
                notes.append(f"{scenario} {build} run {r}: no result ({(out / f'{scenario}-{build}-{r}.err').read_text()[-200:]!r})")
                continue
            state = (out / f"{scenario}-{build}-{r}.state").read_text().strip()
            if d.get("lost") or d.get("generator_saturated"):
                notes.append(f"{scenario} {build} run {r}: lost {d.get('lost')}, generator saturated {d.get('generator_saturated')}")
            notes.append(f"{scenario} {build} run {r}: {state}")
            runs[build].append(d)
    for key, name, fmt in keys:
        cells = []
        meds = []
        for build in "AB":
            vals = [d[key] for d in runs[build] if d.get(key) is not None]
            if not vals:
                cells.append("-"); meds.append(None); continue
            m = statistics.median(vals)
            meds.append(m)
            cells.append(f"{fmt.format(m)} ({fmt.format(min(vals))}-{fmt.format(max(vals))})")
        ratio = f"{meds[1] / meds[0]:.3f}" if None not in meds and meds[0] else "-"
        print(f"| {scenario} | {name} | {cells[0]} | {cells[1]} | {ratio} |")
print()
for n in notes:
    print(f"- {n}")
PY
