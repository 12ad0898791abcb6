#!/usr/bin/env bash
# Host-wide kernel settings and user limits for the relay and the load
# generator: sysctls in one drop-in file, limits in one limits.d file, both
# named for itty-relay. See tuning/README.md for why each knob matters.
set -euo pipefail

TUNING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$TUNING_DIR/lib.sh"

usage() {
    cat <<'EOF'
Usage: host.sh --check | --dry-run | --apply | --undo [--dry-run] [options]

Sysctls and user limits for a dedicated itty-relay host (also right for the
load generator's host).

  --check      read-only: each knob's current and recommended value; exits 1
               if any is below (LOW) or off (differs) the recommendation
  --dry-run    print what --apply would change, change nothing
  --apply      write /etc/sysctl.d/90-itty-relay.conf and
               /etc/security/limits.d/90-itty-relay.conf, and set the sysctls
               now (needs root); never lowers a value someone raised
  --undo       put back the sysctl values recorded before the first --apply,
               remove both files (with --dry-run: only print)

Options:
  --socket-buffer-max BYTES   cap on one TCP socket's kernel buffer, each
                              direction (tcp_rmem/tcp_wmem max); default 1048576
  --nofile N                  open files per process (soft and hard);
                              default 1048576
  --memlock-kib N             locked memory per user, KiB; default 2048 per
                              cpu, at least 65536
  -h, --help                  this text

Exit status: 0 fine; 1 check found LOW/differs, or the machine refused a
change; 2 usage error.
EOF
}

# --- the knobs --------------------------------------------------------------

# Our listen(2) backlog (src/limits.rs LISTEN_BACKLOG); the kernel silently
# caps it at net.core.somaxconn.
LISTEN_BACKLOG=4096
# 55,296 ephemeral ports per (source address, destination) pair for the
# generator; the low end stays clear of the usual service ports.
PORT_RANGE_RECOMMENDED="10240 65535"
SOCKET_BUFFER_MAX=1048576
NOFILE=1048576
MEMLOCK_KIB=""   # computed in main unless given

# Sysctls that --apply sets. KIND says how current and recommended compare:
#   min    a number that should be at least the recommendation
#   range  a port range that should be at least as wide
#   triple three numbers (tcp_mem), each at least the recommendation
#   cap    "min default max" of per-socket buffers: max set to the cap
SYSCTL_KEYS=(
    net.core.somaxconn
    net.ipv4.tcp_max_syn_backlog
    net.ipv4.ip_local_port_range
    net.ipv4.tcp_mem
    net.ipv4.tcp_rmem
    net.ipv4.tcp_wmem
    fs.nr_open
    fs.file-max
)

sysctl_kind() {
    case "$1" in
        net.ipv4.ip_local_port_range) echo range ;;
        net.ipv4.tcp_mem) echo triple ;;
        net.ipv4.tcp_rmem | net.ipv4.tcp_wmem) echo cap ;;
        *) echo min ;;
    esac
}

# tcp_mem is counted in pages for all TCP sockets together: min, pressure,
# max. On a dedicated host TCP may use up to half the RAM (pressure from a
# quarter) before the kernel refuses socket memory; the default is ~9%.
tcp_mem_recommended() {
    local mem_kib page_kib pages
    mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    page_kib=$(($(getconf PAGESIZE) / 1024))
    pages=$((mem_kib / page_kib))
    echo "$((pages / 8)) $((pages / 4)) $((pages / 2))"
}

sysctl_recommended() {
    case "$1" in
        net.core.somaxconn | net.ipv4.tcp_max_syn_backlog) echo "$LISTEN_BACKLOG" ;;
        net.ipv4.ip_local_port_range) echo "$PORT_RANGE_RECOMMENDED" ;;
        net.ipv4.tcp_mem) tcp_mem_recommended ;;
        net.ipv4.tcp_rmem | net.ipv4.tcp_wmem) echo "max $SOCKET_BUFFER_MAX" ;;
        fs.nr_open) echo "$NOFILE" ;;          # the ceiling for any nofile limit
        fs.file-max) echo "$NOFILE" ;;         # open files on the whole host
    esac
}

sysctl_path() {
    echo "/proc/sys/${1//.//}"
}

# The current value with runs of blanks as single spaces; empty if absent
# (e.g. tcp_mem inside a container's network namespace).
sysctl_read() {
    local path
    path=$(sysctl_path "$1")
    if [[ -r "$path" ]]; then
        tr -s ' \t' ' ' < "$path"
    fi
}

