#!/usr/bin/env bash
# Inspect and tune a Linux host for Prism's media plane. See tuning.md for what each
# setting does to the forwarder and how to measure it.
#
#   scripts/host-tuning.sh show                 print every setting tuning.md covers
#   scripts/host-tuning.sh apply [OPTIONS]      raise the runtime-safe sysctls (root)
#
# apply options:
#   --dry-run           print what apply would change, change nothing (no root needed)
#   --busy-poll US      net.core.busy_read/busy_poll target (default 50)
#   --no-busy-poll      leave the busy-poll sysctls as they are
#   --persist           also write the values to /etc/sysctl.d/60-prism.conf
#
# `show` changes nothing, runs as any user and prints "n/a" for whatever it cannot read.
# `apply` only ever raises a value; one already at or above the target is left alone.
# Everything else in tuning.md (IRQ affinity, isolcpus, governors, firewall rules) is a
# decision about the whole host and is left to the operator.
set -euo pipefail

# What the forwarder asks for (forwarder/src/runtime/mod.rs: recv_buffer/send_buffer).
readonly FORWARDER_BUF=$((8 << 20))
readonly TARGET_RMEM_MAX=$FORWARDER_BUF
readonly TARGET_WMEM_MAX=$FORWARDER_BUF
readonly TARGET_RMEM_DEFAULT=$((1 << 20))
readonly TARGET_BACKLOG=16384
readonly PERSIST_FILE=/etc/sysctl.d/60-prism.conf

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

have() { command -v "$1" >/dev/null 2>&1; }

# Contents of a file with surrounding whitespace squeezed, or "n/a".
rd() {
    local v
    if [ -r "$1" ] && v=$(tr -s ' \t\n' ' ' <"$1" 2>/dev/null); then
        v=${v# }
        v=${v% }
        printf '%s' "${v:-<empty>}"
    else
        printf 'n/a'
    fi
}

sysctl_path() { printf '/proc/sys/%s' "${1//.//}"; }
sysctl_get() { rd "$(sysctl_path "$1")"; }

section() { printf '\n== %s\n' "$1"; }
kv() { printf '  %-48s %s\n' "$1" "$2"; }
note() { printf '  (%s)\n' "$1"; }

kernel_at_least() { # major minor
    local rel major minor
    rel=$(uname -r)
    major=${rel%%.*}
    minor=${rel#*.}
    minor=${minor%%[!0-9]*}
    [ "$major" -gt "$1" ] || { [ "$major" -eq "$1" ] && [ "${minor:-0}" -ge "$2" ]; }
}

# Interfaces backed by a device (NICs, virtio); if there are none, every interface but lo.
interfaces() {
    local d found=0
    for d in /sys/class/net/*; do
        [ -e "$d/device" ] || continue
        printf '%s\n' "${d##*/}"
        found=1
    done
    if [ "$found" = 0 ]; then
        for d in /sys/class/net/*; do
            [ "${d##*/}" = lo ] || printf '%s\n' "${d##*/}"
        done
    fi
}

show_kernel() {
    section "host"
    kv "kernel" "$(uname -r)"
    kv "cpus online" "$(rd /sys/devices/system/cpu/online)"
    kv "running as uid" "$(id -u)"
    kv "kernel cmdline (tuning-related)" "$(tr ' ' '\n' </proc/cmdline 2>/dev/null |
        grep -E '^(isolcpus|nohz_full|rcu_nocbs|irqaffinity|intel_idle\.max_cstate|processor\.max_cstate|idle|intel_pstate|amd_pstate|numa_balancing|skew_tick)=' |
        tr '\n' ' ' || true)"
}

