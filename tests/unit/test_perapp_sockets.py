"""Socket diagnostics (recorded NETLINK_SOCK_DIAG answers), owners from /proc,
and the per-link facts the tethering probe reads."""

from __future__ import annotations

import binascii
import json
import socket
import struct
from pathlib import Path

from leakcheck.linux import downstream, sockets
from leakcheck.netstate import Link

DATA = Path(__file__).parent / "data"
# Recorded in a namespace whose eth0 has index 3: a UDP socket bound to eth0 with
# SO_MARK 0x1234 connected to 198.51.100.1:9, a dual-stack TCP SYN_SENT to
# ::ffff:198.51.100.1:443, and an unconnected UDP socket on [::]:5353.
DUMP = {k: binascii.unhexlify(v) for k, v in json.loads((DATA / "sock-diag-dump.json").read_text()).items()}


def decoded(name: str) -> list[sockets.RawSocket]:
    out: list[sockets.RawSocket] = []
    assert sockets.parse_dump(DUMP[name], name[:3], out) is True  # ends with NLMSG_DONE
    return out


def test_request_is_an_inet_diag_dump_of_the_wanted_states():
    request = sockets.encode_request(socket.AF_INET6, socket.IPPROTO_TCP, 0x6, 7)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, mtype, flags, seq) == (len(request), 20, 0x301, 7) and length == 16 + 56
    assert struct.unpack_from("=BBBxI", request, 16) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 0x6)


def test_bound_and_marked_udp_socket_is_decoded():
    (raw,) = decoded("udp4")
    assert (raw.local, raw.local_port, raw.remote, raw.remote_port) == ("100.64.0.2", 48937, "198.51.100.1", 9)
    assert raw.ifindex == 3 and raw.mark == 0x1234 and raw.uid == 0 and raw.inode == 557952


def test_sockets_get_states_devices_owners_and_ipv4_mapped_addresses_unwrapped():
    raw = decoded("udp4") + decoded("tcp6") + decoded("udp6")
    built = sockets.build_sockets(raw, {557952: [4242]}, {3: "eth0"})
    udp, tcp, listener = built
    assert udp.state == "connected" and udp.bound_device == "eth0" and udp.pids == (4242,)
    assert udp.describe() == "udp 100.64.0.2:48937 -> 198.51.100.1:9 bound to eth0"
    assert (tcp.family, tcp.state, tcp.local, tcp.remote) == (4, "syn-sent", "100.64.0.2", "198.51.100.1")
    assert tcp.pids == () and tcp.bound_device is None
    assert listener.state == "unconnected" and listener.remote is None and listener.family == 6


def test_dump_error_is_reported_not_raised_as_a_crash():
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -2) + bytes(16)
    try:
        sockets.parse_dump(error, "udp", [])
    except sockets.DiagUnavailable as exc:
        assert "No such file" in str(exc)
    else:
        raise AssertionError("an NLMSG_ERROR must raise DiagUnavailable")


def test_process_scan_finds_socket_inodes_and_tun_holders(tmp_path):
    proc = tmp_path / "proc"
    for pid, links in ((10, {"3": "socket:[555]", "4": "/dev/net/tun"}), (11, {"0": "/dev/null"}),
                       (12, {"5": "socket:[777]"})):
        fd = proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        (proc / str(pid) / "ns").mkdir()
        (proc / str(pid) / "ns" / "net").symlink_to("net:[1]" if pid != 12 else "net:[2]")
        for number, target in links.items():
            (fd / number).symlink_to(target)
    scan = sockets.scan_processes(proc, netns="net:[1]")
    assert sorted(scan.pids) == [10, 11]  # 12 lives in another network namespace
    assert scan.inodes == {555: [10]} and scan.tun == {10}


def test_link_details_for_downstream_interfaces(tmp_path):
    links = [Link(2, "eth0", "veth", True, "UP"), Link(3, "usb0", "veth", True, "UP"),
             Link(4, "docker0", "bridge", True, "UP"), Link(5, "vethA", "veth", True, "UP"),
             Link(6, "vethB", "veth", True, "UP")]
    iflinks = {"eth0": 40, "usb0": 41, "docker0": 4, "vethA": 6, "vethB": 5}
    for name, iflink in iflinks.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "iflink").write_text(f"{iflink}\n")
        (tmp_path / name / "uevent").write_text(f"INTERFACE={name}\n" + ("DEVTYPE=bridge\n" if name == "docker0" else ""))
    details = {d.name: d for d in downstream.read(links, root=tmp_path)}
    assert details["docker0"].devtype == "bridge"
    assert details["usb0"].peer_elsewhere and details["eth0"].peer_elsewhere
    assert not details["vethA"].peer_elsewhere and not details["vethB"].peer_elsewhere  # a pair in this namespace


def test_forwarding_sysctls(tmp_path):
    (tmp_path / "usb0").mkdir()
    (tmp_path / "usb0" / "forwarding").write_text("1\n")
    assert downstream.forwarding_sysctls(["usb0", "gone0"], root=tmp_path) == {"net.ipv4.conf.usb0.forwarding": "1"}