# The value --apply sets, from the value before the first --apply: never
# lower than what was there (someone may have raised it on purpose).
sysctl_target() {
    local key="$1" before="$2" rec b r
    rec=$(sysctl_recommended "$key")
    case "$(sysctl_kind "$key")" in
        min)
            if ((before > rec)); then echo "$before"; else echo "$rec"; fi
            ;;
        range)
            read -r -a b <<< "$before"
            read -r -a r <<< "$rec"
            echo "$(( b[0] < r[0] ? b[0] : r[0] )) $(( b[1] > r[1] ? b[1] : r[1] ))"
            ;;
        triple)
            read -r -a b <<< "$before"
            read -r -a r <<< "$rec"
            echo "$(( b[0] > r[0] ? b[0] : r[0] )) $(( b[1] > r[1] ? b[1] : r[1] )) $(( b[2] > r[2] ? b[2] : r[2] ))"
            ;;
        cap)
            # Keep the kernel's min and initial size; only the max is ours.
            read -r -a b <<< "$before"
            echo "${b[0]} $(( b[1] < SOCKET_BUFFER_MAX ? b[1] : SOCKET_BUFFER_MAX )) $SOCKET_BUFFER_MAX"
            ;;
    esac
}

# ok / LOW / differs for the check table.
sysctl_status() {
    local key="$1" current="$2" rec c r
    rec=$(sysctl_recommended "$key")
    read -r -a c <<< "$current"
    case "$(sysctl_kind "$key")" in
        min)
            if ((current >= rec)); then echo ok; else echo LOW; fi
            ;;
        range)
            read -r -a r <<< "$rec"
            if (( c[1] - c[0] >= r[1] - r[0] )); then echo ok; else echo LOW; fi
            ;;
        triple)
            read -r -a r <<< "$rec"
            if (( c[0] >= r[0] && c[1] >= r[1] && c[2] >= r[2] )); then echo ok; else echo LOW; fi
            ;;
        cap)
            if (( c[2] == SOCKET_BUFFER_MAX )); then echo ok; else echo differs; fi
            ;;
    esac
}

SYSCTL_FILE="$ETC_DIR/sysctl.d/90-itty-relay.conf"
LIMITS_FILE="$ETC_DIR/security/limits.d/90-itty-relay.conf"

# "# before: key = value" lines of an earlier --apply, if any.
recorded_before() {
    local key="$1"
    if [[ -f "$SYSCTL_FILE" ]]; then
        sed -n "s/^# before: $key = //p" "$SYSCTL_FILE"
    fi
}

# --- check ------------------------------------------------------------------

check_sysctls() {
    local key current
    echo "sysctls"
    check_header
    for key in "${SYSCTL_KEYS[@]}"; do
        current=$(sysctl_read "$key")
        if [[ -z "$current" ]]; then
            check_row "$key" "(absent here)" "$(sysctl_recommended "$key")" info
            continue
        fi
        check_row "$key" "$current" "$(sysctl_recommended "$key")" "$(sysctl_status "$key" "$current")"
    done
    # Only caps for setsockopt(SO_RCVBUF/SO_SNDBUF), which neither the relay
    # nor the generator calls: shown, not set.
    for key in net.core.rmem_max net.core.wmem_max; do
        check_row "$key" "$(sysctl_read "$key")" "(not used)" info
    done
    check_io_uring_allowed
    echo "  file: $SYSCTL_FILE $(if [[ -f "$SYSCTL_FILE" ]]; then echo present; else echo absent; fi)"
}

# Kernel 6.6+ can switch io_uring off host-wide; the relay cannot run then.
check_io_uring_allowed() {
    local value
    value=$(sysctl_read kernel.io_uring_disabled)
    case "$value" in
        "") check_row kernel.io_uring_disabled "(absent: kernel < 6.6)" 0 info ;;
        0) check_row kernel.io_uring_disabled 0 0 ok ;;
        1) check_row kernel.io_uring_disabled "1 (group only)" 0 \
            "differs: only members of group kernel.io_uring_group may use io_uring" ;;
        *) check_row kernel.io_uring_disabled "$value (disabled)" 0 differs ;;
    esac
}

