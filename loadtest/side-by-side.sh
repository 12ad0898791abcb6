#!/usr/bin/env bash
# Side-by-side runs (issue 4): our relay against nchan, nats-server and a Node
# relay on ws, each pinned to cpu 0 with one worker, the generator on cpu 1.
# For every scenario and peer it sweeps the publish rate up to the highest
# sustainable one and records, there: deliveries/s, p50/p99, loss and the
# server's cpu seconds per million deliveries; then one table with each
# peer's figures as a ratio to ours, plus a 2-shard run of ours on both cpus
# (the generator sharing them). The report goes to
# loadtest/runs/<date>-side-by-side.md with the command, the machine and its
# load.
#
#   loadtest/side-by-side.sh [options]
#     --peers "itty nchan nats node"   which peers, in this order (itty = ours, the reference)
#     --scenarios "fanout-100 fanout-1000 fanout-5000 rooms"
#     --no-shards2                     skip the 2-shard run of ours
#     --no-install / --no-build        skip peers/install.sh / cargo build
#     --dry-run                        print what would run, start nothing
#     --out FILE                       report path (default loadtest/runs/<date>-side-by-side.md)
#
# Bounds (defaults; each an environment variable below): every step of a
# sweep publishes 5 s (1 s warm-up, 2 s grace at most); a sweep starts at
# 25,000 deliveries/s, triples the rate while p99 <= 50 ms (100 ms at 5,000
# members) and nothing is
# lost, then bisects twice, 9 steps at most (the Node relay at 5,000 members:
# one step, its setup takes minutes); one sweep is cut at 240 s, and once
# 35 min have passed the remaining runs are skipped (and marked so).
# 17 sweeps took about 20-25 min here.
#
# The script checks the generator's flags before running and stops with a
# list of what is missing. Flag names are set just below; override any of
# them from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# ---- configuration (environment overrides) ----------------------------------
GEN=${GEN:-$repo/target/release/itty-loadtest}
export ITTY_RELAY=${ITTY_RELAY:-$repo/target/release/itty-relay}
SERVER_CPU=${SERVER_CPU:-0}            # the server under test, one worker
GEN_CPUS=${GEN_CPUS:-1}                # the generator
BOTH_CPUS=${BOTH_CPUS:-0,1}            # the 2-shard run: server and generator share these
PORT_BASE=${PORT_BASE:-18600}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-240}    # bound on one generator run (a whole sweep)
TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-2100} # no new run starts after this many seconds
PAUSE_S=${PAUSE_S:-2}                  # between runs, to let sockets drain
LOAD_QUIET_MAX=${LOAD_QUIET_MAX:-1.5}  # above this 1-min load before the runs, the report says noisy
OTHERS_BUSY_MAX=${OTHERS_BUSY_MAX:-0.25} # ... or above this many cpus busy on average between runs

# Arguments common to every generator run, and per scenario.
COMMON_ARGS=${COMMON_ARGS:---payload-bytes 64 --duration 5 --warmup 1 --grace 2 --json}
SWEEP_ARGS=${SWEEP_ARGS:---sweep --sweep-factor 3 --sweep-refine 2}
# A step holds while p99 <= this (ms): 50, but 100 at 5,000 members, where
# one message is 5,000 writes and 5,000 reads (p99 was 30-60 ms at 5 msg/s
# for every server here).
P99_MAX_MS=${P99_MAX_MS:-50}
P99_MAX_MS_5000=${P99_MAX_MS_5000:-100}
SWEEP_STEPS=${SWEEP_STEPS:-9}
# Runs whose setup alone takes minutes get one step (at the first rate) and a
# longer setup timeout: the Node relay announces every join to every member
# (as the itty protocol says; so does ours), one write each: 5,000 members
# took it 145 s here, per step.
ONE_STEP=${ONE_STEP:-fanout-5000.node}
ONE_STEP_SETUP_S=${ONE_STEP_SETUP_S:-200}
export ONE_STEP
# Every sweep's first step: this many deliveries/s (the rate is derived).
START_DELIVERIES=${START_DELIVERIES:-25000}
FANOUT_ARGS=${FANOUT_ARGS:---publishers 1}
ROOMS=${ROOMS:-100} ROOM_SIZE=${ROOM_SIZE:-10}
ROOMS_ARGS=${ROOMS_ARGS:---rooms $ROOMS --room-size $ROOM_SIZE}
SHARDS2_SCENARIO=${SHARDS2_SCENARIO:-fanout-1000}
# Our relay: one shard, and (when the binary has them) the per-IP and
# per-connection limits raised out of the way, as the peers have none.
ITTY_ARGS=${ITTY_ARGS:---shards 1}
ITTY_UNLIMITED_ARGS=${ITTY_UNLIMITED_ARGS:---upgrades-per-ip-per-sec 1000000000 --upgrades-per-ip-burst 1000000000 --messages-per-conn-per-sec 1000000000 --messages-per-conn-burst 1000000000}