show_buffers() {
    section "socket buffers and backlog"
    local rmax
    rmax=$(sysctl_get net.core.rmem_max)
    kv "net.core.rmem_max" "$rmax"
    kv "net.core.wmem_max" "$(sysctl_get net.core.wmem_max)"
    kv "net.core.rmem_default" "$(sysctl_get net.core.rmem_default)"
    kv "net.core.wmem_default" "$(sysctl_get net.core.wmem_default)"
    kv "net.ipv4.udp_mem (pages: min pressure max)" "$(sysctl_get net.ipv4.udp_mem)"
    kv "net.ipv4.udp_rmem_min" "$(sysctl_get net.ipv4.udp_rmem_min)"
    kv "net.core.netdev_max_backlog" "$(sysctl_get net.core.netdev_max_backlog)"
    kv "net.core.netdev_budget" "$(sysctl_get net.core.netdev_budget)"
    kv "net.core.netdev_budget_usecs" "$(sysctl_get net.core.netdev_budget_usecs)"
    if [[ $rmax =~ ^[0-9]+$ ]]; then
        local granted=$(( (rmax < FORWARDER_BUF ? rmax : FORWARDER_BUF) * 2 ))
        note "forwarder asks SO_RCVBUF=$FORWARDER_BUF; with this rmem_max its startup log shows granted_recv=$granted (the kernel reports twice the capped request)"
    fi

    section "UDP and softnet counters (since boot)"
    if have nstat; then
        # -a: absolute values, -z: include zeros, -s: do not update nstat's history file.
        nstat -asz UdpInDatagrams UdpInErrors UdpRcvbufErrors UdpSndbufErrors UdpMemErrors \
            UdpNoPorts Udp6RcvbufErrors Udp6SndbufErrors 2>/dev/null |
            awk 'NR > 1 { printf "  %-48s %s\n", $1, $2 }' || true
    else
        kv "/proc/net/snmp Udp" "$(grep '^Udp:' /proc/net/snmp 2>/dev/null | tail -1 || echo n/a)"
    fi
    if [ -r /proc/net/softnet_stat ]; then
        local cpu=0 processed dropped squeezed rest
        while read -r processed dropped squeezed rest; do
            kv "softnet cpu$cpu processed/dropped/time_squeeze" \
                "$((16#$processed)) / $((16#$dropped)) / $((16#$squeezed))"
            cpu=$((cpu + 1))
        done </proc/net/softnet_stat
    else
        kv "/proc/net/softnet_stat" "n/a"
    fi
}

show_busy_poll() {
    section "busy polling"
    kv "net.core.busy_read (us)" "$(sysctl_get net.core.busy_read)"
    kv "net.core.busy_poll (us)" "$(sysctl_get net.core.busy_poll)"
    local i
    for i in $(interfaces); do
        kv "$i napi_defer_hard_irqs" "$(rd "/sys/class/net/$i/napi_defer_hard_irqs")"
        kv "$i gro_flush_timeout (ns)" "$(rd "/sys/class/net/$i/gro_flush_timeout")"
    done
    if kernel_at_least 6 9; then
        note "kernel has io_uring NAPI busy-poll registration (6.9+); the forwarder does not use it yet"
    else
        note "kernel predates io_uring NAPI busy-poll registration (6.9)"
    fi
}

