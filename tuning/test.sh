#!/usr/bin/env bash
# Tests the tuning scripts without changing the host: every script's --help,
# --check (exit 0 or 1, never a crash) and --dry-run, then a snapshot of every
# value and file they touch, compared before and after. Apply/undo round
# trips run only where they cannot reach the host: the governor against a
# fake cpufreq tree, host.sh inside a private network namespace. Safe as root
# or not; takes seconds.
set -euo pipefail

TUNING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$TUNING_DIR/lib.sh"

SCRIPTS=(host.sh irq-affinity.sh governor.sh install-service.sh)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
FAILURES=0

pass() { echo "ok   $1"; }
fail() {
    echo "FAIL $1"
    FAILURES=$((FAILURES + 1))
}

# Runs a script; passes if its exit status is one of ALLOWED (e.g. "0 1"),
# its output contains WANT, and bash reported no error of its own
# ("line N: ...": unbound variable, syntax, command not found).
expect() {
    local name="$1" allowed="$2" want="$3"
    shift 3
    local status=0
    "$@" > "$SCRATCH/out" 2>&1 || status=$?
    if [[ " $allowed " != *" $status "* ]]; then
        fail "$name: exit $status, expected one of: $allowed"
        sed 's/^/     | /' "$SCRATCH/out"
    elif ! grep -q -- "$want" "$SCRATCH/out"; then
        fail "$name: output lacks '$want'"
        sed 's/^/     | /' "$SCRATCH/out"
    elif grep -E -q '(^|: )line [0-9]+: ' "$SCRATCH/out"; then
        fail "$name: bash error"
        sed 's/^/     | /' "$SCRATCH/out"
    else
        pass "$name (exit $status)"
    fi
}

same() {
    local name="$1" got="$2" wanted="$3"
    if [[ "$got" == "$wanted" ]]; then pass "$name"; else fail "$name: got '$got', wanted '$wanted'"; fi
}

irqbalance_running() {
    pgrep -x irqbalance > /dev/null 2>&1
}