# Flags the generator must have (checked in `SCENARIO --help`).
REQUIRED_FANOUT_FLAGS=${REQUIRED_FANOUT_FLAGS:---url --proto --members --publishers --rate --payload-bytes --duration --cpus --relay-pid --sweep --json}
REQUIRED_ROOMS_FLAGS=${REQUIRED_ROOMS_FLAGS:---url --proto --rooms --room-size --rate-per-member --cpus --relay-pid --sweep --json}
REQUIRED_PROTOS=${REQUIRED_PROTOS:-itty nchan nats}
# The report reads the sweep's --json: `steps_detail` (one object per step:
# rate, deliveries_per_s, latency_ms_p50/p99, lost, expected, held, why,
# relay_cpu_s_per_million_deliveries, relay_util, generator_saturated) and
# `best_rate`, `best_total_msgs_per_s`.

# ---- options ----------------------------------------------------------------
peers="itty nchan nats node"
scenarios="fanout-100 fanout-1000 fanout-5000 rooms"
shards2=1 install=1 build=1 dry=0
out=""
argv=("$0" "$@")
while (($#)); do
  case $1 in
    --peers) peers=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --no-shards2) shards2=0 ;;
    --no-install) install=0 ;;
    --no-build) build=0 ;;
    --dry-run) dry=1 ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "side-by-side.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ " $peers " == *" itty "* ]] || echo "side-by-side.sh: no 'itty' in --peers: no ratios" >&2

proto_of() { case $1 in itty|node) echo itty ;; *) echo "$1" ;; esac; }
say() { echo "side-by-side: $*" >&2; }

# ---- install, build, check the generator -------------------------------------
if ((install && !dry)); then loadtest/peers/install.sh >&2; fi
if ((build && !dry)); then cargo build --release -q -p itty-relay -p itty-loadtest; fi

missing=()
check_flags() { # SCENARIO FLAGS...
  local scenario=$1 help; shift
  if ! help=$("$GEN" "$scenario" --help 2>&1); then
    missing+=("scenario '$scenario'")
    return
  fi
  for flag in "$@"; do
    grep -q -- "$flag\b" <<<"$help" || missing+=("$scenario $flag")
  done
  # clap lists the values of an enum flag (`- nchan: ...`) up to its default.
  local values
  values=$(sed -n '/--proto/,/default:/p' <<<"$help")
  for p in $REQUIRED_PROTOS; do grep -qE -- "- $p\b|\b$p[,\]]" <<<"$values" || missing+=("$scenario --proto $p"); done
}
if [[ ! -x $GEN ]]; then
  missing+=("the generator binary $GEN")
else
  [[ $scenarios == *fanout* ]] && check_flags fanout $REQUIRED_FANOUT_FLAGS
  [[ $scenarios == *rooms* ]] && check_flags rooms $REQUIRED_ROOMS_FLAGS