show_nic() {
    section "NIC queues, RSS, RPS/RFS/XPS, offloads"
    kv "net.core.rps_sock_flow_entries" "$(sysctl_get net.core.rps_sock_flow_entries)"
    local i q rx tx drv
    for i in $(interfaces); do
        drv=$(basename "$(readlink -f "/sys/class/net/$i/device/driver" 2>/dev/null)" 2>/dev/null || true)
        kv "$i driver" "${drv:-n/a}"
        kv "$i numa_node" "$(rd "/sys/class/net/$i/device/numa_node")"
        kv "$i mtu / txqueuelen" "$(rd "/sys/class/net/$i/mtu") / $(rd "/sys/class/net/$i/tx_queue_len")"
        rx=$(find "/sys/class/net/$i/queues" -maxdepth 1 -name 'rx-*' 2>/dev/null | wc -l)
        tx=$(find "/sys/class/net/$i/queues" -maxdepth 1 -name 'tx-*' 2>/dev/null | wc -l)
        kv "$i queues rx/tx" "$rx / $tx"
        for q in "/sys/class/net/$i/queues"/rx-*; do
            [ -e "$q" ] || continue
            kv "$i ${q##*/} rps_cpus / rps_flow_cnt" "$(rd "$q/rps_cpus") / $(rd "$q/rps_flow_cnt")"
        done
        for q in "/sys/class/net/$i/queues"/tx-*; do
            [ -e "$q" ] || continue
            kv "$i ${q##*/} xps_cpus" "$(rd "$q/xps_cpus")"
        done
        if have ethtool; then
            kv "$i channels (ethtool -l, current)" "$(ethtool -l "$i" 2>/dev/null |
                awk '/Current hardware settings/ {c = 1} c && /^(RX|TX|Combined):/ {printf "%s%s ", $1, $2}' || true)"
            kv "$i rings (ethtool -g, current)" "$(ethtool -g "$i" 2>/dev/null |
                awk '/Current hardware settings/ {c = 1} c && /^(RX|TX):/ {printf "%s%s ", $1, $2}' || true)"
            kv "$i udp4 rx-flow-hash" "$(ethtool -n "$i" rx-flow-hash udp4 2>/dev/null |
                awk 'NR > 1 && NF {printf "%s; ", $0}' || true)"
            kv "$i offloads" "$(ethtool -k "$i" 2>/dev/null |
                grep -E '^(generic-receive-offload|rx-udp-gro-forwarding|tx-udp-segmentation|ntuple-filters|receive-hashing):' |
                tr -s ' \n' ' ' || true)"
        else
            note "ethtool not installed: channels, rings, RSS hash and offloads not shown"
        fi
    done
}

show_irqs() {
    section "IRQ affinity and irqbalance"
    kv "default_smp_affinity" "$(rd /proc/irq/default_smp_affinity)"
    local state="not running"
    if pgrep -x irqbalance >/dev/null 2>&1; then
        state="running (pid $(pgrep -x irqbalance | head -1))"
    fi
    kv "irqbalance" "$state"
    local f
    for f in /etc/default/irqbalance /etc/sysconfig/irqbalance; do
        [ -r "$f" ] || continue
        kv "$f" "$(grep -E '^[[:space:]]*IRQBALANCE_(BANNED_CPUS|BANNED_CPULIST|ARGS)=' "$f" | tr '\n' ' ' || true)"
    done
    local i irq name shown=0
    for i in $(interfaces); do
        # Interrupt lines naming the interface (most drivers: eth0-TxRx-0, mlx5_comp0@..., virtio0-input.0).
        while read -r irq name; do
            kv "irq $irq $name -> cpus" "$(rd "/proc/irq/$irq/smp_affinity_list")"
            shown=1
        done < <(awk -v dev="$i" '$1 ~ /^[0-9]+:$/ && index($0, dev) { sub(":", "", $1); print $1, $NF }' /proc/interrupts 2>/dev/null || true)
        if [ -r "/sys/class/net/$i/device/msi_irqs" ] || [ -d "/sys/class/net/$i/device/msi_irqs" ]; then
            for irq in "/sys/class/net/$i/device/msi_irqs"/*; do
                [ -e "$irq" ] || continue
                irq=${irq##*/}
                grep -q "^ *$irq:" /proc/interrupts 2>/dev/null || continue
                kv "irq $irq (msi of $i) -> cpus" "$(rd "/proc/irq/$irq/smp_affinity_list")"
                shown=1
            done
        fi
    done
    [ "$shown" = 1 ] || note "no interrupt lines found for the interfaces above"
}

