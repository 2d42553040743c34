"""Packets logged by nftables (`log group N`), read over raw nfnetlink_log.

The watch table (leakcheck/linux/nftwatch.py) logs the first packet of each
suspect connection to an NFLOG group of leakcheck's own; this module binds
that group on a NETLINK_NETFILTER socket and turns each logged packet into a
`LoggedPacket`: prefix, uid/gid of the sending socket's file, output
interface and the 5-tuple decoded from the IP header. For DNS (port 53) the
queried name is read from the question of the logged payload.

No pyroute2 (as in leakcheck/rtnl.py and leakcheck/linux/conntrack.py): the
messages are packed and walked with `struct`. Binding needs CAP_NET_ADMIN.
Constants are those of linux/netfilter/nfnetlink_log.h.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_TYPE_MASK = 0x3FFF

# NFULA_* attributes of a logged packet
NFULA_PACKET_HDR, NFULA_MARK, NFULA_IFINDEX_INDEV, NFULA_IFINDEX_OUTDEV = 1, 2, 4, 5
NFULA_PAYLOAD, NFULA_PREFIX, NFULA_UID, NFULA_GID = 9, 10, 11, 14
# NFULA_CFG_* attributes of a configuration message, and the commands
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 3, 4, 5
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian group)
NLATTR = struct.Struct("=HH")
PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}
# IPv6 extension headers walked over to reach the transport header
IPV6_EXTENSIONS = {0, 43, 60}
IPV6_FRAGMENT = 44
SNAPLEN = 512  # enough for IP + UDP headers and a DNS question


@dataclass(frozen=True)
class LoggedPacket:
    prefix: str
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    outdev: int | None  # interface index the packet leaves by (None in hooks without one)
    indev: int | None  # interface it came in by (forwarded packets)
    uid: int | None  # of the socket's file: absent for forwarded and kernel packets
    gid: int | None
    mark: int
    dns_name: str | None  # the question of a DNS query, None for anything else


def _attr(kind: int, payload: bytes) -> bytes:
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def config_message(group: int, attrs: bytes, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    body = NFGENMSG.pack(family, 0, socket.htons(group)) + attrs
    msg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_messages(group: int, copy_range: int = SNAPLEN) -> list[bytes]:
    """Bind `group`, copy packets (up to copy_range bytes), deliver each at
    once: the kernel's default queue threshold (100 packets or 1 s) would
    hold a single leak back for a second."""
    return [
        config_message(group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), 1),
        config_message(group, _attr(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET)), 2),
        config_message(group, _attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)), 3),
        config_message(group, _attr(NFULA_CFG_TIMEOUT, struct.pack("!I", 1)), 4),  # 1/100 s
    ]


def _attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    pos = start
    while pos + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size or pos + length > end:
            return
        yield kind & NLA_TYPE_MASK, data[pos + NLATTR.size:pos + length]
        pos += (length + 3) & ~3


def parse_messages(data: bytes) -> list[LoggedPacket]:
    """The logged packets in one netlink read (a batch may hold several);
    messages that are not packets, or whose payload is not IP, are skipped.
    OSError for a netlink error answer."""
    out: list[LoggedPacket] = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            break
        end = min(offset + length, len(data))
        if msg_type == NLMSG_ERROR and end - offset >= NLMSGHDR.size + 4:
            code = -struct.unpack_from("=i", data, offset + NLMSGHDR.size)[0]
            if code:
                raise OSError(code, f"nfnetlink_log: {os.strerror(code)}")
        elif msg_type == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            packet = parse_packet(data, offset + NLMSGHDR.size + NFGENMSG.size, end)
            if packet is not None:
                out.append(packet)
        offset += (length + 3) & ~3
    return out


def parse_packet(data: bytes, start: int, end: int) -> LoggedPacket | None:
    attrs = dict(_attributes(data, start, end))
    payload = attrs.get(NFULA_PAYLOAD)
    if not payload:
        return None
    header = decode_ip(payload)
    if header is None:
        return None
    proto, src, sport, dst, dport, transport = header
    dns_name = None
    if proto == "udp" and dport == 53:
        dns_name = dns_question(transport[8:])
    elif proto == "tcp" and dport == 53 and len(transport) >= 20:
        offset = (transport[12] >> 4) * 4
        dns_name = dns_question(transport[offset + 2:])  # TCP DNS: 2-byte length first
    return LoggedPacket(
        prefix=attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("utf-8", "replace"),
        proto=proto, src=src, sport=sport, dst=dst, dport=dport,
        outdev=_be32(attrs.get(NFULA_IFINDEX_OUTDEV)), indev=_be32(attrs.get(NFULA_IFINDEX_INDEV)),
        uid=_be32(attrs.get(NFULA_UID)), gid=_be32(attrs.get(NFULA_GID)),
        mark=_be32(attrs.get(NFULA_MARK)) or 0, dns_name=dns_name)


def _be32(raw: bytes | None) -> int | None:
    return struct.unpack("!I", raw[:4])[0] if raw is not None and len(raw) >= 4 else None


def decode_ip(payload: bytes) -> tuple[str, str, int, str, int, bytes] | None:
    """(proto, src, sport, dst, dport, transport bytes) of an IPv4/IPv6 packet;
    ports are 0 for protocols without them. None if it is not IP."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        if ihl < 20 or len(payload) < ihl:
            return None
        number = payload[9]
        src, dst = socket.inet_ntop(socket.AF_INET, payload[12:16]), socket.inet_ntop(socket.AF_INET, payload[16:20])
        fragment_offset = struct.unpack_from("!H", payload, 6)[0] & 0x1FFF
        transport = payload[ihl:] if fragment_offset == 0 else b""
    elif version == 6 and len(payload) >= 40:
        number = payload[6]
        # ipaddress's text, as sock_diag answers are compared in (inet_ntop writes ::a.b.c.d forms)
        src, dst = str(ipaddress.IPv6Address(payload[8:24])), str(ipaddress.IPv6Address(payload[24:40]))
        transport, number = _skip_extensions(payload[40:], number)
    else:
        return None
    sport = dport = 0
    if number in (6, 17, 132) and len(transport) >= 4:
        sport, dport = struct.unpack_from("!HH", transport)
    return PROTOCOLS.get(number, str(number)), src, sport, dst, dport, transport


