#!/usr/bin/env bash
# nsroot.sh ROOT [--laptop|--tunnel] [--readonly [--rw PATH]...] -- COMMAND...
# nsroot.sh ROOT [--laptop|--tunnel] --boot
#
# Run COMMAND chrooted into the Debian tree ROOT, in namespaces of its own:
# a private network namespace (only lo, or with --laptop a veth "eth0" with
# a default route, like a laptop with no VPN), a private mount namespace
# (fresh /proc, /sys, /run and /tmp that vanish with it), a private PID
# namespace. Nothing reaches or changes the host's network or mounts.
#
# --laptop: eth0 (192.0.2.10/24, default via 192.0.2.1, a permanent
#   neighbour so packets really leave) whose peer sits in the same private
#   namespace with no address: test packets go out in clear and are dropped.
# --tunnel: --laptop plus a VPN: tun0 (held open by a process, so it is up)
#   carrying both default routes; the LAN stays outside it.
# --readonly: the whole tree read-only except /tmp, /run and each PATH given
#   with --rw PATH (as ProtectSystem=strict + StateDirectory= do).
# --boot: instead of a command, boot ROOT's systemd as PID 1 in a container
#   (systemd-nspawn) that shares the private network namespace; it runs
#   until something in it powers it off.
set -euo pipefail

root=$1; shift
laptop=0
tunnel=0
boot=0
readonly_root=0
rw_paths=()
while [ $# -gt 0 ]; do
    case "$1" in
        --laptop) laptop=1 ;;
        --tunnel) laptop=1; tunnel=1 ;;
        --boot) boot=1 ;;
        --readonly) readonly_root=1 ;;
        --rw) rw_paths+=("$2"); shift ;;
        --) shift; break ;;
        *) echo "nsroot.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ $# -gt 0 ] || [ "$boot" = 1 ] || { echo "nsroot.sh: no command" >&2; exit 2; }

laptop_network() {
    ip link set lo up
    [ "$laptop" = 1 ] || return 0
    ip link add eth0 type veth peer name upstream0
    ip link set upstream0 up
    ip addr add 192.0.2.10/24 dev eth0
    ip link set eth0 up
    ip neigh replace 192.0.2.1 lladdr 02:00:00:00:00:01 dev eth0 nud permanent
    ip route add default via 192.0.2.1 dev eth0
    ip -6 addr add 2001:db8::10/64 dev eth0 nodad
    ip -6 neigh replace 2001:db8::1 lladdr 02:00:00:00:00:01 dev eth0 nud permanent
    ip -6 route add default via 2001:db8::1 dev eth0
    [ "$tunnel" = 1 ] || return 0
    # A VPN client's side of tun0: without a process holding it the
    # interface has no carrier.
    python3 -c '
import fcntl, os, struct, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))  # TUNSETIFF: IFF_TUN|IFF_NO_PI
time.sleep(86400)' &
    for _ in $(seq 50); do ip link show tun0 >/dev/null 2>&1 && break; sleep 0.1; done
    ip link set tun0 up
    ip addr add 10.8.0.2/24 dev tun0
    ip -6 addr add fd00:8::2/64 dev tun0 nodad
    ip route replace default dev tun0
    ip -6 route replace default dev tun0
}

boot_container() {
    laptop_network
    mount -t proc proc /proc  # this PID namespace's view, for nspawn
    # nspawn keeps propagation directories under /run/systemd/nspawn: give
    # it a private /run that vanishes with this mount namespace.
    mount -t tmpfs -o mode=0755 tmpfs /run
    # No --private-network: the container gets this (private) namespace.
    # CAP_NET_ADMIN is withheld from containers sharing a network namespace
    # by default; this one is private, and the agent unit asks for it.
    exec systemd-nspawn --quiet --directory="$root" --register=no --keep-unit \
        --capability=CAP_NET_ADMIN --boot
}

inner() {
    # Runs inside the new namespaces (still on the host's file system).
    mount --make-rprivate /
    if [ "$boot" = 1 ]; then
        boot_container
    fi
    if [ "$readonly_root" = 1 ]; then
        mount --bind "$root" "$root"
    fi
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
    if [ "$readonly_root" = 1 ]; then
        for path in "${rw_paths[@]}"; do
            mount --bind "$root$path" "$root$path"
        done
        mount -o remount,bind,ro "$root"
    fi
    laptop_network
    exec chroot "$root" "$@"
}

export root laptop tunnel boot readonly_root
export -f inner laptop_network boot_container
# rw_paths is an array: pass it through a string.
export RW_PATHS="${rw_paths[*]:-}"
exec unshare --mount --net --pid --fork --kill-child -- \
    bash -c 'read -r -a rw_paths <<<"$RW_PATHS"; inner "$@"' nsroot "$@"
