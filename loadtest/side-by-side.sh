#!/usr/bin/env bash
# Side-by-side runs (issues 4, 14): our relay against nchan, nats-server, a
# Node relay on ws and two relays on uWebSockets, each pinned to cpu 0 with
# one worker, the generator on cpu 1. For every publishing scenario and peer
# it sweeps the publish rate up to the highest sustainable one and records,
# there: deliveries/s, p50/p99, loss and the server's cpu seconds per
# million deliveries; `connect` measures handshakes and joins per second
# (closed loop) and the time to joined; the generator's own ceiling
# (`itty-loadtest ceiling`) is measured at the start and the end of the same
# run, so each figure is also a share of what this box can receive. With
# --rounds N every cell runs N times, the peers interleaved within each
# round (ours, peer, ours, peer...) so that drift hits all alike; the report
# gives the median, every round's figure, and each ratio to ours computed
# within a round, and a table of every sweep's first step (the same rate for
# every peer: server cpu per delivery at equal load, the figure a busy box
# moves least). Plus a 2-shard run of ours on both cpus (the generator
# sharing them). The report goes to loadtest/runs/<date>-side-by-side.md
# with the command, the machine, its load and pressure.
#
#   loadtest/side-by-side.sh [options]
#     --peers "itty nchan nats node uws"  which peers, in this order (itty = ours, the reference);
#                                      also uws-raw (uWebSockets, plain pub/sub read as nchan)
#     --scenarios "fanout-100 fanout-1000 fanout-5000 rooms connect"
#     --rounds N                       run every cell N times, interleaved (default 1)
#     --no-ceiling                     skip the generator's ceiling runs
#     --no-shards2                     skip the 2-shard run of ours
#     --no-install / --no-build        skip peers/install.sh / cargo build (and the uWebSockets build)
#     --dry-run                        print what would run, start nothing
#     --out FILE                       report path (default loadtest/runs/<date>-side-by-side.md)
#
# Bounds (defaults; each an environment variable below): every step of a
# sweep publishes 5 s (1 s warm-up, 2 s grace at most); a sweep starts at
# 25,000 deliveries/s, triples the rate while p99 <= 50 ms (100 ms at 5,000
# members) and nothing is
# lost, then bisects twice, 9 steps at most, a failed step run once more
# (the Node relay at 5,000 members: one step, its setup takes minutes); one
# sweep is cut at 240 s, and once 50 min have passed the remaining runs are
# skipped (and marked so). 17 sweeps took about 20-25 min here; four
# scenarios, four peers and three rounds about 32 min without the reruns,
# 44 min with them. `connect` is one closed-loop run per peer: 32 workers,
# each connecting, joining and closing in turn, for 5 s.
#
# The uWebSockets peers (uws, uws-raw) are built from checkouts the user
# cloned: UWS_SRC=path/to/uWebSockets [USOCKETS_SRC=path/to/uSockets]
# (loadtest/peers/uws/README.md); without them and without binaries already
# in target/uws/, those peers are skipped with a note in the report.
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
TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-3000} # no new run starts after this many seconds
PAUSE_S=${PAUSE_S:-2}                  # between runs, to let sockets drain
LOAD_QUIET_MAX=${LOAD_QUIET_MAX:-1.5}  # above this 1-min load before the runs, the report says noisy
OTHERS_BUSY_MAX=${OTHERS_BUSY_MAX:-0.25} # ... or above this many cpus busy on average between runs

