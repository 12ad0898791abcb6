#!/usr/bin/env bash
# Places a NIC's interrupts and its receive/transmit steering (RPS/XPS)
# against the relay's shard cpus: either on the same cpus as the shards
# (mode "same") or on cpus of their own (mode "apart"). Runtime settings: the
# kernel forgets them at reboot; what they replaced is kept under /run for
# --undo. See tuning/README.md for the choice between the modes.
set -euo pipefail

TUNING_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$TUNING_DIR/lib.sh"

usage() {
    cat <<'EOF'
Usage: irq-affinity.sh --check | --dry-run | --apply | --undo [--dry-run]
                       [--nic NAME] [--shard-cpus LIST] [--mode same|apart]
                       [--irq-cpus LIST]

Puts the NIC's queue interrupts, RPS and XPS on the right cpus for the relay.
Shard i runs on the i-th cpu of the relay's affinity mask.

  --check            read-only: current and recommended placement of every
                     IRQ and queue; exits 1 if any differs (or irqbalance
                     runs and would move them back)
  --dry-run          print what --apply would change, change nothing
  --apply            set them now (needs root; lost at reboot: run it at boot)
  --undo             put back what the first --apply replaced (since boot)

  --nic NAME         network interface; default: the one with the default route
  --shard-cpus LIST  the cpus the relay's shards run on, e.g. 0-7; default:
                     this shell's affinity mask (what the relay would use if
                     started from here)
  --mode same        (default) each queue's IRQ on a shard cpu, round-robin by
                     queue number; RPS over the shard cpus only when the NIC
                     has fewer receive queues than shard cpus
  --mode apart       IRQs (and RPS) only on --irq-cpus, which must not
                     overlap --shard-cpus; start the relay on the shard cpus
                     only (CPUAffinity= in the unit, or taskset)
  --irq-cpus LIST    the cpus for interrupts in mode apart
  -h, --help         this text

XPS in both modes: each shard cpu sends on one transmit queue (shard i on
queue i mod queues). Exit status: 0 fine; 1 check found a difference, or the
machine refused a change; 2 usage error.
EOF
}

NIC=""
SHARD_CPUS=""      # expanded: "0 1 2 3"
PLACEMENT_MODE=same
IRQ_CPUS=""        # expanded; mode apart only
STATE_FILE="$STATE_DIR/irq-affinity.before"

# --- what the NIC has ---------------------------------------------------------

# The interface of the default route, if any (/proc/net/route: destination 0).
default_route_nic() {
    awk 'NR > 1 && $2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null || true
}

irq_name() {
    local irq="$1"
    if [[ -r "/sys/kernel/irq/$irq/actions" ]]; then
        cat "/sys/kernel/irq/$irq/actions"
    else
        awk -v label="$irq:" '$1 == label { print $NF }' /proc/interrupts
    fi
}

# "IRQ NAME" lines for the NIC's queue interrupts, by IRQ number. MSI
# vectors are listed under the PCI function; a virtio NIC sits one level
# below it (virtioN), and its "config" vector carries no traffic.
nic_irqs() {
    local device msi_dir="" virtio_prefix="" irq name
    device=$(readlink -f "/sys/class/net/$NIC/device")
    if [[ -d "$device/msi_irqs" ]]; then
        msi_dir="$device/msi_irqs"
    elif [[ -d "$device/../msi_irqs" ]]; then
        msi_dir="$device/../msi_irqs"
        virtio_prefix="$(basename "$device")-"
    fi
    if [[ -n "$msi_dir" ]]; then
        for irq in $(find "$msi_dir/" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n); do
            name=$(irq_name "$irq")
            if [[ -n "$virtio_prefix" && "$name" != "$virtio_prefix"* ]]; then continue; fi
            if [[ "$name" == *config* ]]; then continue; fi
            echo "$irq ${name:-?}"
        done
    elif [[ -r "$device/irq" ]] && [[ "$(cat "$device/irq")" != 0 ]]; then
        irq=$(cat "$device/irq")   # one legacy interrupt for everything
        echo "$irq $(irq_name "$irq")"
    fi
}