fi
if ((${#missing[@]})); then
  say "the generator lacks what this script needs:"
  printf '  - %s\n' "${missing[@]}" >&2
  if ((!dry)); then
    say "stopping (the flags are the planned ones of issue 4; adjust the names at the top of $0 if they differ)"
    exit 3
  fi
fi

itty_args=$ITTY_ARGS
if [[ -x $ITTY_RELAY ]] && "$ITTY_RELAY" --help 2>/dev/null | grep -q -- "--upgrades-per-ip-per-sec"; then
  itty_args="$itty_args $ITTY_UNLIMITED_ARGS"
fi

# ---- runs ---------------------------------------------------------------------
if ((dry)); then work='$WORK'; else work=$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX"); fi
started=()
cleanup() {
  for s in "${started[@]}"; do loadtest/peers/stop.sh ${s%:*} ${s#*:} 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scenario_args() { # SCENARIO -> the generator's subcommand and arguments
  case $1 in
    fanout-*)
      local members=${1#fanout-}
      local p99=$P99_MAX_MS; ((members >= 5000)) && p99=$P99_MAX_MS_5000
      echo "fanout --members $members --rate $(python3 -c "print(round($START_DELIVERIES / $members, 3))") --p99-max-ms $p99 $FANOUT_ARGS" ;;
    rooms)
      echo "rooms --rate-per-member $(python3 -c "print(round($START_DELIVERIES / ($ROOMS * $ROOM_SIZE * ($ROOM_SIZE - 1)), 3))") --p99-max-ms $P99_MAX_MS $ROOMS_ARGS" ;;
    *) say "unknown scenario $1"; exit 2 ;;
  esac
}

port=$PORT_BASE
run() { # LABEL PEER SERVER_CPUS GEN_CPUS SCENARIO [SERVER ARGS...]
  local label=$1 peer=$2 server_cpus=$3 gen_cpus=$4 scenario=$5; shift 5
  local proto; proto=$(proto_of "$peer")
  port=$((port + 1))
  local url="ws://127.0.0.1:$port"
  local steps="--sweep-steps $SWEEP_STEPS"
  [[ " $ONE_STEP " == *" $label "* ]] && steps="--sweep-steps 1 --setup-timeout $ONE_STEP_SETUP_S"
  # shellcheck disable=SC2046,SC2206
  local cmd=("$GEN" $(scenario_args "$scenario") --url "$url" --proto "$proto" --cpus "$gen_cpus" $COMMON_ARGS $SWEEP_ARGS $steps)
  if ((dry)); then
    echo "loadtest/peers/start.sh $peer $port $server_cpus $*"
    echo "${cmd[*]} --relay-pid \$PID > $work/$label.json"
    echo "loadtest/peers/stop.sh $peer $port"
    return
  fi
  if (( SECONDS - t_start > TOTAL_BUDGET_S )); then
    say "$label: skipped (past the ${TOTAL_BUDGET_S}s budget)"
    echo "skipped: past the ${TOTAL_BUDGET_S} s budget" > "$work/$label.skipped"
    return
  fi
  local pid
  if ! pid=$(loadtest/peers/start.sh "$peer" "$port" "$server_cpus" "$@"); then
    say "$label: $peer did not start"
    echo "$peer did not start" > "$work/$label.skipped"
    return
  fi
  started+=("$peer:$port")
  say "$label: $peer (pid $pid, cpus $server_cpus) <- ${cmd[*]} --relay-pid $pid"
  echo "${cmd[*]} --relay-pid $pid" > "$work/$label.cmd"
  local rc=0
  timeout "$RUN_TIMEOUT_S" "${cmd[@]}" --relay-pid "$pid" > "$work/$label.json" 2> "$work/$label.log" || rc=$?
  echo "$rc" > "$work/$label.rc"
  ((rc == 0)) || say "$label: the generator exited $rc; last lines:$(echo; tail -3 "$work/$label.log")"
  loadtest/peers/stop.sh "$peer" "$port"
  unset 'started[-1]'
  others_busy
  sleep "$PAUSE_S"
}

# Between runs nothing of ours runs: the cpus' busy share over 1 s is other
# people's work. One sample per run, in cpus (0 to nproc).
busy_samples=()
others_busy() {
  local a b
  a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
  busy_samples+=("$(python3 -c "
a, b = [list(map(int, l.split()[1:])) for l in ('$a', '$b')]
d = [y - x for x, y in zip(a, b)]
total, idle = sum(d[:8]), d[3] + d[4]
print(round((total - idle) / max(total, 1) * $(nproc), 2))")")
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
t_start=$SECONDS
started_at=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
for scenario in $scenarios; do
  for peer in $peers; do
    # shellcheck disable=SC2086
    case $peer in
      itty) run "$scenario.$peer" "$peer" "$SERVER_CPU" "$GEN_CPUS" "$scenario" $itty_args ;;
      *) run "$scenario.$peer" "$peer" "$SERVER_CPU" "$GEN_CPUS" "$scenario" ;;
    esac
  done
done
if ((shards2)); then
  # shellcheck disable=SC2086
  run "$SHARDS2_SCENARIO.itty-2-shards" itty "$BOTH_CPUS" "$BOTH_CPUS" "$SHARDS2_SCENARIO" \
    ${itty_args/--shards 1/--shards 2}
fi
((dry)) && exit 0
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$((SECONDS - t_start))
# Quiet: a low load before we started, and little else running between runs
# (the load after includes our own last run: two busy cpus for the 2-shard run).
read -r busy_mean busy_max < <(python3 -c "
s = [float(x) for x in '${busy_samples[*]}'.split()] or [0.0]
print(round(sum(s) / len(s), 2), max(s))")
noisy=$(python3 -c "print(int(float('${load_before%% *}') > $LOAD_QUIET_MAX or $busy_mean > $OTHERS_BUSY_MAX))")

# ---- report -------------------------------------------------------------------
if [[ -z $out ]]; then
  out=loadtest/runs/$(date -u +%F)-side-by-side.md
  [[ -e $out ]] && out=loadtest/runs/$(date -u +%F-%H%M)-side-by-side.md
fi
mkdir -p "$(dirname "$out")"
{
  echo "# Side by side: ours, nchan, NATS, Node ws ($started_at)"
  echo
  echo "Command (from \`$repo\`, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ', with local changes')):"
  echo
  echo '```sh'
  echo "${argv[*]}"
  echo '```'
  echo
  echo "Machine: \`$(uname -a)\`, nproc $(nproc)."
  echo "Load average (1/5/15 min) before: $load_before; after: $load_after (the last minute"
  echo "includes our own last run). Cpus busy between runs (others' work, 1 s after each run):"
  echo "mean $busy_mean, max $busy_max, over ${#busy_samples[@]} samples."
  echo "\`uptime\` before: \`$uptime_before\`; after: \`$(uptime)\`."
  echo "Wall time: $((elapsed / 60)) min $((elapsed % 60)) s."
  echo
  if ((noisy)); then
    echo "**NOISY: the 1-minute load average before was above $LOAD_QUIET_MAX, or other work kept"
    echo "more than $OTHERS_BUSY_MAX cpus busy between runs on average. These figures show that the"
    echo "script works end to end; they are not a result.**"
    echo
  fi
  echo "Server pinned to cpu $SERVER_CPU (one worker, one shard), generator to cpu $GEN_CPUS;"
  echo "generator arguments: \`$COMMON_ARGS $SWEEP_ARGS --sweep-steps $SWEEP_STEPS\`, p99 bound $P99_MAX_MS ms ($P99_MAX_MS_5000 ms at 5,000 members)"
  echo " (one step only: $ONE_STEP), first step at $START_DELIVERIES deliveries/s,"
  echo "fan-out \`$FANOUT_ARGS\`, rooms \`$ROOMS_ARGS\`; ours started with \`$itty_args\`."
  echo
  echo "Versions:"
  echo
  echo '```'
  loadtest/peers/install.sh 2>/dev/null | sed 's/^/  /' || true
  echo '```'
  echo
  python3 - "$work" "$peers" "$scenarios" "$((shards2))" "$SHARDS2_SCENARIO" <<'PY'
import json, os, sys

work, peers, scenarios, shards2, shards2_scenario = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4] == "1", sys.argv[5]

def load(label):
    """The sweep's figures at its highest rate that held, or a string saying why not."""
    skipped = os.path.join(work, label + ".skipped")
    if os.path.exists(skipped):
        return open(skipped).read().strip()
    rc_path = os.path.join(work, label + ".rc")
    rc = open(rc_path).read().strip() if os.path.exists(rc_path) else "?"
    try:
        d = json.load(open(os.path.join(work, label + ".json")))
        steps = d["steps_detail"]
    except Exception:  # noqa: BLE001 - reported in the table
        log = os.path.join(work, label + ".log")
        last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
        return f"failed (exit {rc}{': ' + last[0][:80] if last else ''})"
    held = [s for s in steps if s.get("held")]
    if not held:
        s0 = steps[0] if steps else {}
        return f"no step held (first: {s0.get('why', '?')})"
    best = max(held, key=lambda s: s["rate"])
    above = [s for s in steps if not s.get("held") and s["rate"] > best["rate"]]
    fail = min(above, key=lambda s: s["rate"]) if above else None
    lost, expected = best.get("lost"), best.get("expected")
    return {
        "rate": d.get("best_total_msgs_per_s"), "deliveries": best.get("deliveries_per_s"),
        "p50": best.get("latency_ms_p50"), "p99": best.get("latency_ms_p99"),
        "loss": (lost / expected * 100) if isinstance(lost, (int, float)) and expected else None,
        "cpu": best.get("relay_cpu_s_per_million_deliveries"), "util": best.get("relay_util"),
        "saturated": best.get("generator_saturated"), "steps": len(steps),
        "next": (f"{fail['why']}" if fail else
                 f"not tried (one step only; setup {d.get('last_step', {}).get('setup_s', '?')} s)" if label in os.environ.get("ONE_STEP", "").split() else
                 "none failed (step limit)"),
    }

def num(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "?"

def ratio(v, ref):
    if isinstance(v, (int, float)) and isinstance(ref, (int, float)) and ref:
        return f"{v / ref:.2f}x"
    return "-"

NAMES = {"itty": "ours (1 shard)", "nchan": "nchan", "nats": "nats-server", "node": "Node ws"}
print("## Highest sustainable rate, per scenario and peer\n")
print("Each row is the highest rate of its sweep that held (p99 within the bound, nothing lost,")
print("unsent or disconnected); loss is therefore 0 there by construction, and the last column")
print("says why the next step up failed. Ratios are the peer's figure over ours: below 1x in")
print("deliveries/s is slower, above 1x in cpu-s is costlier. Server cpu is over the publishing")
print("window and grace; server busy is its share of one cpu while publishing.\n")
print("| scenario | peer | msg/s | deliveries/s | vs ours | p50 ms | p99 ms | loss % | server cpu-s per M deliveries | vs ours | server busy | generator saturated | next step up failed: |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for s in scenarios:
    ours = load(f"{s}.itty")
    ours = ours if isinstance(ours, dict) else {}
    for p in peers:
        r = load(f"{s}.{p}")
        name = NAMES.get(p, p)
        if not isinstance(r, dict):
            print(f"| {s} | {name} | {r} | | | | | | | | | | |")
            continue
        print(f"| {s} | {name} | {num(r['rate'], ',.0f')} | {num(r['deliveries'], ',.0f')} | {ratio(r['deliveries'], ours.get('deliveries'))} | "
              f"{num(r['p50'], '.2f')} | {num(r['p99'], '.1f')} | {num(r['loss'], '.3f')} | {num(r['cpu'], '.3f')} | "
              f"{ratio(r['cpu'], ours.get('cpu'))} | {num(r['util'] * 100 if isinstance(r['util'], (int, float)) else None, '.0f')}% | "
              f"{'yes' if r['saturated'] else 'no'} | {r['next']} |")
if shards2:
    print(f"\n## Ours on 2 shards (cpus 0,1, the generator sharing them), {shards2_scenario}\n")
    r = load(f"{shards2_scenario}.itty-2-shards")
    one = load(f"{shards2_scenario}.itty")
    one = one if isinstance(one, dict) else {}
    print("| run | msg/s | deliveries/s | p50 ms | p99 ms | server cpu-s per M deliveries | vs 1 shard | generator saturated | next step up failed: |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, x in (("1 shard (above)", one), ("2 shards", r)):
        if isinstance(x, dict) and x:
            print(f"| {label} | {num(x['rate'], ',.0f')} | {num(x['deliveries'], ',.0f')} | {num(x['p50'], '.2f')} | {num(x['p99'], '.1f')} | "
                  f"{num(x['cpu'], '.3f')} | {ratio(x['cpu'], one.get('cpu'))} | {'yes' if x['saturated'] else 'no'} | {x['next']} |")
        else:
            print(f"| {label} | {x or '?'} | | | | | | | |")
PY
  echo
  echo "Raw output (JSON, stderr, the exact command of each run): \`$work\`."
} > "$out"
cat "$out"
say "report written to $out"