# Arguments common to every generator run, and per scenario.
COMMON_ARGS=${COMMON_ARGS:---payload-bytes 64 --duration 5 --warmup 1 --grace 2 --json}
# A failed step runs once more before it counts as failed: on a shared host
# a stall of a few seconds fails a step any server sustains (2026-12-03: a
# rooms round failed its lightest step at 29% busy). Every peer gets the same.
SWEEP_ARGS=${SWEEP_ARGS:---sweep --sweep-factor 3 --sweep-refine 2 --sweep-retries 1}
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
# `connect`: closed loop, this many workers, for this long (s), over 100 channels.
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-32}
CONNECT_DURATION_S=${CONNECT_DURATION_S:-5}
CONNECT_ARGS=${CONNECT_ARGS:---channels 100 --json}
# The generator's ceiling: an in-process blast server on SERVER_CPU, the
# generator's members on GEN_CPUS, as many members as each publishing
# scenario has (fan-out N: N; rooms: rooms x size).
CEILING_ARGS=${CEILING_ARGS:---payload-bytes 64 --duration 5 --warmup 1 --json}
# uWebSockets checkouts (optional; see loadtest/peers/uws/README.md).
UWS_SRC=${UWS_SRC:-}
USOCKETS_SRC=${USOCKETS_SRC:-}
export UWS_BIN_DIR=${UWS_BIN_DIR:-$repo/target/uws}
# Our relay: one shard, and (when the binary has them) the per-IP and
# per-connection limits raised out of the way, as the peers have none.
ITTY_ARGS=${ITTY_ARGS:---shards 1}
ITTY_UNLIMITED_ARGS=${ITTY_UNLIMITED_ARGS:---upgrades-per-ip-per-sec 1000000000 --upgrades-per-ip-burst 1000000000 --messages-per-conn-per-sec 1000000000 --messages-per-conn-burst 1000000000}

# Flags the generator must have (checked in `SCENARIO --help`).
REQUIRED_FANOUT_FLAGS=${REQUIRED_FANOUT_FLAGS:---url --proto --members --publishers --rate --payload-bytes --duration --cpus --relay-pid --sweep --json}
REQUIRED_ROOMS_FLAGS=${REQUIRED_ROOMS_FLAGS:---url --proto --rooms --room-size --rate-per-member --cpus --relay-pid --sweep --json}
REQUIRED_CONNECT_FLAGS=${REQUIRED_CONNECT_FLAGS:---url --proto --concurrency --duration --channels --cpus --relay-pid --json}
REQUIRED_PROTOS=${REQUIRED_PROTOS:-itty nchan nats}
# The report reads the sweep's --json: `steps_detail` (one object per step:
# rate, deliveries_per_s, latency_ms_p50/p99, lost, expected, held, why, runs, retried_why,
# relay_cpu_s_per_million_deliveries, relay_util, generator_saturated) and
# `best_rate`, `best_total_msgs_per_s`.

# ---- options ----------------------------------------------------------------
peers="itty nchan nats node uws"
scenarios="fanout-100 fanout-1000 fanout-5000 rooms connect"
shards2=1 install=1 build=1 dry=0 rounds=1 ceiling=1
out=""
argv=("$0" "$@")
while (($#)); do
  case $1 in
    --peers) peers=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-ceiling) ceiling=0 ;;
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
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "side-by-side.sh: --rounds wants a positive count" >&2; exit 2; }

proto_of() { case $1 in itty|node|uws) echo itty ;; uws-raw) echo nchan ;; *) echo "$1" ;; esac; }
say() { echo "side-by-side: $*" >&2; }

# ---- install, build, check the generator -------------------------------------
if ((install && !dry)); then loadtest/peers/install.sh >&2; fi
if ((build && !dry)); then cargo build --release -q -p itty-relay -p itty-loadtest; fi
# The uWebSockets relays: built from UWS_SRC when given, else whatever is
# in UWS_BIN_DIR already; the uws peers are skipped (with this note) when
# neither.
uws_note=""
if [[ " $peers " == *" uws"* ]]; then
  uws_built=0
  if [[ -n $UWS_SRC ]] && ((build)); then
    if ((dry)); then
      echo "UWS_BIN_DIR=$UWS_BIN_DIR loadtest/peers/uws/build.sh $UWS_SRC ${USOCKETS_SRC:-$UWS_SRC/uSockets}"
      uws_built=1
    elif loadtest/peers/uws/build.sh "$UWS_SRC" "${USOCKETS_SRC:-$UWS_SRC/uSockets}" >/dev/null; then
      uws_built=1
    else
      uws_note="the uWebSockets relays did not build from UWS_SRC=$UWS_SRC (loadtest/peers/uws/build.sh)"
    fi
  fi
  if ((!uws_built)) && [[ -z $uws_note ]] && ! [[ -x $UWS_BIN_DIR/uws-itty-relay && -x $UWS_BIN_DIR/uws-raw-relay ]]; then
    uws_note="no uWebSockets relays in $UWS_BIN_DIR and no UWS_SRC: set UWS_SRC (and USOCKETS_SRC) to checkouts of uWebSockets and uSockets (loadtest/peers/uws/README.md)"
  fi
  [[ -n $uws_note ]] && say "uws peers skipped: $uws_note"
