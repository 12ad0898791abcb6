# shellcheck shell=bash
# Shared helpers for the tuning scripts: the common modes (--apply, --check,
# --undo, --dry-run), the check table, and cpu list <-> mask conversions.
# Sourced, never run. Changes nothing by itself.

# Where the scripts write (used by the scripts that source this file).
# Overridable only so that the scripts can be tried against a scratch
# directory (see README.md, the end).
# shellcheck disable=SC2034
ETC_DIR="${ITTY_ETC:-/etc}"
# The cpufreq tree governor.sh reads and writes (overridable for the same reason).
# shellcheck disable=SC2034
CPU_SYS_DIR="${ITTY_CPU_SYS:-/sys/devices/system/cpu}"
# Runtime-only settings (IRQ affinity, RPS/XPS, governor) are lost at reboot,
# so what they replaced is recorded under /run, which is emptied at reboot too.
# shellcheck disable=SC2034
STATE_DIR="${ITTY_STATE:-/run/itty-relay-tuning}"

MODE=""      # apply | check | undo
DRY_RUN=0    # 1: print what would change, change nothing
CHECK_FAILED=0
CHANGES_REFUSED=0

# Prints to stderr and exits with 2 (usage error).
usage_error() {
    echo "error: $*" >&2
    echo "try: $0 --help" >&2
    exit 2
}

# Handles the flags every script shares. Returns 0 if it consumed the flag.
parse_mode_flag() {
    case "$1" in
        --apply) MODE=apply ;;
        --check) MODE=check ;;
        --undo) MODE=undo ;;
        --dry-run) DRY_RUN=1 ;;
        *) return 1 ;;
    esac
    return 0
}

# After parsing: --dry-run alone means "what would --apply do".
finish_mode() {
    if [[ -z "$MODE" && "$DRY_RUN" == 1 ]]; then
        MODE=apply
    fi
    if [[ -z "$MODE" ]]; then
        usage_error "say what to do: --check, --dry-run, --apply or --undo"
    fi
    if [[ "$MODE" == check && "$DRY_RUN" == 1 ]]; then
        usage_error "--check changes nothing already; drop --dry-run"
    fi
}

# Changing anything needs root; dry runs and checks do not.
require_root_to_change() {
    if [[ "$DRY_RUN" == 0 && "$(id -u)" != 0 ]]; then
        echo "error: --$MODE changes the host and needs root (sudo)." >&2
        echo "       --check and --dry-run work as any user." >&2
        exit 1
    fi
}

# One row of the check table. STATUS is ok, LOW (below the recommendation:
# the check fails), differs (not as recommended: the check fails), or info
# (shown, never fails).
check_row() {
    local knob="$1" current="$2" recommended="$3" status="$4"
    printf '  %-36s %-24s %-24s %s\n' "$knob" "$current" "$recommended" "$status"
    if [[ "$status" == LOW || "$status" == differs ]]; then
        CHECK_FAILED=1
    fi
}

check_header() {
    printf '  %-36s %-24s %-24s %s\n' knob current recommended status
}

# Writes VALUE into a kernel file (/proc or /sys), or says what it would do;
# CURRENT, if given, is shown next to it. A refusal (read-only /proc/sys in a
# container, a managed IRQ, no root) is reported with the kernel's reason and
# counted; the script goes on.
write_kernel_file() {
    local path="$1" value="$2" label="$3" current="${4:-}"
    local was="" now=""
    if [[ -n "$current" ]]; then was=" (was $current)"; now=" (now $current)"; fi
    if [[ "$DRY_RUN" == 1 ]]; then
        if [[ -w "$path" ]]; then
            echo "  would set $label: $value$now  [$path]"
        elif [[ "$(id -u)" != 0 ]]; then
            echo "  would set $label: $value$now  [$path: needs root]"
        else
            echo "  would set $label: $value$now  [$path is read-only here (a container?): --apply would be refused]"
        fi
        return 0
    fi
    local error
    if error=$( { printf '%s\n' "$value" > "$path"; } 2>&1 ); then
        echo "  set $label: $value$was"
    else
        echo "  REFUSED $label: $value  [$path: ${error##*: }]" >&2
        CHANGES_REFUSED=$((CHANGES_REFUSED + 1))
    fi
}

