"""Netlink dumps (pyroute2): links, addresses, routes of every table, rules."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from leakcheck.errors import NetStateError
from leakcheck.netstate import (FIB_RULE_INVERT, ROUTE_PROTOCOLS, ROUTE_TYPES, RULE_ACTIONS,
                                Address, Link, Nexthop, Route, Rule)

IFF_UP = 0x1
UNSET_U32 = 0xFFFFFFFF


def dump_all() -> tuple[tuple[Link, ...], tuple[Address, ...], tuple[Route, ...], tuple[Rule, ...]]:
    # Imported here: pyroute2 is the heaviest import on the run path.
    from pyroute2 import IPRoute

    try:
        with IPRoute() as ipr:
            raw_links = ipr.get_links()
            names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw_links}
            links = tuple(parse_link(msg) for msg in raw_links)
            addresses = tuple(parse_address(msg, names) for msg in ipr.get_addr())
            routes = tuple(r for family in (socket.AF_INET, socket.AF_INET6)
                           for r in (parse_route(m, names) for m in ipr.get_routes(family=family, table=None))
                           if r is not None)
            rules = tuple(parse_rule(msg) for family in (socket.AF_INET, socket.AF_INET6)
                          for msg in ipr.get_rules(family=family))
    except OSError as exc:
        raise NetStateError(f"cannot read the routing state over netlink: {exc}") from exc
    return links, addresses, routes, rules


def parse_link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return Link(index=msg["index"], name=msg.get_attr("IFLA_IFNAME"), kind=kind,
                admin_up=bool(msg["flags"] & IFF_UP),
                oper_state=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
                master=msg.get_attr("IFLA_MASTER"))


def parse_address(msg: Any, names: dict[int, str]) -> Address:
    text = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
    local = msg.get_attr("IFA_LOCAL")
    if local and msg["family"] == socket.AF_INET:
        text = local  # on point-to-point links IFA_ADDRESS is the peer
    return Address(ifindex=msg["index"], ifname=names.get(msg["index"], str(msg["index"])),
                   address=ipaddress.ip_address(text), prefixlen=msg["prefixlen"], scope=msg["scope"])


def parse_route(msg: Any, names: dict[int, str]) -> Route | None:
    family = msg["family"]
    dst_text = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
    try:
        dst = ipaddress.ip_network(f"{dst_text}/{msg['dst_len']}", strict=False)
    except ValueError:
        return None
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    hops = _nexthops(msg, names)
    return Route(dst=dst, table=table, type=ROUTE_TYPES.get(msg["type"], str(msg["type"])),
                 protocol=ROUTE_PROTOCOLS.get(msg["proto"], str(msg["proto"])), scope=msg["scope"],
                 nexthops=hops, metric=msg.get_attr("RTA_PRIORITY") or 0,
                 prefsrc=msg.get_attr("RTA_PREFSRC"))


def _nexthops(msg: Any, names: dict[int, str]) -> tuple[Nexthop, ...]:
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        return tuple(Nexthop(ifindex=hop["oif"], ifname=names.get(hop["oif"]),
                             gateway=hop.get_attr("RTA_GATEWAY")) for hop in multipath)
    oif = msg.get_attr("RTA_OIF")
    gateway = msg.get_attr("RTA_GATEWAY")
    if oif is None and gateway is None:
        return ()
    return (Nexthop(ifindex=oif, ifname=names.get(oif) if oif is not None else None, gateway=gateway),)


def _range(value: Any) -> tuple[int, int] | None:
    """pyroute2 renders uid/port ranges as 'a:b' strings or dicts."""
    if value is None:
        return None
    if isinstance(value, dict):
        return int(value["start"]), int(value["end"])
    start, _, end = str(value).partition(":")
    return int(start), int(end or start)


def parse_rule(msg: Any) -> Rule:
    version = 4 if msg["family"] == socket.AF_INET else 6

    def prefix(attr: str, length: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        value = msg.get_attr(attr)
        return ipaddress.ip_network(f"{value}/{length}", strict=False) if value else None

    suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
    fwmark = msg.get_attr("FRA_FWMARK")
    fwmask = msg.get_attr("FRA_FWMASK")
    return Rule(
        family=version,
        priority=msg.get_attr("FRA_PRIORITY") or 0,
        action=RULE_ACTIONS.get(msg["action"], str(msg["action"])),
        table=msg.get_attr("FRA_TABLE") or msg["table"],
        invert=bool(msg["flags"] & FIB_RULE_INVERT),
        src=prefix("FRA_SRC", msg["src_len"]),
        dst=prefix("FRA_DST", msg["dst_len"]),
        iif=msg.get_attr("FRA_IIFNAME"),
        oif=msg.get_attr("FRA_OIFNAME"),
        fwmark=fwmark if fwmark or fwmask else None,
        fwmask=fwmask,
        uid_range=_range(msg.get_attr("FRA_UID_RANGE")),
        suppress_prefixlen=None if suppress in (None, UNSET_U32, -1) else suppress,
        ipproto=msg.get_attr("FRA_IP_PROTO"),
        dport_range=_range(msg.get_attr("FRA_DPORT_RANGE")),
        goto=msg.get_attr("FRA_GOTO"),
    )