fi

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
  for p in $REQUIRED_PROTOS; do grep -qE -- "- $p\b|\b${p}[,\]]" <<<"$values" || missing+=("$scenario --proto $p"); done
}
if [[ ! -x $GEN ]]; then
  missing+=("the generator binary $GEN")
else
  # shellcheck disable=SC2086
  [[ $scenarios == *fanout* ]] && check_flags fanout $REQUIRED_FANOUT_FLAGS
  # shellcheck disable=SC2086
  [[ $scenarios == *rooms* ]] && check_flags rooms $REQUIRED_ROOMS_FLAGS
  # shellcheck disable=SC2086
  [[ $scenarios == *connect* ]] && check_flags connect $REQUIRED_CONNECT_FLAGS
  ((ceiling)) && check_flags ceiling --cpus --server-cpu --members --json
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
# shellcheck disable=SC2016 # printed as is in a dry run
if ((dry)); then work='$WORK'; else work=$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX"); fi
started=()
cleanup() {
  for s in "${started[@]}"; do loadtest/peers/stop.sh "${s%:*}" "${s#*:}" 2>/dev/null || true; done
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
    connect)
      echo "connect --concurrency $CONNECT_CONCURRENCY --duration $CONNECT_DURATION_S $CONNECT_ARGS" ;;
    *) say "unknown scenario $1"; exit 2 ;;
  esac
}
# Members of a publishing scenario (the generator's ceiling is measured
# with as many); nothing for the others.
scenario_members() {
  case $1 in
    fanout-*) echo "${1#fanout-}" ;;
    rooms) echo $((ROOMS * ROOM_SIZE)) ;;
  esac
}

port=$PORT_BASE
run() { # LABEL PEER SERVER_CPUS GEN_CPUS SCENARIO [SERVER ARGS...]
  local label=$1 peer=$2 server_cpus=$3 gen_cpus=$4 scenario=$5; shift 5
  local proto; proto=$(proto_of "$peer")
  port=$((port + 1))
  local url="ws://127.0.0.1:$port"
  local steps="$COMMON_ARGS $SWEEP_ARGS --sweep-steps $SWEEP_STEPS"
  [[ " $ONE_STEP " == *" ${label%.r*} "* ]] && steps="$COMMON_ARGS $SWEEP_ARGS --sweep-steps 1 --setup-timeout $ONE_STEP_SETUP_S"
  [[ $scenario == connect ]] && steps=""
  # shellcheck disable=SC2046,SC2206,SC2207
  local cmd=("$GEN" $(scenario_args "$scenario") --url "$url" --proto "$proto" --cpus "$gen_cpus" $steps)
  if [[ $peer == uws* && -n $uws_note ]]; then
    ((dry)) && echo "# $label: skipped ($uws_note)"
    ((dry)) || echo "skipped: $uws_note" > "$work/$label.skipped"
    return
  fi
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

# The generator's own ceiling with M members, in this run (WHEN: start, end).
ceiling_run() { # WHEN MEMBERS
  local label="ceiling-$2.$1"
  # shellcheck disable=SC2206
  local cmd=("$GEN" ceiling --members "$2" --cpus "$GEN_CPUS" --server-cpu "$SERVER_CPU" $CEILING_ARGS)
  if ((dry)); then
    echo "${cmd[*]} > $work/$label.json"
    return
  fi
  say "$label: ${cmd[*]}"
  echo "${cmd[*]}" > "$work/$label.cmd"
  local rc=0
  timeout "$RUN_TIMEOUT_S" "${cmd[@]}" > "$work/$label.json" 2> "$work/$label.log" || rc=$?
  echo "$rc" > "$work/$label.rc"
  ((rc == 0)) || say "$label: the generator exited $rc; last lines:$(echo; tail -3 "$work/$label.log")"
  others_busy
  sleep "$PAUSE_S"
}
ceiling_members=""
for scenario in $scenarios; do
  m=$(scenario_members "$scenario")
  [[ -n $m && " $ceiling_members " != *" $m "* ]] && ceiling_members="$ceiling_members $m"
done
((ceiling)) || ceiling_members=""

pressure() { # the host's pressure stall information, one line per resource
  local r
  for r in cpu io memory; do
    [[ -r /proc/pressure/$r ]] && sed "s/^/$r /" "/proc/pressure/$r"
  done
  return 0
}
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
pressure_before=$(pressure)
t_start=$SECONDS
started_at=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
for m in $ceiling_members; do ceiling_run start "$m"; done
for scenario in $scenarios; do
  for ((round = 1; round <= rounds; round++)); do
    for peer in $peers; do
      # shellcheck disable=SC2086
      case $peer in
        itty) run "$scenario.$peer.r$round" "$peer" "$SERVER_CPU" "$GEN_CPUS" "$scenario" $itty_args ;;
        *) run "$scenario.$peer.r$round" "$peer" "$SERVER_CPU" "$GEN_CPUS" "$scenario" ;;
      esac
    done
  done
