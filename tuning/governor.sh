#!/usr/bin/env bash
# Sets the cpufreq governor of the relay's cpus to "performance": a shard
# that sleeps between bursts otherwise wakes on a slow clock, and the ramp-up
# shows as latency. Runtime setting: lost at reboot; what it replaced is kept
# under /run for --undo.
set -euo pipefail

TUNING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$TUNING_DIR/lib.sh"

usage() {
    cat <<'EOF'
Usage: governor.sh --check | --dry-run | --apply | --undo [--dry-run] [--cpus LIST]

Puts the cpufreq governor of each cpu on "performance".

  --check        read-only: each cpu's governor; exits 1 if one is not
                 "performance" (and the kernel offers it)
  --dry-run      print what --apply would change, change nothing
  --apply        set it now (needs root; lost at reboot: run it at boot)
  --undo         put back the governors the first --apply replaced (since boot)
  --cpus LIST    cpus to set, e.g. 0-7; default: every online cpu
  -h, --help     this text

Without a cpufreq interface (most VMs, some containers) there is nothing to
set: the hypervisor or the firmware picks the clock; the script says so and
exits 0. Exit status: 0 fine; 1 check found a difference, or the machine
refused a change; 2 usage error.
EOF
}

RECOMMENDED_GOVERNOR=performance
CPUS=""
STATE_FILE="$STATE_DIR/governor.before"

governor_file() {
    echo "$CPU_SYS_DIR/cpu$1/cpufreq/scaling_governor"
}

# True if no cpu of the list has a cpufreq directory.
no_cpufreq() {
    local cpu
    for cpu in $CPUS; do
        if [[ -r "$(governor_file "$cpu")" ]]; then return 1; fi
    done
    return 0
}

offers_performance() {
    local available="$CPU_SYS_DIR/cpu$1/cpufreq/scaling_available_governors"
    [[ -r "$available" ]] && [[ " $(cat "$available") " == *" $RECOMMENDED_GOVERNOR "* ]]
}

check() {
    local cpu current
    check_header
    for cpu in $CPUS; do
        if [[ ! -r "$(governor_file "$cpu")" ]]; then
            check_row "cpu$cpu governor" "(no cpufreq)" "$RECOMMENDED_GOVERNOR" info
            continue
        fi
        current=$(cat "$(governor_file "$cpu")")
        if [[ "$current" == "$RECOMMENDED_GOVERNOR" ]]; then
            check_row "cpu$cpu governor" "$current" "$RECOMMENDED_GOVERNOR" ok
        elif offers_performance "$cpu"; then
            check_row "cpu$cpu governor" "$current" "$RECOMMENDED_GOVERNOR" differs
        else
            check_row "cpu$cpu governor" "$current" "$RECOMMENDED_GOVERNOR" "info (not offered)"
        fi
    done
    finish_check
}

apply() {
    local cpu file current changed=0
    for cpu in $CPUS; do
        file=$(governor_file "$cpu")
        if [[ ! -r "$file" ]]; then continue; fi
        current=$(cat "$file")
        if [[ "$current" == "$RECOMMENDED_GOVERNOR" ]]; then continue; fi
        if ! offers_performance "$cpu"; then
            echo "  cpu$cpu: the kernel does not offer '$RECOMMENDED_GOVERNOR'" \
                "(has: $(cat "$CPU_SYS_DIR/cpu$cpu/cpufreq/scaling_available_governors"))"
            continue
        fi
        if [[ "$DRY_RUN" == 0 ]]; then
            mkdir -p "$STATE_DIR"
            if ! grep -qs "^$file " "$STATE_FILE"; then echo "$file $current" >> "$STATE_FILE"; fi
        fi
        write_kernel_file "$file" "$RECOMMENDED_GOVERNOR" "cpu$cpu governor" "$current"
        changed=1
    done
    if [[ "$changed" == 0 ]]; then echo "  every cpu is already on '$RECOMMENDED_GOVERNOR' (or cannot be)"; fi
    finish_changes
}

undo() {
    local file value
    if [[ ! -f "$STATE_FILE" ]]; then
        echo "nothing recorded in $STATE_FILE (no --apply since boot): nothing to put back"
        return 0
    fi
    while read -r file value; do
        if [[ -e "$file" && "$(cat "$file")" != "$value" ]]; then
            write_kernel_file "$file" "$value" "$file"
        fi
    done < "$STATE_FILE"
    remove_file "$STATE_FILE"
    remove_empty_state_dir
    finish_changes
}

main() {
    local cpu_list=""
    while [[ $# -gt 0 ]]; do
        if parse_mode_flag "$1"; then shift; continue; fi
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --cpus) cpu_list="${2:?--cpus needs a LIST}"; shift 2 ;;
            *) usage_error "unknown option: $1" ;;
        esac
    done
    finish_mode
    CPUS=$(cpulist_expand "${cpu_list:-$(cat "$CPU_SYS_DIR/online")}") || usage_error "bad --cpus"

    if [[ "$MODE" != check ]]; then require_root_to_change; fi
    if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing is changed"; fi
    if [[ "$MODE" == undo ]]; then undo; exit; fi
    if no_cpufreq; then
        echo "no cpufreq interface for cpus $(cpulist_compress "$CPUS")" \
            "($CPU_SYS_DIR/cpuN/cpufreq is missing): a VM or a firmware-managed clock;"
        echo "nothing to $(if [[ "$MODE" == check ]]; then echo check; else echo change; fi) here."
        exit 0
    fi
    case "$MODE" in
        check) check ;;
        apply) apply ;;
    esac
}

main "$@"
