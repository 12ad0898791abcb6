#!/usr/bin/env bash
# Smoke check of the uWebSockets peers with the generator: each relay joins
# members, relays, and the generator reads it (fanout and rooms, then
# connect), a few seconds each, on loopback. Fails unless every connection
# joined, something was delivered and nothing was lost or failed.
#
#   loadtest/peers/uws/smoke.sh        (after build.sh, and cargo build --release -p itty-loadtest)
#
# Not in .ci/run: it needs checkouts of uWebSockets and uSockets (README.md).
# GEN overrides the generator binary; SERVER_CPU / GEN_CPUS the cpus (0 / 1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
GEN=${GEN:-$repo/target/release/itty-loadtest}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPUS=${GEN_CPUS:-1}
PORT=${PORT:-18790}
[[ -x $GEN ]] || { echo "smoke.sh: no generator at $GEN (cargo build --release -p itty-loadtest)" >&2; exit 2; }

failures=0
check() { # NAME JSON CONDITION (a Python expression over the summary `d`)
  local name=$1 json=$2 cond=$3
  if python3 -c "import json, sys; d = json.loads(sys.argv[1]); sys.exit(0 if ($cond) else 1)" "$json"; then
    echo "ok   $name"
  else
    echo "FAIL $name: $cond; summary: $json" >&2
    failures=$((failures + 1))
  fi
}

for peer in uws uws-raw; do
  proto=itty; [[ $peer == uws-raw ]] && proto=nchan
  pid=$("$here/../start.sh" "$peer" "$PORT" "$SERVER_CPU")
  trap '"$here/../stop.sh" "$peer" "$PORT"' EXIT
  common=(--url "ws://127.0.0.1:$PORT" --proto "$proto" --cpus "$GEN_CPUS" --relay-pid "$pid" --json)
  out=$("$GEN" fanout --members 200 --publishers 1 --rate 50 --duration 2 --warmup 0 "${common[@]}")
  check "$peer fanout ($proto wire)" "$out" \
    "d['members_joined'] == 200 and d['received'] > 0 and d['lost'] == 0 and d['unstamped'] == 0 and d['gaps'] == 0"
  out=$("$GEN" rooms --rooms 20 --room-size 5 --rate-per-member 5 --duration 2 --warmup 0 "${common[@]}")
  check "$peer rooms ($proto wire)" "$out" \
    "d['members_joined'] == 100 and d['received'] > 0 and d['lost'] == 0 and d['unstamped'] == 0"
  out=$("$GEN" connect --concurrency 8 --duration 2 --channels 10 "${common[@]}")
  check "$peer connect ($proto wire)" "$out" "d['joined'] > 0 and not d['failed']"
  "$here/../stop.sh" "$peer" "$PORT"
  trap - EXIT
done
((failures == 0)) || { echo "smoke.sh: $failures check(s) failed" >&2; exit 1; }
echo "smoke.sh: the generator joins, publishes to and reads both uWebSockets relays"