# Every value and file the scripts could change, one per line.
snapshot() {
    local key path
    for key in net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.ip_local_port_range \
        net.ipv4.tcp_mem net.ipv4.tcp_rmem net.ipv4.tcp_wmem fs.nr_open fs.file-max; do
        echo "$key = $(cat "/proc/sys/${key//.//}" 2>/dev/null || echo absent)"
    done
    # irqbalance moves IRQs on its own; their placement is then no evidence.
    if ! irqbalance_running; then
        for path in /proc/irq/*/smp_affinity_list; do
            echo "$path = $(cat "$path" 2>/dev/null || echo unreadable)"
        done
    fi
    for path in /sys/class/net/*/queues/*/rps_cpus /sys/class/net/*/queues/*/xps_cpus \
        /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
        if [[ -e "$path" ]]; then echo "$path = $(cat "$path" 2>/dev/null || echo unreadable)"; fi
    done
    for path in /etc/sysctl.d/90-itty-relay.conf /etc/security/limits.d/90-itty-relay.conf \
        /etc/systemd/system/itty-relay.service /usr/local/bin/itty-relay \
        /etc/itty-relay/relay.toml /run/itty-relay-tuning; do
        if [[ -e "$path" ]]; then echo "$path = $(ls -ld --time-style=+%s "$path") $(cksum < "$path" 2>/dev/null || true)"
        else echo "$path absent"; fi
    done
}

test_helpers() {
    same "cpulist_expand 0-3,8" "$(cpulist_expand 0-3,8)" "0 1 2 3 8"
    same "cpulist_compress" "$(cpulist_compress "0 1 2 3 8 10 11")" "0-3,8,10-11"
    same "cpus_to_mask 0 1" "$(cpus_to_mask "0 1")" "3"
    same "cpus_to_mask 0 1 33" "$(cpus_to_mask "0 1 33")" "2,00000003"
    same "mask_to_cpus 2,00000003" "$(mask_to_cpus 2,00000003)" "0 1 33"
    same "mask_to_cpus 00000000,00000000" "$(mask_to_cpus 00000000,00000000)" ""
    if cpulist_expand "0-a" > /dev/null 2>&1; then fail "cpulist_expand refuses 0-a"; else pass "cpulist_expand refuses 0-a"; fi
}

test_every_script() {
    local script
    for script in "${SCRIPTS[@]}"; do
        expect "$script --help" 0 "Usage:" "$TUNING_DIR/$script" --help
        expect "$script (no action)" 2 "say what to do" "$TUNING_DIR/$script"
        expect "$script --bogus" 2 "unknown option" "$TUNING_DIR/$script" --check --bogus
        expect "$script --check --dry-run" 2 "drop --dry-run" "$TUNING_DIR/$script" --check --dry-run
        expect "$script --check" "0 1" "" "$TUNING_DIR/$script" --check
        expect "$script --dry-run" 0 "" "$TUNING_DIR/$script" --dry-run
        expect "$script --undo --dry-run" 0 "" "$TUNING_DIR/$script" --undo --dry-run
    done
}

test_irq_cases() {
    local cpus first last
    expect "irq-affinity.sh --check --nic lo" 0 "loopback" "$TUNING_DIR/irq-affinity.sh" --check --nic lo
    expect "irq-affinity.sh --dry-run --nic lo" 0 "Nothing to change" "$TUNING_DIR/irq-affinity.sh" --dry-run --nic lo
    expect "irq-affinity.sh unknown nic" 2 "no network interface" \
        "$TUNING_DIR/irq-affinity.sh" --check --nic itty-no-such-nic
    expect "irq-affinity.sh apart without --irq-cpus" 2 "needs --irq-cpus" \
        "$TUNING_DIR/irq-affinity.sh" --check --mode apart
    cpus=$(cpulist_expand "$(affinity_cpulist)")
    first=${cpus%% *}
    last=${cpus##* }
    expect "irq-affinity.sh apart overlapping" 2 "must not" \
        "$TUNING_DIR/irq-affinity.sh" --check --mode apart --irq-cpus "$first" --shard-cpus "$first"
    if [[ "$first" != "$last" ]]; then
        expect "irq-affinity.sh --check --mode apart" "0 1" "mode apart" \
            "$TUNING_DIR/irq-affinity.sh" --check --mode apart --irq-cpus "$first" --shard-cpus "$last"
        expect "irq-affinity.sh --dry-run --mode apart" 0 "" \
            "$TUNING_DIR/irq-affinity.sh" --dry-run --mode apart --irq-cpus "$first" --shard-cpus "$last"
    fi
}

# --apply and --undo against a fake cpufreq tree: nothing outside $SCRATCH.
test_governor_round_trip() {
    if [[ "$(id -u)" != 0 ]]; then
        echo "skip governor round trip (needs root to run --apply, even on a fake tree)"
        return 0
    fi
    local tree="$SCRATCH/cpu" cpu
    for cpu in 0 1; do
        mkdir -p "$tree/cpu$cpu/cpufreq"
        echo powersave > "$tree/cpu$cpu/cpufreq/scaling_governor"
        echo "performance powersave" > "$tree/cpu$cpu/cpufreq/scaling_available_governors"
    done
    echo 0-1 > "$tree/online"
    export ITTY_CPU_SYS="$tree" ITTY_STATE="$SCRATCH/state"
    expect "governor.sh --check (fake tree, powersave)" 1 "differs" "$TUNING_DIR/governor.sh" --check
    expect "governor.sh --apply (fake tree)" 0 "set cpu1 governor" "$TUNING_DIR/governor.sh" --apply
    expect "governor.sh --check after apply" 0 "ok" "$TUNING_DIR/governor.sh" --check
    expect "governor.sh --apply again" 0 "already" "$TUNING_DIR/governor.sh" --apply
    expect "governor.sh --undo (fake tree)" 0 "removed" "$TUNING_DIR/governor.sh" --undo
    same "governors restored" "$(cat "$tree"/cpu*/cpufreq/scaling_governor | tr '\n' ' ')" "powersave powersave "
    unset ITTY_CPU_SYS ITTY_STATE
}