# This session's limits; the limits.d file only applies at the next login.
check_limits() {
    local nofile memlock memlock_status
    echo "limits of this session (ulimit -S; the relay's unit sets its own)"
    check_header
    nofile=$(ulimit -S -n)
    if [[ "$nofile" == unlimited ]] || ((nofile >= NOFILE)); then
        check_row "nofile (ulimit -n)" "$nofile" "$NOFILE" ok
    else
        check_row "nofile (ulimit -n)" "$nofile" "$NOFILE" LOW
    fi
    memlock=$(ulimit -S -l)
    memlock_status=LOW
    if [[ "$memlock" == unlimited ]] || ((memlock >= MEMLOCK_KIB)); then
        memlock_status=ok
    fi
    # Root has CAP_IPC_LOCK: io_uring does not count its memory at all.
    if [[ "$(id -u)" == 0 && "$memlock_status" == LOW ]]; then
        memlock_status="info (root: not counted)"
    fi
    check_row "memlock KiB (ulimit -l)" "$memlock" "$MEMLOCK_KIB" "$memlock_status"
    echo "  file: $LIMITS_FILE $(if [[ -f "$LIMITS_FILE" ]]; then echo present; else echo absent; fi)"
    if ! grep -qs pam_limits /etc/pam.d/*; then
        echo "  note: no pam_limits in /etc/pam.d: limits.d files are not applied at login here"
    fi
}

# --- apply and undo -----------------------------------------------------------

sysctl_file_content() {
    local key before target
    echo "# Written by itty-relay tuning/host.sh --apply. Undo: tuning/host.sh --undo"
    echo "# (or delete this file and run 'sysctl --system'; values set only here"
    echo "# then stay until reboot). Why each value: tuning/README.md."
    for key in "${SYSCTL_KEYS[@]}"; do
        before=$(recorded_before "$key")
        if [[ -z "$before" ]]; then before=$(sysctl_read "$key"); fi
        if [[ -n "$before" ]]; then echo "# before: $key = $before"; fi
    done
    for key in "${SYSCTL_KEYS[@]}"; do
        before=$(recorded_before "$key")
        if [[ -z "$before" ]]; then before=$(sysctl_read "$key"); fi
        if [[ -z "$before" ]]; then continue; fi
        target=$(sysctl_target "$key" "$before")
        echo "$key = $target"
    done
}

limits_file_content() {
    local domain
    echo "# Written by itty-relay tuning/host.sh --apply. Undo: tuning/host.sh --undo"
    echo "# (or delete this file). Applies at the next login through pam_limits;"
    echo "# systemd services take LimitNOFILE=/LimitMEMLOCK= from their unit instead."
    echo "# '*' does not cover root, hence the root lines."
    for domain in '*' root; do
        printf '%-6s %-5s %-8s %s\n' "$domain" soft nofile "$NOFILE"
        printf '%-6s %-5s %-8s %s\n' "$domain" hard nofile "$NOFILE"
        printf '%-6s %-5s %-8s %s\n' "$domain" soft memlock "$MEMLOCK_KIB"
        printf '%-6s %-5s %-8s %s\n' "$domain" hard memlock "$MEMLOCK_KIB"
    done
}

apply() {
    local content key target current changed=0
    content=$(sysctl_file_content)
    echo "sysctls"
    write_config_file "$SYSCTL_FILE" "$content"
    while read -r key _ target; do
        current=$(sysctl_read "$key")
        if [[ "$current" != "$target" ]]; then
            write_kernel_file "$(sysctl_path "$key")" "$target" "$key" "$current"
            changed=1
        fi
    done < <(grep -v '^#' <<< "$content")
    if [[ "$changed" == 0 ]]; then echo "  every sysctl already has its value"; fi
    for key in "${SYSCTL_KEYS[@]}"; do
        if [[ -z "$(sysctl_read "$key")" ]]; then
            echo "  skipped $key: absent here (a container's network namespace?); set it on the host"
        fi
    done
    if [[ "$CHANGES_REFUSED" -gt 0 ]]; then
        echo "  the file stays: where /proc/sys is writable (the host, at boot) it applies"
    fi
    echo "limits"
    write_config_file "$LIMITS_FILE" "$(limits_file_content)"
    echo "  (takes effect at the next login; this session keeps its limits)"
}

undo() {
    local file="$SYSCTL_FILE" key before current
    echo "sysctls"
    if [[ -f "$file" ]]; then
        while read -r key _ before; do
            current=$(sysctl_read "$key")
            if [[ -n "$current" && "$current" != "$before" ]]; then
                write_kernel_file "$(sysctl_path "$key")" "$before" "$key" "$current"
            fi
        done < <(sed -n 's/^# before: //p' "$file")
    else
        echo "  no $file: nothing recorded to put back"
    fi
    remove_file "$file"
    echo "limits"
    remove_file "$LIMITS_FILE"
}

main() {
    while [[ $# -gt 0 ]]; do
        if parse_mode_flag "$1"; then shift; continue; fi
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --socket-buffer-max) SOCKET_BUFFER_MAX="${2:?--socket-buffer-max needs BYTES}"; shift 2 ;;
            --nofile) NOFILE="${2:?--nofile needs N}"; shift 2 ;;
            --memlock-kib) MEMLOCK_KIB="${2:?--memlock-kib needs N}"; shift 2 ;;
            *) usage_error "unknown option: $1" ;;
        esac
    done
    finish_mode
    for value in "$SOCKET_BUFFER_MAX" "$NOFILE" "${MEMLOCK_KIB:-0}"; do
        if [[ ! "$value" =~ ^[0-9]+$ ]]; then usage_error "not a number: $value"; fi
    done
    if [[ -z "$MEMLOCK_KIB" ]]; then
        # Each glommio executor (a relay shard, a generator executor) locks
        # ~0.85 MiB at the default 256 KiB io_memory, counted per user; 2 MiB
        # a cpu leaves room for a relay and a generator run by the same user.
        MEMLOCK_KIB=$(( $(getconf _NPROCESSORS_ONLN) * 2048 ))
        if ((MEMLOCK_KIB < 65536)); then MEMLOCK_KIB=65536; fi
    fi

    case "$MODE" in
        check)
            check_sysctls
            check_limits
            finish_check
            ;;
        apply)
            require_root_to_change
            if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing is changed"; fi
            apply
            finish_changes
            ;;
        undo)
            require_root_to_change
            if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing is changed"; fi
            undo
            finish_changes
            ;;
    esac
}

main "$@"