# The queue an IRQ serves: the last number in its name once any "@pci..."
# suffix is gone (virtio2-input.3, eth0-TxRx-3, mlx5_comp3@pci:...); the
# IRQ's position in the list when the name has no number.
irq_queue() {
    local name="${1%%@*}" position="$2" number
    number=$(grep -o '[0-9]\+' <<< "$name" | tail -n 1 || true)
    echo "${number:-$position}"
}

queue_dirs() {
    local kind="$1"   # rx or tx
    find "/sys/class/net/$NIC/queues" -maxdepth 1 -name "$kind-*" 2>/dev/null \
        | sort -t- -k2 -n
}

# "0 1 2" for the cpus that take IRQs in the chosen mode.
irq_target_cpus() {
    if [[ "$PLACEMENT_MODE" == same ]]; then echo "$SHARD_CPUS"; else echo "$IRQ_CPUS"; fi
}

# The Nth (0-based, wrapping) word of a list.
nth_cpu() {
    local list=() index="$2"
    read -r -a list <<< "$1"
    echo "${list[index % ${#list[@]}]}"
}

count_words() {
    local list=()
    read -r -a list <<< "$1"
    echo "${#list[@]}"
}

# The RPS cpus for every receive queue: none when the hardware already has a
# queue per IRQ cpu (steering would only add a hop between cpus).
rps_target() {
    local targets receive_queues
    targets=$(irq_target_cpus)
    receive_queues=$(queue_dirs rx | wc -l)
    if ((receive_queues < $(count_words "$targets"))); then echo "$targets"; fi
}

# The shard cpus that send on transmit queue J of T.
xps_target() {
    local queue="$1" queues="$2" cpu index=0 out=()
    for cpu in $SHARD_CPUS; do
        if ((index % queues == queue)); then out+=("$cpu"); fi
        index=$((index + 1))
    done
    echo "${out[*]}"
}

# A kernel cpu list or mask file, as a compressed cpu list ("" when none).
read_cpulist_file() {
    cpulist_compress "$(cpulist_expand "$(cat "$1")")"
}

read_mask_file() {
    cpulist_compress "$(mask_to_cpus "$(cat "$1")")"
}

# --- the plan: every (file, current, target) ----------------------------------

# Prints "kind label path target" lines; kind is list (smp_affinity_list)
# or mask (rps_cpus, xps_cpus). Target "-" means none (mask 0).
plan() {
    local position=0 irq name queue targets rps dir queues j xps
    targets=$(irq_target_cpus)
    while read -r irq name; do
        queue=$(irq_queue "$name" "$position")
        echo "list irq$irq:$name /proc/irq/$irq/smp_affinity_list $(nth_cpu "$targets" "$queue")"
        position=$((position + 1))
    done < <(nic_irqs)
    rps=$(rps_target)
    for dir in $(queue_dirs rx); do
        echo "mask rps:$NIC/$(basename "$dir") $dir/rps_cpus $(cpulist_compress "$rps" | sed 's/^$/-/')"
    done
    # XPS needs more than one transmit queue (the kernel refuses to even
    # show xps_cpus otherwise).
    queues=$(queue_dirs tx | wc -l)
    j=0
    for dir in $(queue_dirs tx); do
        xps=$(xps_target "$j" "$queues")
        if ((queues > 1)) && cat "$dir/xps_cpus" > /dev/null 2>&1; then
            echo "mask xps:$NIC/$(basename "$dir") $dir/xps_cpus $(cpulist_compress "$xps" | sed 's/^$/-/')"
        fi
        j=$((j + 1))
    done
}

current_of() {
    local kind="$1" path="$2" value
    if [[ "$kind" == list ]]; then value=$(read_cpulist_file "$path"); else value=$(read_mask_file "$path"); fi
    echo "${value:--}"
}