done
for m in $ceiling_members; do ceiling_run end "$m"; done
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
  echo "# Side by side: $peers ($started_at)"
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
  echo "Pressure stall information (\`/proc/pressure\`; avg10/60/300 in %, total in us) before and after:"
  echo
  echo '```'
  # shellcheck disable=SC2001 # a prefix on every line
  sed 's/^/before /' <<<"$pressure_before"
  pressure | sed 's/^/after  /'
  echo '```'
  echo
  echo "The box is shared: other work comes and goes within a run. Compare peers by the"
  echo "ratios to ours taken within one round (the peers of a round run back to back),"
  echo "and read each figure with the spread over its rounds ($rounds here)."
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
  echo "connect: \`--concurrency $CONNECT_CONCURRENCY --duration $CONNECT_DURATION_S $CONNECT_ARGS\` (closed loop)."
  echo "Rounds: $rounds, peers interleaved within each round."
  if [[ -n $uws_note ]]; then echo "uWebSockets peers skipped: $uws_note."; fi
  echo
  echo "Versions:"
  echo
  echo '```'
  loadtest/peers/install.sh 2>/dev/null | sed 's/^/  /' || true
  if [[ " $peers " == *" uws"* && -z $uws_note ]]; then
    echo "  uWebSockets: $(git -C "${UWS_SRC:-/nonexistent}" describe --tags 2>/dev/null || echo "binaries in $UWS_BIN_DIR (sources: ${UWS_SRC:-not given})")"
    echo "  uSockets:    $(git -C "${USOCKETS_SRC:-${UWS_SRC:-/nonexistent}/uSockets}" describe --tags 2>/dev/null || echo '?')"
  fi
  echo '```'
  echo
  python3 - "$work" "$peers" "$scenarios" "$((shards2))" "$SHARDS2_SCENARIO" "$rounds" "$ROOMS" "$ROOM_SIZE" <<'PY'
import json, os, statistics, sys

work, peers, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
shards2, shards2_scenario, rounds = sys.argv[4] == "1", sys.argv[5], int(sys.argv[6])
rooms_n, room_size = int(sys.argv[7]), int(sys.argv[8])
one_step = os.environ.get("ONE_STEP", "").split()

