"""strongSwan's vici protocol as leakcheck reads it (leakcheck/linux/vici.py):
the codec, the peers of `list-sa` events, and finding charon's listening
socket in /proc/net/unix; recorded charon output is in tests/unit/data/vici
(its README says where it came from). The lab (tests/lab/test_strongswan.py) asks a real
charon."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from pathlib import Path

import pytest

from leakcheck.linux import vici

DATA = Path(__file__).parent / "data" / "vici"
LIST_SA = {"full": {"uniqueid": "1", "version": "2", "state": "ESTABLISHED", "local-host": "100.64.0.2",
                    "local-port": "4500", "remote-host": "203.0.113.1", "remote-port": "4500",
                    "remote-vips": ["100.100.2.1"], "child-sas": {"full-1": {"state": "INSTALLED",
                                                                               "remote-ts": ["0.0.0.0/0"]}}}}


def test_message_round_trip_keeps_sections_lists_and_values():
    data = vici.encode_message(LIST_SA)
    assert vici.decode_message(data) == LIST_SA


def test_packet_names_only_where_the_operation_has_one():
    operation, name, message = vici.decode_packet(vici.encode_packet(vici.EVENT, "list-sa", LIST_SA)[4:])
    assert (operation, name, message) == (vici.EVENT, "list-sa", LIST_SA)
    assert vici.decode_packet(vici.encode_packet(vici.CMD_RESPONSE)[4:]) == (vici.CMD_RESPONSE, "", {})


@pytest.mark.parametrize("data", [b"\x01\x05ab", b"\x03\x01k\x00\x09v", b"\x05\x00\x01x", b"\x01\x01s", b"\x09",
                                  b"\x02"])
def test_malformed_messages_raise_vici_error(data):
    with pytest.raises(vici.ViciError):
        vici.decode_message(data)


def test_peers_are_ip_remote_hosts_with_their_state():
    events = [LIST_SA, {"odd": {"remote-host": "%any"}}, {"v6": {"state": "CONNECTING", "remote-host": "2001:db8::1"}}]
    assert vici.peers_of(events) == [("full", "ESTABLISHED", "203.0.113.1"), ("v6", "CONNECTING", "2001:db8::1")]


def test_listening_unix_socket_of_the_process_is_found_by_inode():
    # Shape of /proc/net/unix (Linux 6.x): Num RefCount Protocol Flags Type St Inode Path
    table = ("Num       RefCount Protocol Flags    Type St Inode Path\n"
             "0000000000000000: 00000002 00000000 00010000 0001 01 4242 /run/charon.vici\n"
             "0000000000000000: 00000003 00000000 00000000 0001 03 4243 /run/charon.vici\n"
             "0000000000000000: 00000002 00000000 00010000 0001 01 999 /run/other.sock\n")
    assert vici.unix_socket_paths({4242, 4243}, table) == ["/run/charon.vici"]
    assert vici.unix_socket_paths({999}, table) == ["/run/other.sock"]
    assert vici.unix_socket_paths({1}, table) == []


def test_list_sas_speaks_the_protocol_over_a_unix_socket(tmp_path):
    """A daemon end written from the protocol description: registration confirmed,
    two events, then the response; the request must ask for list-sas."""
    path = tmp_path / "charon.vici"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[tuple[int, str]] = []

    def read_packet(conn):
        (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
        operation, name, _ = vici.decode_packet(conn.recv(length, socket.MSG_WAITALL))
        seen.append((operation, name))

    def serve():
        conn, _ = server.accept()
        with conn:
            read_packet(conn)
            conn.sendall(vici.encode_packet(vici.EVENT_CONFIRM))
            read_packet(conn)
            conn.sendall(vici.encode_packet(vici.EVENT, "list-sa", LIST_SA))
            conn.sendall(vici.encode_packet(vici.EVENT, "list-sa", {"b": {"remote-host": "198.51.100.9"}}))
            conn.sendall(vici.encode_packet(vici.CMD_RESPONSE))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        events = vici.list_sas(path, timeout=2.0)
    finally:
        thread.join(timeout=2)
        server.close()
    assert seen == [(vici.EVENT_REGISTER, "list-sa"), (vici.CMD_REQUEST, "list-sas")]
    assert [peer for _, _, peer in vici.peers_of(events)] == ["203.0.113.1", "198.51.100.9"]


def test_no_daemon_is_a_vici_error(tmp_path):
    with pytest.raises(vici.ViciError):
        vici.list_sas(tmp_path / "absent.vici", timeout=0.2)


def test_charon_holding_ipsec0_is_asked_over_its_vici_socket(tmp_path):
    """tunowners with a kernel-libipsec charon: ipsec0's holder has only unconnected
    UDP sockets (500, 4500) and no tracked flows; its vici socket names the server."""
    from leakcheck.linux import tunowners
    from leakcheck.netstate import Address, Link, SocketInfo
    from tests.unit.test_tunowners import FakeProc

    proc = FakeProc(tmp_path)
    proc.process(600, "charon", fds={3: "socket:[41]", 4: "socket:[42]", 5: "socket:[43]", 7: "/dev/net/tun"},
                 iff={7: "ipsec0"})
    (tmp_path / "net" / "unix").write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000000000000000: 00000002 00000000 00010000 0001 01 43 /run/charon.vici\n")
    run = tmp_path / "600" / "root" / "run"
    run.mkdir(parents=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(run / "charon.vici"))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            for reply in (vici.encode_packet(vici.EVENT_CONFIRM),
                          vici.encode_packet(vici.EVENT, "list-sa", LIST_SA) + vici.encode_packet(vici.CMD_RESPONSE)):
                (length,) = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
                conn.recv(length, socket.MSG_WAITALL)
                conn.sendall(reply)

    thread = threading.Thread(target=serve)
    thread.start()
    links = (Link(1, "lo", None, True, "UNKNOWN"), Link(2, "eth0", "veth", True, "UP"),
             Link(5, "ipsec0", "tun", True, "UNKNOWN"))
    addresses = (Address(2, "eth0", ipaddress.ip_address("100.64.0.2"), 24, 0),)
    socks = [SocketInfo("udp", 4, "unconnected", "0.0.0.0", port, None, None, 0, inode)
             for inode, port in ((41, 500), (42, 4500))]
    try:
        (owner,) = tunowners.read(links, addresses, (), socks, [], root=tmp_path)
    finally:
        thread.join(timeout=2)
        server.close()
    assert (owner.ifname, owner.pid, owner.endpoints) == ("ipsec0", 600, ("203.0.113.1",))
    assert owner.evidence[0].startswith("203.0.113.1: vici: IKE SA full (ESTABLISHED)")


def test_recorded_charon_stream_decodes_to_its_ike_sa():
    data = (DATA / "list-sas-stream.bin").read_bytes()
    packets = []
    while data:
        (length,) = struct.unpack("!I", data[:4])
        packets.append(vici.decode_packet(data[4:4 + length]))
        data = data[4 + length:]
    assert [(operation, name) for operation, name, _ in packets] == [
        (vici.EVENT_CONFIRM, ""), (vici.EVENT, "list-sa"), (vici.CMD_RESPONSE, "")]
    event = packets[1][2]
    assert vici.peers_of([event]) == [("full", "ESTABLISHED", "203.0.113.1")]
    assert event["full"]["child-sas"]["full-1"]["remote-ts"] == ["0.0.0.0/0", "::/0"]
    assert event["full"]["local-vips"] == ["100.100.2.1", "fd00:102::1"]


def test_recorded_proc_net_unix_line_is_charons_listening_socket():
    header = "Num       RefCount Protocol Flags    Type St Inode Path\n"
    table = header + (DATA / "proc-net-unix-line.txt").read_text()
    (path,) = vici.unix_socket_paths({220791}, table)
    assert path.endswith("/run/charon.vici")
