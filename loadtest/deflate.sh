#!/usr/bin/env bash
# Compression off against on (issue 15), interleaved and repeated so the
# box's drift hits both alike: fan-out 1,000 on one shard, dashboard-like
# JSON payloads (`--payload-fill json`) of each size in PAYLOADS, the
# generator offering permessage-deflate in every run (`--deflate head`:
# it inflates each compressed message's first 512 bytes, the envelope head
# and stamp, so the relay and not the generator's inflating is measured;
# DEFLATE=full inflates whole messages, as a browser does). With the
# relay's compression off the offer is declined and every frame is plain.
#
# Each run sweeps the rate (from SWEEP_START msg/s, x2 while p99 <= P99_MAX_MS
# ms and nothing is lost, then one bisection) and reports, at the best rate:
# deliveries/s, p99, bytes read per delivery, the relay's cpu-s per million
# deliveries and its compressions per message (its own counter). Then the
# relay's memory per idle joined connection, off and on, with the deflate
# offer accepted (IDLE_CONNECTIONS connections).
#
#   loadtest/deflate.sh [ROUNDS]        (default 3)
#
# Environment: RELAY (default target/release/itty-relay), LOADTEST (default
# target/release/itty-loadtest), PORT (default 18300), DURATION (s per
# step, default 5), PAYLOADS (default "130 1024"), SWEEP_START (msg/s,
# default 100), P99_MAX_MS (default 50), DEFLATE (head|full), IDLE_CONNECTIONS
# (default 5000; 0 skips). The relay runs on cpu 0, the generator on cpu 1.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
relay=${RELAY:-target/release/itty-relay}
gen=${LOADTEST:-target/release/itty-loadtest}
port=${PORT:-18300}
duration=${DURATION:-5}
payloads=${PAYLOADS:-130 1024}
sweep_start=${SWEEP_START:-100}
p99_max=${P99_MAX_MS:-50}
inflate=${DEFLATE:-head}
idle_conns=${IDLE_CONNECTIONS:-5000}
out=$(mktemp -d)
echo "results in $out" >&2
unlimited=(--messages-per-conn-per-sec 1000000000 --messages-per-conn-burst 1000000000
  --upgrades-per-ip-per-sec 1000000000 --upgrades-per-ip-burst 1000000000)

state() {
  printf 'load %s; cpu %s; io %s' "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(head -1 /proc/pressure/cpu | cut -d' ' -f2)" "$(head -1 /proc/pressure/io | cut -d' ' -f2)"
}

# run LABEL COMPRESSION GENERATOR-ARGS...
run() {
  local label=$1 compression=$2
  shift 2
  taskset -c 0 "$relay" --listen "127.0.0.1:$port" --shards 1 --log error \
    --compression "$compression" "${unlimited[@]}" 2>/dev/null &
  local pid=$!
  sleep 0.5
  state >"$out/$label.state"
  timeout 600 "$gen" "$@" --url "ws://127.0.0.1:$port" --cpus 1 --relay-pid "$pid" \
    --deflate "$inflate" --json >"$out/$label.json" 2>"$out/$label.err" || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 1
}

for round in $(seq 1 "$rounds"); do
  for payload in $payloads; do
    for compression in off on; do
      run "fanout-$payload-$compression-$round" "$compression" fanout --members 1000 \
        --publishers 1 --rate "$sweep_start" --payload-bytes "$payload" --payload-fill json \
        --duration "$duration" --warmup 1 --grace 2 \
        --sweep --sweep-factor 2 --sweep-refine 1 --p99-max-ms "$p99_max"
    done
  done
  if ((idle_conns > 0)); then
    for compression in off on; do
      run "idle-$compression-$round" "$compression" idle --connections "$idle_conns" \
        --channels 100 --hold 5
    done
  fi
done

python3 - "$out" "$rounds" "$payloads" <<'PY'
import json, statistics, sys, pathlib
out, rounds, payloads = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split()
keys = [("deliveries_per_s", "deliveries/s (best rate)", "{:,.0f}"),
        ("latency_ms_p99", "p99 ms at it", "{:.1f}"),
        ("wire_bytes_per_delivery", "bytes read per delivery", "{:.0f}"),
        ("relay_cpu_s_per_million_deliveries", "relay cpu-s per M deliveries", "{:.3f}"),
        ("relay_compressions_per_message", "compressions per message", "{:.3f}"),
        ("generator_util_avg", "generator busy", "{:.2f}")]
print("| payload | measure | off median (min-max) | on median (min-max) | on/off |")
print("|---|---|---|---|---|")
notes = []
for payload in payloads:
    runs = {"off": [], "on": []}
    for c in runs:
        for r in range(1, rounds + 1):
            label = f"fanout-{payload}-{c}-{r}"
            try:
                d = json.load(open(out / f"{label}.json"))
            except Exception:
                notes.append(f"{label}: no result ({(out / f'{label}.err').read_text()[-300:]!r})")
                continue
            best = [s for s in d.get("steps_detail", []) if s["rate"] == d.get("best_rate")]
            if not best:
                notes.append(f"{label}: no step held")
                continue
            s = best[0]
            if s.get("generator_saturated"):
                notes.append(f"{label}: the generator was saturated at the best rate")
            notes.append(f"{label}: best {d['best_rate']:.0f} msg/s; before: {(out / f'{label}.state').read_text()}")
            runs[c].append(s)
    for key, name, fmt in keys:
        cells, meds = [], []
        for c in ("off", "on"):
            vals = [s[key] for s in runs[c] if s.get(key) is not None]
            if not vals:
                cells.append("-"); meds.append(None); continue
            m = statistics.median(vals); meds.append(m)
            cells.append(f"{fmt.format(m)} ({fmt.format(min(vals))}-{fmt.format(max(vals))})")
        ratio = f"{meds[1] / meds[0]:.3f}" if None not in meds and meds[0] else "-"
        print(f"| {payload} B | {name} | {cells[0]} | {cells[1]} | {ratio} |")
idle = {"off": [], "on": []}
for c in idle:
    for r in range(1, rounds + 1):
        try:
            v = json.load(open(out / f"idle-{c}-{r}.json"))["relay_rss_bytes_per_connection"]
            if v is not None:
                idle[c].append(v)
        except Exception:
            pass
if idle["off"] and idle["on"]:
    m = {c: statistics.median(v) for c, v in idle.items()}
    cells = [f"{m[c]:.0f} ({min(idle[c])}-{max(idle[c])})" for c in ("off", "on")]
    print(f"| idle | relay bytes per idle joined connection (deflate offered) | {cells[0]} | {cells[1]} | {m['on'] / m['off']:.3f} |")
print()
for n in notes:
    print(f"- {n}")
PY
