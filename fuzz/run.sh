#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), two at a time (one
# per core; FUZZ_JOBS changes it), on the stable toolchain:
#
#   fuzz/run.sh [SECONDS]
#
# Builds all targets once (release, debug assertions and overflow checks
# on, no sanitizer), then runs each from its committed seeds
# (seeds/<target>, read only) plus what earlier runs found (corpus/<target>,
# not committed). Prints the executions of each target; fails on any crash
# or failed property, printing the panic and the artifact path (artifacts/
# <target>/crash-*). Reproduce one with:
#   cargo fuzz run -O -a -s none TARGET artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
jobs=${FUZZ_JOBS:-2}
flags=(-O -a -s none)
mkdir -p logs
rm -f logs/*.log logs/*.status

echo "fuzz: $(cargo fuzz --version), $(rustc --version)"
started=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: built all targets in $(($(date +%s) - started)) s"

# One target: its log in logs/<target>.log; exit status is libFuzzer's.
run_one() {
  local target=$1
  mkdir -p "corpus/$target" "artifacts/$target"
  # libFuzzer stops itself after max_total_time; the outer timeout only
  # guards against a hang outside its control. An input that takes over
  # 10 s is reported as a timeout, like a crash.
  timeout --kill-after=10 $((seconds + 120)) \
    cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"logs/$target.log" 2>&1
}

targets=$(cargo fuzz list)
declare -A status
for target in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  echo "fuzz: $target for ${seconds} s"
  ( code=0; run_one "$target" || code=$?; echo "$code" >"logs/$target.status" ) &
done
wait

failed=0
printf '\n%-14s %14s %10s %8s  %s\n' target executions exec/s corpus result
for target in $targets; do
  log="logs/$target.log"
  code=$(cat "logs/$target.status" 2>/dev/null || echo 1)
  units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ -z "$units" ]; then
    units=$(sed -n 's/^#\([0-9]*\).*DONE.*/\1/p' "$log" | tail -1)
  fi
  per_sec=$(( ${units:-0} / seconds ))
  corpus=$(find "corpus/$target" -type f | wc -l)
  result=ok
  [ "$code" = 0 ] || { result="FAILED ($code)"; failed=1; }
  printf '%-14s %14s %10s %8s  %s\n' "$target" "${units:-?}" "$per_sec" "$corpus" "$result"
done

if [ "$failed" != 0 ]; then
  for target in $targets; do
    [ "$(cat "logs/$target.status" 2>/dev/null || echo 1)" = 0 ] && continue
    printf '\n==> %s failed; the end of its log (fuzz/logs/%s.log):\n' "$target" "$target"
    grep -v '^#[0-9]' "logs/$target.log" | tail -40
    grep -h 'Test unit written to\|artifact' "logs/$target.log" || true
  done
  exit 1
fi
echo "fuzz: every target ran ${seconds} s without a failure ($(($(date +%s) - started)) s in all)"
