"""Netlink dumps: links, addresses, routes of every table, rules.

Read over one raw NETLINK_ROUTE socket (leakcheck.rtnl.Dumper) and decoded
with `struct` straight into the engine's dataclasses: a 10,000-route table
is read in a fraction of the time pyroute2 needs to build its message
objects, and pyroute2 is not imported on the run path. Only the attributes
leakcheck uses are looked at; the values are the ones pyroute2 gives
(tests/unit/test_rtnl_dump.py on recorded dumps, tests/lab/test_rtnl_lab.py
against pyroute2 in the lab).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Callable

from leakcheck import rtnl
from leakcheck.errors import NetStateError
from leakcheck.netstate import (FIB_RULE_INVERT, ROUTE_PROTOCOLS, ROUTE_TYPES, RULE_ACTIONS,
                                Address, Link, Nexthop, Route, Rule)

IFF_UP = 0x1
UNSET_U32 = 0xFFFFFFFF

IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = rtnl.RTMSG  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
U32 = struct.Struct("=I")
U16_PAIR = struct.Struct("=HH")
U32_PAIR = struct.Struct("=II")

IFLA_IFNAME, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_EXT_MASK = 3, 10, 16, 18, 29
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # link counters are large and unused: the kernel leaves them out
IFA_ADDRESS, IFA_LOCAL = 1, 2
FRA_DST, FRA_SRC, FRA_IIFNAME, FRA_GOTO, FRA_PRIORITY = 1, 2, 3, 4, 6
FRA_FWMARK, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_FWMASK, FRA_OIFNAME = 10, 14, 15, 16, 17
FRA_UID_RANGE, FRA_IP_PROTO, FRA_DPORT_RANGE = 20, 22, 24

# IF_OPER_* numbers as names (RFC 2863 order), as `ip link` and pyroute2 print them
OPER_STATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
FAMILIES = (socket.AF_INET, socket.AF_INET6)
RTA_TABLE, RTA_DST, RTA_OIF, RTA_GATEWAY = rtnl.RTA_TABLE, rtnl.RTA_DST, rtnl.RTA_OIF, rtnl.RTA_GATEWAY
RTA_PRIORITY, RTA_PREFSRC, RTA_MULTIPATH = rtnl.RTA_PRIORITY, rtnl.RTA_PREFSRC, rtnl.RTA_MULTIPATH
IPv4Network, IPv6Network = ipaddress.IPv4Network, ipaddress.IPv6Network
V4_ANY, V6_ANY = bytes(4), bytes(16)

Names = dict[int, str]


def dump_all() -> tuple[tuple[Link, ...], tuple[Address, ...], tuple[Route, ...], tuple[Rule, ...]]:
    try:
        with rtnl.Dumper() as dumper:
            links = tuple(dumper.dump(rtnl.RTM_GETLINK, link_request(), parse_link))
            names = {link.index: link.name for link in links}
            addresses = tuple(dumper.dump(rtnl.RTM_GETADDR, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0),
                                          _with_names(parse_address, names)))
            routes = tuple(route for family in FAMILIES
                           for route in dumper.dump(rtnl.RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                                                    RouteParser(names)))
            rules = tuple(rule for family in FAMILIES
                          for rule in dumper.dump(rtnl.RTM_GETRULE, FIB_RULE_HDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0),
                                                  parse_rule))
    except OSError as exc:
        raise NetStateError(f"cannot read the routing state over netlink: {exc}") from exc
    return links, addresses, routes, rules


def link_request() -> bytes:
    ext_mask = rtnl._attr(IFLA_EXT_MASK, U32.pack(RTEXT_FILTER_SKIP_STATS))
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + ext_mask


def _with_names(parse: Callable[[bytes, int, int, Names], object], names: Names) -> Callable[[bytes, int, int], object]:
    return lambda data, offset, end: parse(data, offset, end, names)


def _text(raw: bytes) -> str:
    """A NUL-terminated netlink string."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(raw: bytes) -> int:
    return U32.unpack_from(raw)[0]


def parse_link(data: bytes, offset: int, end: int) -> Link:
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(data, offset)
    attrs = rtnl.attributes(data, offset + IFINFOMSG.size, end)
    kind = None
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        raw_kind = rtnl.attributes(info, 0, len(info)).get(IFLA_INFO_KIND)
        kind = _text(raw_kind) if raw_kind is not None else None
    oper = attrs.get(IFLA_OPERSTATE)
    oper_state = OPER_STATES[oper[0]] if oper and oper[0] < len(OPER_STATES) else "UNKNOWN"
    master = attrs.get(IFLA_MASTER)
    return Link(index=index, name=_text(attrs.get(IFLA_IFNAME, b"")), kind=kind,
                admin_up=bool(flags & IFF_UP), oper_state=oper_state,
                master=_u32(master) if master is not None else None)


def parse_address(data: bytes, offset: int, end: int, names: Names) -> Address | None:
    family, prefixlen, _flags, scope, index = IFADDRMSG.unpack_from(data, offset)
    attrs = rtnl.attributes(data, offset + IFADDRMSG.size, end)
    raw = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
    local = attrs.get(IFA_LOCAL)
    if local and family == socket.AF_INET:
        raw = local  # on point-to-point links IFA_ADDRESS is the peer
    if raw is None or len(raw) not in (4, 16):
        return None
    address = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
    return Address(ifindex=index, ifname=names.get(index, str(index)), address=address,
                   prefixlen=prefixlen, scope=scope)