# Writes CONTENT to a config file if it differs; in a dry run, shows the diff.
write_config_file() {
    local path="$1" content="$2"
    if [[ -f "$path" ]] && [[ "$(cat "$path")" == "$content" ]]; then
        echo "  unchanged: $path"
        return 0
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "  would write $path:"
        diff -u --label "$path (now)" --label "$path (new)" \
            <(if [[ -f "$path" ]]; then cat "$path"; fi) <(printf '%s\n' "$content") \
            | sed 's/^/    /' || true
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" > "$path"
    echo "  wrote $path"
}

# Runs a command, or prints it in a dry run. A failure is reported and
# counted; the script goes on.
run_command() {
    if [[ "$DRY_RUN" == 1 ]]; then
        echo "  would run: $*"
        return 0
    fi
    if "$@"; then
        echo "  ran: $*"
    else
        echo "  FAILED: $*" >&2
        CHANGES_REFUSED=$((CHANGES_REFUSED + 1))
    fi
}

remove_file() {
    local path="$1"
    if [[ ! -e "$path" ]]; then
        echo "  nothing to remove: $path"
    elif [[ "$DRY_RUN" == 1 ]]; then
        echo "  would remove $path"
    else
        rm -f "$path"
        echo "  removed $path"
    fi
}

# Removes the state directory once nothing is recorded in it any more.
remove_empty_state_dir() {
    if [[ "$DRY_RUN" == 0 && -d "$STATE_DIR" ]]; then
        rmdir --ignore-fail-on-non-empty "$STATE_DIR"
    fi
}

# Exit status after --apply or --undo: 1 if the kernel refused something.
finish_changes() {
    if [[ "$CHANGES_REFUSED" -gt 0 ]]; then
        echo "$CHANGES_REFUSED change(s) refused by this machine (see REFUSED above)." >&2
        return 1
    fi
    return 0
}

# Exit status after --check: 1 if anything is below or off the recommendation.
finish_check() {
    if [[ "$CHECK_FAILED" == 1 ]]; then
        echo "Some knobs are below or off the recommendation (LOW / differs)."
        return 1
    fi
    echo "Every knob is at or above the recommendation."
    return 0
}

# "0-3,8" -> "0 1 2 3 8". Validates the syntax.
cpulist_expand() {
    local list="$1" part first last cpu out=()
    if [[ ! "$list" =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]]; then
        echo "error: not a cpu list: '$list' (expected e.g. 0-3,8)" >&2
        return 1
    fi
    local IFS=,
    for part in $list; do
        first="${part%-*}"
        last="${part#*-}"
        for ((cpu = first; cpu <= last; cpu++)); do
            out+=("$cpu")
        done
    done
    IFS=' '
    echo "${out[*]}"
}

# "0 1 2 3 8" (ascending) -> "0-3,8".
cpulist_compress() {
    local cpu first="" prev="" text=""
    for cpu in $1; do
        if [[ -z "$first" ]]; then
            first="$cpu"
        elif ((cpu != prev + 1)); then
            text+="$(range_text "$first" "$prev"),"
            first="$cpu"
        fi
        prev="$cpu"
    done
    if [[ -n "$first" ]]; then
        text+="$(range_text "$first" "$prev")"
    fi
    echo "$text"
}

range_text() {
    if [[ "$1" == "$2" ]]; then echo "$1"; else echo "$1-$2"; fi
}

# "0 1 33" -> "2,00000003": the kernel's cpumask format (32-bit hex words,
# most significant first, comma separated), as rps_cpus and xps_cpus take it.
cpus_to_mask() {
    local cpu words=() top=0 i out
    for cpu in $1; do
        i=$((cpu / 32))
        words[i]=$(( ${words[i]:-0} | (1 << (cpu % 32)) ))
        if ((i > top)); then top=$i; fi
    done
    out=$(printf '%x' "${words[top]:-0}")
    for ((i = top - 1; i >= 0; i--)); do
        out+=$(printf ',%08x' "${words[i]:-0}")
    done
    echo "$out"
}

# "00000000,00000003" -> "0 1"; an all-zero mask -> "".
mask_to_cpus() {
    local mask="${1//,/}" found=() digit value bit nibble=0 i
    for ((i = ${#mask} - 1; i >= 0; i--)); do
        digit="${mask:i:1}"
        value=$((16#$digit))
        for bit in 0 1 2 3; do
            if (( (value >> bit) & 1 )); then
                found+=($((nibble * 4 + bit)))
            fi
        done
        nibble=$((nibble + 1))
    done
    echo "${found[*]}"
}

# The cpus this shell may run on: the relay started from here pins shard i
# to the i-th of them (src/config.rs, allowed_cpus).
affinity_cpulist() {
    awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status
}