def read_json(label):
    """The run's JSON, or a string saying why there is none."""
    skipped = os.path.join(work, label + ".skipped")
    if os.path.exists(skipped):
        return open(skipped).read().strip()
    rc_path = os.path.join(work, label + ".rc")
    rc = open(rc_path).read().strip() if os.path.exists(rc_path) else "?"
    try:
        return json.load(open(os.path.join(work, label + ".json")))
    except Exception:  # noqa: BLE001 - reported in the table
        log = os.path.join(work, label + ".log")
        last = open(log).read().strip().splitlines()[-1:] if os.path.exists(log) else []
        return f"failed (exit {rc}{': ' + last[0][:80] if last else ''})"

def load(label):
    """The sweep's figures at its highest rate that held, or a string saying why not."""
    d = read_json(label)
    if isinstance(d, str):
        return d
    steps = d.get("steps_detail")
    if not steps:
        return "failed (no steps in the output)"
    held = [s for s in steps if s.get("held")]
    if not held:
        return f"no step held (first: {steps[0].get('why', '?')})"
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
        "reruns": sum(s.get("runs", 1) - 1 for s in steps),
        "rescued": sum(1 for s in steps if s.get("held") and s.get("runs", 1) > 1),
        "next": (f"{fail['why']}" if fail else
                 f"not tried (one step only; setup {d.get('last_step', {}).get('setup_s', '?')} s)" if label.rsplit(".r", 1)[0] in one_step else
                 "none failed (step limit)"),
    }

def load_connect(label):
    d = read_json(label)
    if isinstance(d, str):
        return d
    failed = d.get("failed") or {}
    dur = d.get("duration_s") or 0
    cpu = d.get("relay_cpu_s")
    return {
        "joined": d.get("joined_per_s"), "attempts": d.get("attempts"),
        "failed": sum(failed.values()) if isinstance(failed, dict) else failed,
        "failures": failed if isinstance(failed, dict) else {},
        "hs_p99": d.get("handshake_ms_p99"), "join_p50": d.get("join_ms_p50"), "join_p99": d.get("join_ms_p99"),
        "cpu": d.get("relay_cpu_ms_per_join"),
        "util": cpu / dur if isinstance(cpu, (int, float)) and dur else None,
        "gen": d.get("generator_util_avg"), "saturated": d.get("generator_saturated"),
    }

def num(v, fmt):
    return format(v, fmt) if isinstance(v, (int, float)) else "?"

def short(v):
    """1234567 -> 1.23M, 45678 -> 45.7k."""
    if not isinstance(v, (int, float)):
        return "?"
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"

def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None

def spread(xs, fmt=short):
    """'median (min-max)' over the rounds, or the one value."""
    xs = [x for x in xs if isinstance(x, (int, float))]
    if not xs:
        return "?"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(statistics.median(xs))} ({fmt(min(xs))}-{fmt(max(xs))})"

def ratios(peer_runs, ours_runs, key):
    """Peer over ours, within each round where both have the figure."""
    out = []
    for p, o in zip(peer_runs, ours_runs):
        if isinstance(p, dict) and isinstance(o, dict):
            a, b = p.get(key), o.get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                out.append(a / b)
    return spread(out, lambda x: f"{x:.2f}x") if out else "-"

def members_of(s):
    if s.startswith("fanout-"):
        return int(s.split("-", 1)[1])
    if s == "rooms":
        return rooms_n * room_size
    return None

NAMES = {"itty": "ours (1 shard)", "nchan": "nchan", "nats": "nats-server", "node": "Node ws",
         "uws": "uWebSockets (itty envelopes)", "uws-raw": "uWebSockets raw (nchan wire)"}
R = range(1, rounds + 1)

# ---- the generator's ceiling, measured in this run ----
ceilings = {}
for s in scenarios:
    m = members_of(s)
    if m is None or m in ceilings:
        continue
    runs = {}
    for when in ("start", "end"):
        d = read_json(f"ceiling-{m}.{when}")
        if isinstance(d, dict) or os.path.exists(os.path.join(work, f"ceiling-{m}.{when}.rc")):
            runs[when] = d
    if runs:
        ceilings[m] = runs