class RouteParser:
    """Decodes RTM_NEWROUTE messages into Routes. Next hops and interface
    names repeat across thousands of routes: each distinct one is built once
    (they are frozen, so sharing them is safe)."""

    def __init__(self, names: Names):
        self.names = names
        self._hops: dict[tuple[int | None, bytes | None], tuple[Nexthop, ...]] = {}
        self._types = dict(ROUTE_TYPES)
        self._protocols = dict(ROUTE_PROTOCOLS)

    def __call__(self, data: bytes, offset: int, end: int) -> Route | None:
        family, dst_len, _src_len, _tos, table, proto, scope, rtype, _flags = RTMSG.unpack_from(data, offset)
        dst = oif = gateway = metric = prefsrc = multipath = None
        unpack, u32 = rtnl.RTATTR.unpack_from, U32.unpack_from
        pos = offset + RTMSG.size
        while pos + 4 <= end:  # inlined attribute walk: this loop runs once per attribute of 10,000s of routes
            length, kind = unpack(data, pos)
            if length < 4:
                break
            kind &= 0x3FFF
            # most frequent first: every route has a table, nearly every one a prefix and a device
            if kind == RTA_TABLE:
                table = u32(data, pos + 4)[0] or table
            elif kind == RTA_DST:
                dst = data[pos + 4: pos + length]
            elif kind == RTA_OIF:
                oif = u32(data, pos + 4)[0]
            elif kind == RTA_GATEWAY:
                gateway = data[pos + 4: pos + length]
            elif kind == RTA_PRIORITY:
                metric = u32(data, pos + 4)[0]
            elif kind == RTA_PREFSRC:
                prefsrc = data[pos + 4: pos + length]
            elif kind == RTA_MULTIPATH:
                multipath = data[pos + 4: pos + length]
            pos += (length + 3) & ~3
        try:
            if family == socket.AF_INET:
                network = IPv4Network((dst or V4_ANY, dst_len), strict=False)
            elif family == socket.AF_INET6:
                network = IPv6Network((dst or V6_ANY, dst_len), strict=False)
            else:
                return None
        except ValueError:
            return None
        hops = self._multipath(multipath) if multipath else self._nexthop(oif, gateway)
        return Route(dst=network, table=table, type=self._types.get(rtype) or self._name(self._types, rtype),
                     protocol=self._protocols.get(proto) or self._name(self._protocols, proto), scope=scope,
                     nexthops=hops, metric=metric or 0, prefsrc=rtnl._ip(prefsrc) if prefsrc else None)

    @staticmethod
    def _name(names: dict[int, str], number: int) -> str:
        name = names.get(number)
        if name is None:
            name = names[number] = str(number)
        return name

    def _nexthop(self, oif: int | None, gateway: bytes | None) -> tuple[Nexthop, ...]:
        key = (oif, gateway)
        hops = self._hops.get(key)
        if hops is None:
            if oif is None and gateway is None:
                hops = ()
            else:
                hops = (Nexthop(ifindex=oif, ifname=self.names.get(oif) if oif is not None else None,
                                gateway=rtnl._ip(gateway) if gateway else None),)
            self._hops[key] = hops
        return hops

    def _multipath(self, raw: bytes) -> tuple[Nexthop, ...]:
        return tuple(Nexthop(ifindex=oif, ifname=self.names.get(oif), gateway=gateway)
                     for oif, gateway in rtnl._multipath(raw))


def _network(family: int, dst: bytes | None, dst_len: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if family == socket.AF_INET:
        return ipaddress.IPv4Network((dst or bytes(4), dst_len), strict=False)
    if family == socket.AF_INET6:
        return ipaddress.IPv6Network((dst or bytes(16), dst_len), strict=False)
    raise ValueError(f"address family {family}")


def parse_rule(data: bytes, offset: int, end: int) -> Rule:
    family, dst_len, src_len, _tos, table, _res1, _res2, action, flags = FIB_RULE_HDR.unpack_from(data, offset)
    attrs = rtnl.attributes(data, offset + FIB_RULE_HDR.size, end)

    def number(kind: int) -> int | None:
        raw = attrs.get(kind)
        return _u32(raw) if raw is not None else None

    def prefix(kind: int, length: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        raw = attrs.get(kind)
        return _network(family, raw, length) if raw else None

    def text(kind: int) -> str | None:
        raw = attrs.get(kind)
        return _text(raw) if raw is not None else None

    def pair(kind: int, layout: struct.Struct) -> tuple[int, int] | None:
        raw = attrs.get(kind)
        return tuple(layout.unpack_from(raw)) if raw is not None else None  # type: ignore[return-value]

    suppress = number(FRA_SUPPRESS_PREFIXLEN)
    fwmark = number(FRA_FWMARK)
    fwmask = number(FRA_FWMASK)
    ipproto = attrs.get(FRA_IP_PROTO)
    return Rule(
        family=4 if family == socket.AF_INET else 6,
        priority=number(FRA_PRIORITY) or 0,
        action=RULE_ACTIONS.get(action, str(action)),
        table=number(FRA_TABLE) or table,
        invert=bool(flags & FIB_RULE_INVERT),
        src=prefix(FRA_SRC, src_len),
        dst=prefix(FRA_DST, dst_len),
        iif=text(FRA_IIFNAME),
        oif=text(FRA_OIFNAME),
        fwmark=fwmark if fwmark or fwmask else None,
        fwmask=fwmask,
        uid_range=pair(FRA_UID_RANGE, U32_PAIR),
        suppress_prefixlen=None if suppress in (None, UNSET_U32) else suppress,
        ipproto=ipproto[0] if ipproto else None,
        dport_range=pair(FRA_DPORT_RANGE, U16_PAIR),
        goto=number(FRA_GOTO),
    )