show_cpu() {
    section "CPU isolation"
    kv "isolated" "$(rd /sys/devices/system/cpu/isolated)"
    kv "nohz_full" "$(rd /sys/devices/system/cpu/nohz_full)"
    if [ -r /sys/fs/cgroup/cpuset.cpus.effective ]; then # cgroup v2
        kv "cgroup v2 root cpuset.cpus.effective" "$(rd /sys/fs/cgroup/cpuset.cpus.effective)"
        kv "system.slice cpuset.cpus (AllowedCPUs)" "$(rd /sys/fs/cgroup/system.slice/cpuset.cpus)"
        kv "user.slice cpuset.cpus (AllowedCPUs)" "$(rd /sys/fs/cgroup/user.slice/cpuset.cpus)"
    elif [ -d /sys/fs/cgroup/cpuset ]; then # cgroup v1
        kv "cgroup v1 root cpuset.cpus" "$(rd /sys/fs/cgroup/cpuset/cpuset.cpus)"
        kv "cgroup v1 system.slice cpuset.cpus" "$(rd /sys/fs/cgroup/cpuset/system.slice/cpuset.cpus)"
    else
        kv "cpuset cgroup" "n/a"
    fi
    kv "this shell's cgroup" "$(grep -E '^0::|cpuset' /proc/self/cgroup 2>/dev/null | head -1 || echo n/a)"
    kv "this shell's allowed cpus" "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status 2>/dev/null || echo n/a)"
    kv "kernel.numa_balancing" "$(sysctl_get kernel.numa_balancing)"

    section "CPU frequency and idle states"
    local govs
    govs=$(cat /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | sort | uniq -c | tr -s ' \n' ' ' || true)
    kv "scaling_governor (count governor)" "${govs:-n/a (no cpufreq: VM or driver not loaded)}"
    kv "scaling_driver cpu0" "$(rd /sys/devices/system/cpu/cpu0/cpufreq/scaling_driver)"
    kv "energy_performance_preference cpu0" "$(rd /sys/devices/system/cpu/cpu0/cpufreq/energy_performance_preference)"
    kv "intel_pstate/no_turbo" "$(rd /sys/devices/system/cpu/intel_pstate/no_turbo)"
    kv "cpufreq/boost" "$(rd /sys/devices/system/cpu/cpufreq/boost)"
    kv "cpuidle driver / governor" "$(rd /sys/devices/system/cpu/cpuidle/current_driver) / $(rd /sys/devices/system/cpu/cpuidle/current_governor_ro)"
    local s states="" off
    for s in /sys/devices/system/cpu/cpu0/cpuidle/state*; do
        [ -d "$s" ] || continue
        off=""
        [ "$(rd "$s/disable")" != 1 ] || off=",disabled"
        states+="$(rd "$s/name")(exit latency $(rd "$s/latency")us$off) "
    done
    kv "cpu0 idle states" "${states:-n/a}"
}

show_uring() {
    section "io_uring, memlock, seccomp"
    kv "kernel.io_uring_disabled" "$(sysctl_get kernel.io_uring_disabled)"
    kv "kernel.io_uring_group" "$(sysctl_get kernel.io_uring_group)"
    if kernel_at_least 6 0; then
        kv "kernel >= 6.0 (multishot recvmsg, buffer rings)" "yes"
    else
        kv "kernel >= 6.0 (multishot recvmsg, buffer rings)" "no: --driver auto will pick mmsg"
    fi
    kv "ulimit -l (memlock, KiB) soft/hard" "$(ulimit -S -l) / $(ulimit -H -l)"
    kv "seccomp mode of this shell" "$(awk '/^Seccomp:/ {print $2}' /proc/self/status 2>/dev/null || echo n/a)"
    note "seccomp 0 = none, 2 = filter (containers): a filter may refuse io_uring_setup"
}

