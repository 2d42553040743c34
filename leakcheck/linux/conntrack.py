"""The kernel's tracked flows over ctnetlink, where /proc/net/nf_conntrack is
not compiled in (CONFIG_NF_CONNTRACK_PROCFS is off on many kernels).

One dump request (IPCTNL_MSG_CT_GET with NLM_F_DUMP, family AF_UNSPEC: both
IP families) and, from each answer, the original direction's addresses,
protocol and ports, and the status bits (answered or not). The tunnel-owner
reader and the live watch (flows predating the tunnel) use it (the peers of a VPN
client's unconnected UDP socket); reading needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass, field, replace
from typing import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET = 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
CTA_TUPLE_ORIG, CTA_STATUS = 1, 3
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
PROTOCOLS = {6: "tcp", 17: "udp"}

NLMSGHDR = struct.Struct("=IHHII")
NFGENMSG = struct.Struct("=BBH")
NLATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class TrackedFlow:
    protocol: str
    src: str
    dst: str
    sport: int
    dport: int
    status: int | None = field(default=None, compare=False)  # IPS_* bits (IPS_SEEN_REPLY = 0x2: the flow was answered)


def dump_request(seq: int = 1) -> bytes:
    body = NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    pos = start
    while pos + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size:
            return
        yield kind & NLA_TYPE_MASK, data[pos + NLATTR.size:pos + length]
        pos += (length + 3) & ~3


def _tuple(payload: bytes) -> TrackedFlow | None:
    addresses: dict[int, str] = {}
    proto: dict[int, int] = {}
    for kind, value in _attributes(payload, 0, len(payload)):
        if kind == CTA_TUPLE_IP:
            for ip_kind, raw in _attributes(value, 0, len(value)):
                family = socket.AF_INET if ip_kind in (CTA_IP_V4_SRC, CTA_IP_V4_DST) else socket.AF_INET6
                addresses[ip_kind] = socket.inet_ntop(family, raw)
        elif kind == CTA_TUPLE_PROTO:
            for p_kind, raw in _attributes(value, 0, len(value)):
                if p_kind == CTA_PROTO_NUM:
                    proto[p_kind] = raw[0]
                elif p_kind in (CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT):
                    proto[p_kind] = struct.unpack("!H", raw[:2])[0]
    name = PROTOCOLS.get(proto.get(CTA_PROTO_NUM, -1))
    src = addresses.get(CTA_IP_V4_SRC) or addresses.get(CTA_IP_V6_SRC)
    dst = addresses.get(CTA_IP_V4_DST) or addresses.get(CTA_IP_V6_DST)
    if name is None or src is None or dst is None:
        return None
    return TrackedFlow(name, src, dst, proto.get(CTA_PROTO_SRC_PORT, 0), proto.get(CTA_PROTO_DST_PORT, 0))


def parse_dump(data: bytes, out: list[TrackedFlow]) -> bool:
    """Append the flows of one netlink read; True once the dump is done."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or msg_type == NLMSG_DONE:
            return True
        if msg_type == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, offset + NLMSGHDR.size)[0]
            if code:
                raise OSError(code, f"ctnetlink: {os.strerror(code)}")
            return True
        start = offset + NLMSGHDR.size + NFGENMSG.size
        flow, status = None, None
        for kind, value in _attributes(data, start, offset + length):
            if kind == CTA_TUPLE_ORIG:
                flow = _tuple(value)
            elif kind == CTA_STATUS and len(value) >= 4:
                status = struct.unpack("!I", value[:4])[0]
        if flow is not None:
            out.append(flow if status is None else replace(flow, status=status))
        offset += (length + 3) & ~3
    return False


def dump(timeout: float = 1.0) -> list[TrackedFlow]:
    """Every tracked TCP/UDP flow of this network namespace (OSError if refused)."""
    out: list[TrackedFlow] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(timeout)
        sock.send(dump_request())
        while not parse_dump(sock.recv(1 << 16), out):
            pass
    return out