ceiling_of = {}
if ceilings:
    print("## The generator's ceiling in this run\n")
    print("`itty-loadtest ceiling`: a trivial in-process server on the server's cpu blasts pre-built")
    print("itty frames (64 per write) to as many members as the scenario has; the generator reads them")
    print("through its usual receive path on its cpu. With the generator saturated, that is what this")
    print("generator can receive on this box at that moment: no relay run can show more. Relays write")
    print("fewer frames per read than the blast server, so the ceiling is an upper bound.\n")
    print("| members | when | deliveries/s | deliveries per read | generator busy | generator saturated | blast server busy |")
    print("|---|---|---|---|---|---|---|")
    for m, runs in ceilings.items():
        vals = []
        for when, d in runs.items():
            if not isinstance(d, dict):
                print(f"| {m} | {when} | {d} | | | | |")
                continue
            v = d.get("deliveries_per_s")
            vals.append(v)
            util = d.get("generator_util_avg")
            su = d.get("server_util")
            print(f"| {m} | {when} | {num(v, ',.0f')} | {num(d.get('deliveries_per_read'), '.1f')} | "
                  f"{num(util * 100 if isinstance(util, (int, float)) else None, '.0f')}% | "
                  f"{'yes' if d.get('generator_saturated') else 'no'} | "
                  f"{num(su * 100 if isinstance(su, (int, float)) else None, '.0f')}% |")
        c = med(vals)
        if c:
            ceiling_of[m] = (c, [v for v in vals if isinstance(v, (int, float))])
    print()