show_gso() {
    section "UDP GSO/GRO"
    if kernel_at_least 4 18; then kv "UDP_SEGMENT (GSO, 4.18+)" "available"; else kv "UDP_SEGMENT (GSO, 4.18+)" "no"; fi
    if kernel_at_least 5 0; then kv "UDP_GRO socket option (5.0+)" "available"; else kv "UDP_GRO socket option (5.0+)" "no"; fi
    note "per-interface offload flags are listed under NIC (needs ethtool)"
}

show_conntrack() {
    section "conntrack, ports, firewall"
    if [ -d /proc/sys/net/netfilter ] && [ -r /proc/sys/net/netfilter/nf_conntrack_count ]; then
        kv "nf_conntrack_count / max" "$(sysctl_get net.netfilter.nf_conntrack_count) / $(sysctl_get net.netfilter.nf_conntrack_max)"
        kv "nf_conntrack_udp_timeout(_stream)" "$(sysctl_get net.netfilter.nf_conntrack_udp_timeout) / $(sysctl_get net.netfilter.nf_conntrack_udp_timeout_stream)"
    else
        kv "nf_conntrack" "not loaded (no connection tracking cost)"
    fi
    kv "net.ipv4.ip_local_port_range" "$(sysctl_get net.ipv4.ip_local_port_range)"
    kv "net.ipv4.ip_local_reserved_ports" "$(sysctl_get net.ipv4.ip_local_reserved_ports)"
    if have nft && [ "$(id -u)" = 0 ]; then
        kv "nft notrack rules" "$(nft list ruleset 2>/dev/null | grep -c notrack || true)"
    elif have iptables && [ "$(id -u)" = 0 ]; then
        kv "iptables raw NOTRACK/CT rules" "$(iptables -t raw -S 2>/dev/null | grep -cE 'NOTRACK|--notrack' || true)"
    else
        note "firewall rules not listed (needs root and nft or iptables)"
    fi
}

show_fds() {
    section "file descriptors"
    kv "ulimit -n soft/hard" "$(ulimit -S -n) / $(ulimit -H -n)"
    kv "fs.file-max" "$(sysctl_get fs.file-max)"
    kv "fs.nr_open" "$(sysctl_get fs.nr_open)"
    kv "fs.file-nr (allocated free max)" "$(sysctl_get fs.file-nr)"
}

show_numa() {
    section "NUMA"
    local n nodes=0
    for n in /sys/devices/system/node/node[0-9]*; do
        [ -d "$n" ] || continue
        kv "${n##*/} cpus" "$(rd "$n/cpulist")"
        nodes=$((nodes + 1))
    done
    [ "$nodes" -gt 0 ] || kv "nodes" "n/a (no NUMA information)"
    local i
    for i in $(interfaces); do
        kv "$i on node" "$(rd "/sys/class/net/$i/device/numa_node") (-1: unknown or single node)"
    done
}

show_forwarder() {
    section "running prism processes"
    local pid found=0 tid
    for pid in $(pgrep -x prism-forwarder 2>/dev/null || true) $(pgrep -x prism 2>/dev/null || true); do
        found=1
        kv "pid $pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || echo n/a)"
        kv "pid $pid max open files" "$(awk '/^Max open files/ {print $4 " / " $5}' "/proc/$pid/limits" 2>/dev/null || echo n/a)"
        kv "pid $pid max locked memory" "$(awk '/^Max locked memory/ {print $4 " / " $5}' "/proc/$pid/limits" 2>/dev/null || echo n/a)"
        for tid in "/proc/$pid/task"/*; do
            [ -r "$tid/status" ] || continue
            kv "  thread ${tid##*/} $(rd "$tid/comm")" \
                "cpus $(awk '/^Cpus_allowed_list/ {print $2}' "$tid/status" 2>/dev/null || echo n/a), last ran on $(awk '{print $39}' "$tid/stat" 2>/dev/null || echo n/a)"
        done
    done
    [ "$found" = 1 ] || note "no prism-forwarder or prism process running"
}

