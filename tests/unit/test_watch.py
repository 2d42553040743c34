"""The live watch's parsers and model: NFLOG messages recorded from this
kernel (tests/unit/data/nflog/*.hex, made by logging real packets through
the watch table in a scratch network namespace), packets and DNS questions
built by hypothesis, the nftables text, the flow record contract, and
`leakcheck watch` without CAP_NET_ADMIN."""

from __future__ import annotations

import ipaddress
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakcheck import platform
from leakcheck.linux import nflog, nftwatch
from leakcheck.report import FINDING_ID
from leakcheck.watch import render
from leakcheck.watch.engine import to_record
from leakcheck.watch.model import (EVIDENCE_KEYS, FINDING_IDS, FlowTable, Owner, SuspectFlow, WatchSets,
                                   WatchUnavailable, collapse)

DATA = Path(__file__).parent / "data" / "nflog"
REPO = Path(__file__).resolve().parents[2]


def recorded(name: str) -> bytes:
    return bytes.fromhex((DATA / f"{name}.hex").read_text().strip())


# ---------------------------------------------------------------- recorded NFLOG messages

def test_recorded_dns_query_gives_tuple_uid_interface_and_name():
    [packet] = nflog.parse_messages(recorded("udp4-dns-root"))
    assert packet.prefix == nftwatch.PREFIX_OUT
    assert (packet.proto, packet.src, packet.dst, packet.dport) == ("udp", "100.64.9.2", "198.51.100.53", 53)
    assert packet.sport == 44714 and packet.outdev == 3 and packet.indev is None
    assert (packet.uid, packet.gid) == (0, 0)
    assert packet.dns_name == "leaky.example.com"


def test_recorded_ipv6_tcp_syn():
    [packet] = nflog.parse_messages(recorded("tcp6-syn-root"))
    assert (packet.proto, packet.src, packet.sport, packet.dst, packet.dport) == (
        "tcp", "2001:db8:1::2", 33500, "2001:db8:ffff::1", 443)
    assert packet.dns_name is None


def test_recorded_packet_of_another_user_carries_its_uid_and_gid():
    [packet] = nflog.parse_messages(recorded("udp4-uid1234"))
    assert (packet.uid, packet.gid) == (1234, 1234) and packet.dport == 9