# The value to write for a target: a cpu list, or a hex mask (0 for none).
value_for() {
    local kind="$1" target="$2"
    if [[ "$kind" == list ]]; then
        echo "$target"
    elif [[ "$target" == - ]]; then
        echo 0
    else
        cpus_to_mask "$(cpulist_expand "$target")"
    fi
}

irqbalance_running() {
    pgrep -x irqbalance > /dev/null 2>&1
}

describe() {
    local driver rx tx
    driver=$(basename "$(readlink -f "/sys/class/net/$NIC/device/driver")")
    rx=$(queue_dirs rx | wc -l)
    tx=$(queue_dirs tx | wc -l)
    echo "nic $NIC (driver $driver, $rx receive / $tx transmit queues), mode $PLACEMENT_MODE," \
        "shard cpus $(cpulist_compress "$SHARD_CPUS")$(if [[ "$PLACEMENT_MODE" == apart ]]; then echo ", irq cpus $(cpulist_compress "$IRQ_CPUS")"; fi)"
    if [[ -z "$(nic_irqs)" ]]; then
        echo "  found no queue interrupts for $NIC: only RPS/XPS below apply"
    fi
    if ((tx < 2)); then
        echo "  one transmit queue: no XPS to set"
    fi
    if [[ "$driver" == virtio* ]]; then
        echo "  note: a virtio NIC: the hypervisor decides where the host side runs; this only places the guest side"
    fi
}

# --- modes ----------------------------------------------------------------------

check() {
    local kind label path target current
    describe
    check_header
    while read -r kind label path target; do
        current=$(current_of "$kind" "$path")
        if [[ "$current" == "$target" ]]; then
            check_row "$label" "$current" "$target" ok
        else
            check_row "$label" "$current" "$target" differs
        fi
    done < <(plan)
    if irqbalance_running; then
        check_row irqbalance running "stopped" "differs: it moves IRQs back"
    else
        check_row irqbalance "not running" "not running" ok
    fi
    finish_check
}

# Keeps the first value each file had, so --undo puts back what was there
# before any --apply since boot.
record_before() {
    local path="$1" value="$2"
    if [[ "$DRY_RUN" == 1 ]]; then return 0; fi
    mkdir -p "$STATE_DIR"
    if ! grep -qs "^$path " "$STATE_FILE"; then
        echo "$path $value" >> "$STATE_FILE"
    fi
}

apply() {
    local kind label path target current changed=0
    describe
    while read -r kind label path target; do
        current=$(current_of "$kind" "$path")
        if [[ "$current" != "$target" ]]; then
            record_before "$path" "$(cat "$path")"
            write_kernel_file "$path" "$(value_for "$kind" "$target")" "$label" "$(cat "$path")"
            changed=1
        fi
    done < <(plan)
    if [[ "$changed" == 0 ]]; then echo "  every IRQ and queue is already placed"; fi
    if irqbalance_running; then
        echo "  warning: irqbalance is running and will move these IRQs; stop it" \
            "(systemctl disable --now irqbalance) or ban them (IRQBALANCE_BANNED_CPULIST)" >&2
    fi
    if [[ "$PLACEMENT_MODE" == apart ]]; then
        echo "  start the relay on the shard cpus only: CPUAffinity=$(cpulist_compress "$SHARD_CPUS") in its unit," \
            "or taskset -c $(cpulist_compress "$SHARD_CPUS") itty-relay"
    fi
    finish_changes
}

undo() {
    local path value
    if [[ ! -f "$STATE_FILE" ]]; then
        echo "nothing recorded in $STATE_FILE (no --apply since boot): nothing to put back"
        return 0
    fi
    while read -r path value; do
        if [[ -e "$path" && "$(cat "$path")" != "$value" ]]; then
            write_kernel_file "$path" "$value" "$path"
        fi
    done < "$STATE_FILE"
    remove_file "$STATE_FILE"
    remove_empty_state_dir
    finish_changes
}