cmd_show() {
    show_kernel
    show_buffers
    show_busy_poll
    show_nic
    show_irqs
    show_cpu
    show_uring
    show_gso
    show_conntrack
    show_fds
    show_numa
    show_forwarder
}

# ---- apply -----------------------------------------------------------------------

dry_run=0
persist=0
busy_poll_us=50
busy_poll_enabled=1
changes=()

# Raise one sysctl to at least `want`.
raise() {
    local key=$1 want=$2 cur
    cur=$(sysctl_get "$key")
    if [ "$cur" = n/a ]; then
        printf '  %-32s not present on this kernel, skipped\n' "$key"
        return
    fi
    if [[ $cur =~ ^[0-9]+$ ]] && [ "$cur" -ge "$want" ]; then
        printf '  %-32s %s (already >= %s, unchanged)\n' "$key" "$cur" "$want"
        changes+=("$key = $cur")
        return
    fi
    changes+=("$key = $want")
    if [ "$dry_run" = 1 ]; then
        printf '  %-32s %s -> %s (dry run: would run sysctl -w %s=%s)\n' "$key" "$cur" "$want" "$key" "$want"
        return
    fi
    if printf '%s\n' "$want" >"$(sysctl_path "$key")" 2>/dev/null; then
        printf '  %-32s %s -> %s\n' "$key" "$cur" "$(sysctl_get "$key")"
    else
        printf '  %-32s %s -> FAILED to write %s\n' "$key" "$cur" "$want" >&2
        return 1
    fi
}

cmd_apply() {
    while [ $# -gt 0 ]; do
        case $1 in
            --dry-run) dry_run=1 ;;
            --persist) persist=1 ;;
            --no-busy-poll) busy_poll_enabled=0 ;;
            --busy-poll)
                if [ $# -lt 2 ] || ! [[ $2 =~ ^[0-9]+$ ]]; then
                    echo "--busy-poll needs microseconds" >&2
                    exit 2
                fi
                busy_poll_us=$2
                shift
                ;;
            -h | --help) usage; exit 0 ;;
            *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        esac
        shift
    done
    if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        echo "apply needs root (or use --dry-run)" >&2
        exit 1
    fi

    local failed=0
    echo "socket buffers and backlog:"
    raise net.core.rmem_max "$TARGET_RMEM_MAX" || failed=1
    raise net.core.wmem_max "$TARGET_WMEM_MAX" || failed=1
    raise net.core.rmem_default "$TARGET_RMEM_DEFAULT" || failed=1
    raise net.core.netdev_max_backlog "$TARGET_BACKLOG" || failed=1
    echo "busy polling:"
    if [ "$busy_poll_enabled" = 1 ] && [ "$busy_poll_us" -gt 0 ]; then
        raise net.core.busy_read "$busy_poll_us" || failed=1
        raise net.core.busy_poll "$busy_poll_us" || failed=1
    else
        printf '  %-32s %s (left as is)\n' net.core.busy_read "$(sysctl_get net.core.busy_read)"
        printf '  %-32s %s (left as is)\n' net.core.busy_poll "$(sysctl_get net.core.busy_poll)"
    fi

    if [ "$persist" = 1 ]; then
        if [ "$dry_run" = 1 ]; then
            echo "would write $PERSIST_FILE:"
            printf '    %s\n' "${changes[@]}"
        else
            {
                echo "# Written by scripts/host-tuning.sh apply --persist (see tuning.md)."
                printf '%s\n' "${changes[@]}"
            } >"$PERSIST_FILE"
            echo "wrote $PERSIST_FILE"
        fi
    else
        echo "runtime only: lost at reboot unless --persist is given (writes $PERSIST_FILE)"
    fi
    echo "restart prism-forwarder to pick up the new buffer limits (its startup log shows granted_recv/granted_send)"
    return "$failed"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        show) cmd_show ;;
        apply) cmd_apply "$@" ;;
        -h | --help | help) usage ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