def test_netlink_error_answer_raises():
    error = nflog.NLMSGHDR.pack(36, nflog.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(OSError):
        nflog.parse_messages(error)


def test_bind_messages_ask_for_packets_and_immediate_delivery():
    cmd, mode, qthresh, timeout = nflog.bind_messages(0x4C43)
    assert struct.unpack_from("=H", cmd, 4)[0] == (nflog.NFNL_SUBSYS_ULOG << 8) | nflog.NFULNL_MSG_CONFIG
    assert struct.unpack_from("!H", cmd, 18)[0] == 0x4C43  # res_id: the group, big-endian
    assert struct.unpack_from("!I", qthresh, len(qthresh) - 4)[0] == 1


# ---------------------------------------------------------------- built packets (hypothesis)

ports = st.integers(0, 65535)
v4 = st.integers(1, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
v6 = st.integers(1, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(label, min_size=1, max_size=5).map(".".join)


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + udp


def ipv6_tcp(src: str, dst: str, sport: int, dport: int, hop_by_hop: bool) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    ext = b""
    next_header = 6
    if hop_by_hop:
        ext, next_header = bytes([6, 0]) + bytes(6), 0
    return (struct.pack("!IHBB", 6 << 28, len(ext) + len(tcp), next_header, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + ext + tcp)


def dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x01\x00\x01"


def nflog_message(payload: bytes, uid: int | None, prefix: bytes = b"leakcheck-out") -> bytes:
    attrs = nflog._attr(nflog.NFULA_PREFIX, prefix + b"\0") + nflog._attr(nflog.NFULA_PAYLOAD, payload)
    attrs += nflog._attr(nflog.NFULA_IFINDEX_OUTDEV, struct.pack("!I", 2))
    if uid is not None:
        attrs += nflog._attr(nflog.NFULA_UID, struct.pack("!I", uid))
    body = nflog.NFGENMSG.pack(socket.AF_INET, 0, socket.htons(7)) + attrs
    return nflog.NLMSGHDR.pack(16 + len(body), nflog.NFNL_SUBSYS_ULOG << 8, 0, 0, 0) + body


@given(v4, v4, ports, names, st.none() | st.integers(0, 2**32 - 1))
def test_ipv4_udp_round_trips_with_dns_name(src, dst, sport, name, uid):
    [packet] = nflog.parse_messages(nflog_message(ipv4_udp(src, dst, sport, 53, dns_query(name)), uid))
    assert (packet.proto, packet.src, packet.sport, packet.dst, packet.dport) == ("udp", src, sport, dst, 53)
    assert packet.dns_name == name.lower() and packet.uid == uid and packet.outdev == 2


@given(v6, v6, ports, ports, st.booleans())
def test_ipv6_tcp_round_trips_through_extension_headers(src, dst, sport, dport, hop_by_hop):
    packets = nflog.parse_messages(nflog_message(ipv6_tcp(src, dst, sport, dport, hop_by_hop), None) * 2)
    assert len(packets) == 2
    assert (packets[0].proto, packets[0].src, packets[0].sport, packets[0].dst, packets[0].dport) == (
        "tcp", src, sport, dst, dport)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(data):
    try:
        nflog.parse_messages(data)
    except OSError:
        pass  # an error answer is the only thing it raises


@given(st.binary(max_size=200))
def test_arbitrary_payloads_and_questions_never_crash(payload):
    nflog.decode_ip(payload)
    nflog.dns_question(payload)
    nflog.parse_messages(nflog_message(payload, 0))


def test_dns_response_and_truncated_question_give_no_name():
    query = dns_query("a.example")
    response = query[:2] + bytes([query[2] | 0x80]) + query[3:]
    assert nflog.dns_question(response) is None
    assert nflog.dns_question(query[:15]) is None


# ---------------------------------------------------------------- the nftables table

def test_ruleset_logs_only_new_suspects_with_the_owner_flag_and_a_limit():
    sets = WatchSets(tunnels=("wg0",), direct4=("10.0.0.0/8", "203.0.113.1/32"), direct6=("fe80::/10",))
    text = nftwatch.ruleset(sets, owner=True, group=7, rate=50, table="leakcheck_watch_1")
    assert "flags owner" in text and "rate 50/second" in text
    for chain in ("hook output", "hook forward"):
        assert chain in text
    assert text.count("ct state != new return") == 2 and text.count("oifname @tunnels return") == 2
    assert 'log prefix "leakcheck-out" group 7 snaplen 512' in text
    assert 'add element inet leakcheck_watch_1 tunnels { "wg0" }' in text
    # nothing but return and log: the table never drops or changes a packet
    rules = [l.strip() for l in text.splitlines() if l.startswith("        ") and "type filter" not in l]
    assert rules and all(r.endswith("return") or "log prefix" in r for r in rules), rules
    assert "flags owner" not in nftwatch.ruleset(sets, owner=False)


@given(st.lists(st.tuples(v4, st.integers(8, 32)), max_size=30))
def test_collapse_gives_no_overlaps(items):
    prefixes = [str(ipaddress.ip_network(f"{a}/{n}", strict=False)) for a, n in items]
    nets = [ipaddress.ip_network(p) for p in collapse(prefixes, 4)]
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    for p in prefixes:
        assert any(ipaddress.ip_network(p).subnet_of(n) for n in nets)


# ---------------------------------------------------------------- the flow record

def flow(**kw) -> SuspectFlow:
    base = dict(proto="udp", src="100.64.0.2", sport=5000, dst="198.51.100.1", dport=9, interface="eth0", uid=1234,
                gid=1234, owner=Owner(pid=42, command="curl", exe="/usr/bin/curl", cgroup="/user.slice/app.scope"))
    base.update(kw)
    return SuspectFlow(**base)


def test_record_is_a_finding_with_every_evidence_key():
    record = to_record(flow(), 1_700_000_000.25)
    out = record.to_dict()
    assert out["id"] == "watch.flow-outside-tunnel" and out["severity"] == "high"
    assert tuple(out["evidence"]) == EVIDENCE_KEYS
    assert out["evidence"]["first_seen"] == "2023-11-14T22:13:20.250000Z"
    assert "curl (pid 42, uid 1234)" in out["summary"] and "eth0" in out["summary"]
    assert all(FINDING_ID.match(i) for i in FINDING_IDS)
    assert render.line(record).endswith("[watch.flow-outside-tunnel]")


def test_dns_and_predating_flows_have_their_own_ids():
    assert to_record(flow(dns_name="x.example", dport=53), 0).id == "watch.dns-outside-tunnel"
    assert to_record(flow(predates_tunnel=True), 0).id == "watch.flow-predates-tunnel"


def test_dedup_by_process_destination_port_protocol():
    table = FlowTable()
    first, new = table.observe(to_record(flow(), 10))
    again, new_again = table.observe(to_record(flow(sport=5001), 12))
    other, new_other = table.observe(to_record(flow(dport=10), 13))
    assert new and not new_again and new_other and again is first
    assert first.count == 2 and first.last_seen == 12 and first.first_seen == 10


def test_unsupported_platforms_say_so():
    for name in ("darwin", "win32"):
        with pytest.raises(WatchUnavailable, match="not supported yet"):
            platform.select(name).watch_kernel(WatchSets())


def test_watch_without_cap_net_admin_is_one_clear_line_and_exit_3():
    # root without CAP_NET_ADMIN: the capability dropped from the bounding set before exec
    done = subprocess.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", sys.executable, "-m",
                           "leakcheck", "watch", "--duration", "1"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3, done
    assert "CAP_NET_ADMIN" in done.stderr and "Traceback" not in done.stderr, done.stderr
