#!/usr/bin/env bash
# Installs the relay as a systemd service: the binary in /usr/local/bin, the
# unit tuning/itty-relay.service in /etc/systemd/system, and an empty
# /etc/itty-relay/relay.toml (all defaults) if there is none. It does not
# start or enable the service.
set -euo pipefail

TUNING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$TUNING_DIR/lib.sh"

usage() {
    cat <<'EOF'
Usage: install-service.sh --check | --dry-run | --apply | --undo [--dry-run] [--binary PATH]

Installs itty-relay as a systemd service (not started, not enabled).

  --check          read-only: is the binary, the unit and the config in place
                   and current; exits 1 if not
  --dry-run        print what --apply would do, change nothing
  --apply          install /usr/local/bin/itty-relay,
                   /etc/systemd/system/itty-relay.service and (if missing)
                   /etc/itty-relay/relay.toml; daemon-reload (needs root)
  --undo           stop and disable the service, remove the unit and the
                   binary; keeps /etc/itty-relay/relay.toml (your settings)
  --binary PATH    the relay to install; default: target/release/itty-relay
                   of this checkout (cargo build --release)
  -h, --help       this text

Then: systemctl enable --now itty-relay; systemctl reload itty-relay sends
SIGHUP; systemctl stop drains (SIGTERM). Exit status: 0 fine; 1 check found a
difference, or a step failed; 2 usage error.
EOF
}

BINARY="$TUNING_DIR/../target/release/itty-relay"
UNIT_SOURCE="$TUNING_DIR/itty-relay.service"
# The unit's ExecStart= names /usr/local/bin/itty-relay; overridable only to
# try the script against a scratch directory.
INSTALLED_BINARY="${ITTY_BIN_DIR:-/usr/local/bin}/itty-relay"
INSTALLED_UNIT="$ETC_DIR/systemd/system/itty-relay.service"
CONFIG_FILE="$ETC_DIR/itty-relay/relay.toml"
SERVICE=itty-relay.service

CONFIG_TEMPLATE='# itty-relay settings: keys as the flags, with underscores, e.g.
# listen = "0.0.0.0:8080"
# shutdown_timeout_ms = 5000   # keep TimeoutStopSec= in the unit above it
# itty-relay --help lists them all. Empty means every default.'

# systemd runs as the service manager (not merely installed).
systemd_running() {
    [[ -d /run/systemd/system ]]
}

file_status() {
    local installed="$1" source="$2"
    if [[ ! -e "$installed" ]]; then
        echo LOW
    elif [[ ! -e "$source" ]] || cmp -s "$installed" "$source"; then
        echo ok
    else
        echo differs
    fi
}

present_or_absent() {
    if [[ -e "$1" ]]; then echo present; else echo absent; fi
}

check() {
    local property
    echo "binary $INSTALLED_BINARY, unit $INSTALLED_UNIT, config $CONFIG_FILE"
    check_header
    check_row binary "$(present_or_absent "$INSTALLED_BINARY")" "same as --binary" \
        "$(file_status "$INSTALLED_BINARY" "$BINARY")"
    check_row unit "$(present_or_absent "$INSTALLED_UNIT")" "same as tuning/'s" \
        "$(file_status "$INSTALLED_UNIT" "$UNIT_SOURCE")"
    check_row config "$(present_or_absent "$CONFIG_FILE")" present \
        "$(if [[ -e "$CONFIG_FILE" ]]; then echo ok; else echo LOW; fi)"
    if ! systemd_running; then
        check_row systemd "not running here" running info
    elif [[ -e "$INSTALLED_UNIT" ]]; then
        for property in ActiveState LimitMEMLOCK LimitNOFILE; do
            check_row "$SERVICE $property" "$(systemctl show -P "$property" "$SERVICE")" "" info
        done
    fi
    finish_check
}

install_binary() {
    if [[ ! -x "$BINARY" ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then
            echo "  would install $BINARY as $INSTALLED_BINARY (but it is missing: cargo build --release)"
            return 0
        fi
        echo "error: no relay binary at $BINARY: cargo build --release, or give --binary" >&2
        exit 1
    fi
    if cmp -s "$BINARY" "$INSTALLED_BINARY"; then
        echo "  unchanged: $INSTALLED_BINARY"
    else
        run_command install -D -m 0755 "$BINARY" "$INSTALLED_BINARY"
    fi
}

apply() {
    install_binary
    write_config_file "$INSTALLED_UNIT" "$(cat "$UNIT_SOURCE")"
    if [[ -e "$CONFIG_FILE" ]]; then
        echo "  kept: $CONFIG_FILE"
    else
        write_config_file "$CONFIG_FILE" "$CONFIG_TEMPLATE"
    fi
    if systemd_running; then
        run_command systemctl daemon-reload
        echo "  start it with: systemctl enable --now $SERVICE"
    else
        echo "  systemd is not running here: the unit is in place for a host where it does"
    fi
    finish_changes
}

undo() {
    if systemd_running && [[ -e "$INSTALLED_UNIT" ]]; then
        # Stopping sends SIGTERM: the relay drains within its shutdown timeout.
        run_command systemctl disable --now "$SERVICE"
    fi
    remove_file "$INSTALLED_UNIT"
    if systemd_running; then
        run_command systemctl daemon-reload
    fi
    remove_file "$INSTALLED_BINARY"
    if [[ -e "$CONFIG_FILE" ]]; then
        echo "  kept $CONFIG_FILE (your settings): remove it by hand if unwanted"
    fi
    finish_changes
}

main() {
    while [[ $# -gt 0 ]]; do
        if parse_mode_flag "$1"; then shift; continue; fi
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --binary) BINARY="${2:?--binary needs a PATH}"; shift 2 ;;
            *) usage_error "unknown option: $1" ;;
        esac
    done
    finish_mode
    if [[ "$MODE" != check ]]; then require_root_to_change; fi
    if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing is changed"; fi
    case "$MODE" in
        check) check ;;
        apply) apply ;;
        undo) undo ;;
    esac
}

main "$@"