def _skip_extensions(rest: bytes, number: int) -> tuple[bytes, int]:
    for _ in range(8):  # a bound: a crafted chain cannot loop us
        if number in IPV6_EXTENSIONS and len(rest) >= 8:
            number, rest = rest[0], rest[(rest[1] + 1) * 8:]
        elif number == IPV6_FRAGMENT and len(rest) >= 8:
            first = struct.unpack_from("!H", rest, 2)[0] & 0xFFF8 == 0
            number, rest = rest[0], rest[8:] if first else b""
        else:
            break
    return rest, number


def dns_question(message: bytes) -> str | None:
    """The first question's name of a DNS query (RFC 1035 4.1.2), lower case,
    without the trailing dot; None for a response, no question, or a name
    cut off by the snap length. A query's question is never compressed."""
    if len(message) < 12 or message[2] & 0x80:  # QR bit set: a response
        return None
    if struct.unpack_from("!H", message, 4)[0] == 0:
        return None
    labels: list[str] = []
    pos = 12
    while pos < len(message):
        size = message[pos]
        if size == 0:
            return ".".join(labels).lower() if labels else "."
        if size & 0xC0 or pos + 1 + size > len(message):
            return None
        labels.append(message[pos + 1:pos + 1 + size].decode("ascii", "replace"))
        pos += 1 + size
    return None


class NflogSocket:
    """A bound nfnetlink_log group. `read()` returns the packets waiting
    (non-blocking); `fileno()` for select. OSError if binding is refused."""

    def __init__(self, group: int, copy_range: int = SNAPLEN, rcvbuf: int = 1 << 20):
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            # a burst of logged packets must not overflow the queue (ENOBUFS drops them)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            self.sock.settimeout(2.0)
            for message in bind_messages(group, copy_range):
                self.sock.send(message)
                self._expect_ack()
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def _expect_ack(self) -> None:
        data = self.sock.recv(1 << 16)
        length, msg_type = NLMSGHDR.unpack_from(data)[:2]
        if msg_type == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, NLMSGHDR.size)[0]
            if code:
                raise OSError(code, f"nfnetlink_log group {self.group}: {os.strerror(code)}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> tuple[list[LoggedPacket], int]:
        """Packets waiting now, and how many reads overflowed (ENOBUFS: packets lost)."""
        out: list[LoggedPacket] = []
        lost = 0
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out, lost
            except OSError:  # ENOBUFS: the kernel dropped messages; the next read goes on
                lost += 1
                continue
            try:
                out.extend(parse_messages(data))
            except OSError:  # an error answer in the stream: counted, the watch goes on
                lost += 1

    def close(self) -> None:
        try:
            self.sock.send(config_message(self.group, _attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])), 9))
        except OSError:
            pass  # closing the socket unbinds too
        self.sock.close()