# A NIC without a device behind it has no interrupts to place.
explain_virtual_nic() {
    if [[ "$NIC" == lo ]]; then
        echo "lo is loopback: no interrupts and no queues to steer. On loopback the sending cpu"
        echo "also does the receiving side's protocol work (see loadtest/README.md); nothing to place."
    else
        echo "$NIC is a virtual device (no /sys/class/net/$NIC/device): it has no interrupts."
        echo "If it sits on a physical NIC (bond, VLAN, bridge), run this for that NIC (--nic);"
        echo "for a container's veth there is nothing to place here: do it on the host."
    fi
    if [[ "$MODE" == check ]]; then echo "Nothing to check."; else echo "Nothing to change."; fi
}

online_cpus() {
    cpulist_expand "$(cat /sys/devices/system/cpu/online)"
}

# Every cpu of a list must be online.
validate_cpus() {
    local name="$1" cpus="$2" cpu online
    online=" $(online_cpus) "
    for cpu in $cpus; do
        if [[ "$online" != *" $cpu "* ]]; then
            usage_error "$name: cpu $cpu is not online (online: $(cat /sys/devices/system/cpu/online))"
        fi
    done
}

main() {
    local shard_list="" irq_list="" cpu
    while [[ $# -gt 0 ]]; do
        if parse_mode_flag "$1"; then shift; continue; fi
        case "$1" in
            -h | --help) usage; exit 0 ;;
            --nic) NIC="${2:?--nic needs a NAME}"; shift 2 ;;
            --shard-cpus) shard_list="${2:?--shard-cpus needs a LIST}"; shift 2 ;;
            --irq-cpus) irq_list="${2:?--irq-cpus needs a LIST}"; shift 2 ;;
            --mode) PLACEMENT_MODE="${2:?--mode needs same or apart}"; shift 2 ;;
            *) usage_error "unknown option: $1" ;;
        esac
    done
    finish_mode
    if [[ "$PLACEMENT_MODE" != same && "$PLACEMENT_MODE" != apart ]]; then
        usage_error "--mode is same or apart, not '$PLACEMENT_MODE'"
    fi
    SHARD_CPUS=$(cpulist_expand "${shard_list:-$(affinity_cpulist)}") || usage_error "bad --shard-cpus"
    validate_cpus --shard-cpus "$SHARD_CPUS"
    if [[ "$PLACEMENT_MODE" == apart ]]; then
        if [[ -z "$irq_list" ]]; then usage_error "--mode apart needs --irq-cpus"; fi
        IRQ_CPUS=$(cpulist_expand "$irq_list") || usage_error "bad --irq-cpus"
        validate_cpus --irq-cpus "$IRQ_CPUS"
        for cpu in $IRQ_CPUS; do
            if [[ " $SHARD_CPUS " == *" $cpu "* ]]; then
                usage_error "--irq-cpus and --shard-cpus share cpu $cpu; in mode apart they must not"
            fi
        done
    elif [[ -n "$irq_list" ]]; then
        usage_error "--irq-cpus is for --mode apart"
    fi
    if [[ -z "$NIC" ]]; then
        NIC=$(default_route_nic)
        if [[ -z "$NIC" ]]; then
            echo "no default route here; looking at lo (give --nic for another interface)"
            NIC=lo
        fi
    fi
    if [[ ! -d "/sys/class/net/$NIC" ]]; then
        usage_error "no network interface '$NIC' (have: $(find /sys/class/net/ -mindepth 1 -maxdepth 1 -printf '%f '))"
    fi

    if [[ "$MODE" != check ]]; then require_root_to_change; fi
    if [[ "$DRY_RUN" == 1 ]]; then echo "dry run: nothing is changed"; fi
    if [[ "$MODE" == undo ]]; then undo; exit; fi
    if [[ ! -e "/sys/class/net/$NIC/device" ]]; then
        explain_virtual_nic
        exit 0
    fi
    case "$MODE" in
        check) check ;;
        apply) apply ;;
    esac
}

main "$@"