# host.sh --apply/--undo inside a private network namespace, with its files
# in $SCRATCH. The net.* keys it sets belong to that namespace; fs.* keys
# are host-wide, so the round trip runs only if host.sh would not set any.
test_host_round_trip() {
    if [[ "$(id -u)" != 0 ]] || ! unshare -n true 2> /dev/null; then
        echo "skip host.sh round trip (needs root and a private network namespace)"
        return 0
    fi
    if ! unshare -n test -w /proc/sys/net/ipv4/ip_local_port_range; then
        echo "skip host.sh round trip (/proc/sys is read-only here)"
        return 0
    fi
    export ITTY_ETC="$SCRATCH/etc"
    unshare -n "$TUNING_DIR/host.sh" --dry-run > "$SCRATCH/plan" 2>&1 || true
    if grep -q "would set fs\." "$SCRATCH/plan"; then
        echo "skip host.sh round trip (it would raise host-wide fs.* limits here)"
        unset ITTY_ETC
        return 0
    fi
    # The inner script is single-quoted on purpose: it expands inside the namespace.
    # shellcheck disable=SC2016
    expect "host.sh apply, check, apply, undo in a network namespace" 0 "ROUND TRIP OK" \
        unshare -n bash -c '
            set -e
            before=$(cat /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_wmem)
            "$1" --apply
            "$1" --check | grep "net.ipv4.ip_local_port_range .* ok"
            "$1" --apply | grep "every sysctl already has its value"
            "$1" --undo
            after=$(cat /proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/ipv4/tcp_wmem)
            [[ "$before" == "$after" ]]
            [[ ! -e "$ITTY_ETC/sysctl.d/90-itty-relay.conf" ]]
            echo ROUND TRIP OK' _ "$TUNING_DIR/host.sh"
    unset ITTY_ETC
}

test_shellcheck() {
    if ! command -v shellcheck > /dev/null; then
        echo "skip shellcheck (not installed)"
        return 0
    fi
    if (cd "$TUNING_DIR" && shellcheck -x ./*.sh) > "$SCRATCH/out" 2>&1; then
        pass "shellcheck"
    else
        fail "shellcheck"
        sed 's/^/     | /' "$SCRATCH/out"
    fi
}

# systemd-analyze verify needs ExecStart= to exist: check a copy that runs
# /bin/true instead of the (maybe not installed) relay.
test_unit() {
    if ! command -v systemd-analyze > /dev/null; then
        echo "skip unit verification (no systemd-analyze)"
        return 0
    fi
    mkdir -p "$SCRATCH/unit"
    sed 's#^ExecStart=/usr/local/bin/itty-relay#ExecStart=/bin/true#' "$TUNING_DIR/itty-relay.service" \
        > "$SCRATCH/unit/itty-relay.service"
    if systemd-analyze verify "$SCRATCH/unit/itty-relay.service" > "$SCRATCH/out" 2>&1 \
        && ! grep -q . "$SCRATCH/out"; then
        pass "systemd-analyze verify itty-relay.service"
    else
        fail "systemd-analyze verify itty-relay.service"
        sed 's/^/     | /' "$SCRATCH/out"
    fi
}

main() {
    snapshot > "$SCRATCH/before"
    test_helpers
    test_every_script
    test_irq_cases
    test_governor_round_trip
    test_host_round_trip
    test_shellcheck
    test_unit
    snapshot > "$SCRATCH/after"
    if diff -u "$SCRATCH/before" "$SCRATCH/after" > "$SCRATCH/diff"; then
        pass "the host is unchanged ($(wc -l < "$SCRATCH/before") values and files compared)"
    else
        fail "the host changed"
        cat "$SCRATCH/diff"
    fi
    if ((FAILURES > 0)); then
        echo "$FAILURES failure(s)"
        exit 1
    fi
    echo "all passed"
}

main "$@"