# ---- publishing scenarios ----
pub_scenarios = [s for s in scenarios if s != "connect"]
if pub_scenarios:
    print("## Highest sustainable rate, per scenario and peer\n")
    print("Each cell is the highest rate of its sweep that held (p99 within the bound, nothing lost,")
    print("unsent or disconnected); loss is therefore 0 there by construction. With several rounds a")
    print("figure is the median over the rounds (min-max in brackets), and a ratio is the median")
    print("(min-max) of the per-round ratios peer / ours: below 1x in deliveries/s is slower, above")
    print("1x in cpu-s is costlier; where the min-max of a ratio spans 1x, the run does not separate")
    print("the two. `% of ceiling` is the median deliveries/s over the generator's ceiling with as")
    print("many members in this run (above). Server cpu is over the publishing window and grace;")
    print("server busy is its share of one cpu while publishing.\n")
    print("| scenario | peer | held rounds | msg/s | deliveries/s | each round | vs ours | % of ceiling | p50 ms | p99 ms | server cpu-s per M deliveries | vs ours | server busy | generator saturated (rounds) | next step up failed (last round): |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in pub_scenarios:
        ours = [load(f"{s}.itty.r{r}") for r in R]
        for p in peers:
            runs = [load(f"{s}.{p}.r{r}") for r in R]
            ok = [x for x in runs if isinstance(x, dict)]
            name = NAMES.get(p, p)
            if not ok:
                print(f"| {s} | {name} | 0/{rounds} | {runs[-1]} | | | | | | | | | | | |")
                continue
            col = lambda k: [x.get(k) for x in ok]  # noqa: E731
            c = ceiling_of.get(members_of(s))
            d_med = med(col("deliveries"))
            pct = f"{d_med / c[0] * 100:.0f}%" if c and d_med else "?"
            each = ", ".join(short(x["deliveries"]) if isinstance(x, dict) else "-" for x in runs)
            sat = sum(1 for x in ok if x.get("saturated"))
            util = med(col("util"))
            last = runs[-1]
            print(f"| {s} | {name} | {len(ok)}/{rounds} | {spread(col('rate'))} | {spread(col('deliveries'))} | {each} | "
                  f"{ratios(runs, ours, 'deliveries') if p != 'itty' else '1x'} | {pct} | "
                  f"{spread(col('p50'), lambda v: f'{v:.2f}')} | {spread(col('p99'), lambda v: f'{v:.1f}')} | "
                  f"{spread(col('cpu'), lambda v: f'{v:.3f}')} | {ratios(runs, ours, 'cpu') if p != 'itty' else '1x'} | "
                  f"{num(util * 100 if isinstance(util, (int, float)) else None, '.0f')}% | "
                  f"{'yes' if sat else 'no'} ({sat}/{len(ok)}) | {last['next'] if isinstance(last, dict) else last} |")
    reran = []
    for s in pub_scenarios:
        for p in peers:
            for r in R:
                x = load(f"{s}.{p}.r{r}")
                if isinstance(x, dict) and x.get("reruns"):
                    reran.append(f"{s} {NAMES.get(p, p)} r{r}: {x['reruns']} run(s) again, {x['rescued']} then held")
    if reran:
        print("\nSteps that failed and ran again at the same rate (`--sweep-retries`; a step holds if")
        print("either run held): " + "; ".join(reran) + ".")
    if ceiling_of:
        print()
        for s in pub_scenarios:
            c = ceiling_of.get(members_of(s))
            ours = [load(f"{s}.itty.r{r}") for r in R]
            d = med([x.get("deliveries") for x in ours if isinstance(x, dict)])
            if c and d:
                lo, hi = min(c[1]), max(c[1])
                print(f"- **{s}: ours at {d / c[0] * 100:.0f}% of what this box can receive** "
                      f"({short(d)} of {short(c[0])} deliveries/s over {members_of(s)} sockets; the ceiling "
                      f"read {short(lo)}-{short(hi)} at the start and end of the run, ours "
                      f"{d / hi * 100:.0f}-{d / lo * 100:.0f}% of those).")

# ---- the same rate for every peer: each sweep's first step ----
def first_step(label):
    d = read_json(label)
    if not isinstance(d, dict) or not d.get("steps_detail"):
        return None
    st = d["steps_detail"][0]
    return {"rate": st.get("rate"), "deliveries": st.get("deliveries_per_s"), "p50": st.get("latency_ms_p50"),
            "p99": st.get("latency_ms_p99"), "cpu": st.get("relay_cpu_s_per_million_deliveries"),
            "util": st.get("relay_util"), "gen": st.get("generator_util_avg"), "held": st.get("held")}

if pub_scenarios:
    print("\n## The same rate for every peer: each sweep's first step\n")
    print("Every sweep starts at the same rate, so its first step compares the peers at equal load,")
    print("whether or not it held. Server cpu per delivery is the figure least moved by other work on")
    print("the box (a server that is descheduled waits without spending cpu), where the p99 bound of")
    print("the sweeps is the most moved by it.\n")
    print("| scenario | peer | deliveries/s | p50 ms | p99 ms | held (rounds) | server cpu-s per M deliveries | vs ours | server busy | generator busy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in pub_scenarios:
        ours = [first_step(f"{s}.itty.r{r}") for r in R]
        for p in peers:
            runs = [first_step(f"{s}.{p}.r{r}") for r in R]
            ok = [x for x in runs if x]
            if not ok:
                print(f"| {s} | {NAMES.get(p, p)} | (no run) | | | | | | | |")
                continue
            col = lambda k: [x.get(k) for x in ok]  # noqa: E731
            util, gen = med(col("util")), med(col("gen"))
            print(f"| {s} | {NAMES.get(p, p)} | {spread(col('deliveries'))} | {spread(col('p50'), lambda v: f'{v:.2f}')} | "
                  f"{spread(col('p99'), lambda v: f'{v:.1f}')} | {sum(1 for x in ok if x['held'])}/{len(ok)} | "
                  f"{spread(col('cpu'), lambda v: f'{v:.3f}')} | {ratios(runs, ours, 'cpu') if p != 'itty' else '1x'} | "
                  f"{num(util * 100 if isinstance(util, (int, float)) else None, '.0f')}% | "
                  f"{num(gen * 100 if isinstance(gen, (int, float)) else None, '.0f')}% |")

# ---- connect ----
if "connect" in scenarios:
    print("\n## Connection storm (`connect`, closed loop), per peer\n")
    print("Each worker connects, upgrades, joins and closes, then starts again, as fast as the server")
    print("answers. `join p99` is the time from an attempt's start to joined, the first message it")
    print("can receive: itty, its own join event; NATS, the PONG after CONNECT/SUB/PING; nchan and")
    print("uws-raw, the 101. One server worker / shard. Medians over the rounds (min-max), ratios")
    print("within a round as above; with the generator saturated the joins/s is a floor.\n")
    print("| peer | joined/s | each round | vs ours | handshake p99 ms | join p50 ms | join p99 ms | failed | server cpu ms per join | vs ours | server busy (approx.) | generator busy | generator saturated (rounds) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ours = [load_connect(f"connect.itty.r{r}") for r in R]
    for p in peers:
        runs = [load_connect(f"connect.{p}.r{r}") for r in R]
        ok = [x for x in runs if isinstance(x, dict)]
        name = NAMES.get(p, p)
        if not ok:
            print(f"| {name} | {runs[-1]} | | | | | | | | | | | |")
            continue
        col = lambda k: [x.get(k) for x in ok]  # noqa: E731
        each = ", ".join(short(x["joined"]) if isinstance(x, dict) else "-" for x in runs)
        failed = sum(x.get("failed") or 0 for x in ok)
        reasons = {}
        for x in ok:
            for k, v in x["failures"].items():
                reasons[k] = reasons.get(k, 0) + v
        failed_text = str(failed) + (" (" + "; ".join(f"{v} {k}" for k, v in reasons.items()) + ")" if reasons else "")
        util, gen = med(col("util")), med(col("gen"))
        sat = sum(1 for x in ok if x.get("saturated"))
        print(f"| {name} | {spread(col('joined'))} | {each} | {ratios(runs, ours, 'joined') if p != 'itty' else '1x'} | "
              f"{spread(col('hs_p99'), lambda v: f'{v:.2f}')} | {spread(col('join_p50'), lambda v: f'{v:.2f}')} | "
              f"{spread(col('join_p99'), lambda v: f'{v:.2f}')} | {failed_text} | "
              f"{spread(col('cpu'), lambda v: f'{v:.3f}')} | {ratios(runs, ours, 'cpu') if p != 'itty' else '1x'} | "
              f"{num(util * 100 if isinstance(util, (int, float)) else None, '.0f')}% | "
              f"{num(gen * 100 if isinstance(gen, (int, float)) else None, '.0f')}% | {'yes' if sat else 'no'} ({sat}/{len(ok)}) |")

if shards2:
    print(f"\n## Ours on 2 shards (cpus 0,1, the generator sharing them), {shards2_scenario}\n")
    r = load(f"{shards2_scenario}.itty-2-shards")
    ones = [load(f"{shards2_scenario}.itty.r{k}") for k in R]
    ones = [x for x in ones if isinstance(x, dict)]
    one = min(ones, key=lambda x: abs(x["deliveries"] - med([y["deliveries"] for y in ones]))) if ones else {}
    print("| run | msg/s | deliveries/s | p50 ms | p99 ms | server cpu-s per M deliveries | vs 1 shard | generator saturated | next step up failed: |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, x in (("1 shard (above; the median round)", one), ("2 shards", r)):
        if isinstance(x, dict) and x:
            one_cpu = one.get("cpu") if isinstance(one, dict) else None
            rat = f"{x['cpu'] / one_cpu:.2f}x" if isinstance(x.get("cpu"), (int, float)) and one_cpu else "-"
            print(f"| {label} | {num(x['rate'], ',.0f')} | {num(x['deliveries'], ',.0f')} | {num(x['p50'], '.2f')} | {num(x['p99'], '.1f')} | "
                  f"{num(x['cpu'], '.3f')} | {rat} | {'yes' if x['saturated'] else 'no'} | {x['next']} |")
        else:
            print(f"| {label} | {x or '?'} | | | | | | | |")
PY
  echo
  echo "Raw output (JSON, stderr, the exact command of each run): \`$work\`."
} > "$out"
cat "$out"
say "report written to $out"
