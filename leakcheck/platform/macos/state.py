"""Build a NetState from the macOS tools' output (through one Runner)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Callable

from leakcheck.netstate import (MAIN_TABLE, Activity, Address, Firewall, FirewallChain, FirewallRule, Link,
                                NetState, Nexthop, Resolver, Route, VpnProfile)
from leakcheck.errors import NetStateError
from leakcheck.platform.commands import CommandFailed, Runner
from leakcheck.platform.macos import parsers
from leakcheck.tunnel import link_kind

log = logging.getLogger(__name__)

NETSTAT = ("netstat", "-rn")
IFCONFIG = ("ifconfig", "-a")
SCUTIL_DNS = ("scutil", "--dns")
SCUTIL_NC = ("scutil", "--nc", "list")
PFCTL_RULES = ("pfctl", "-sr")
SOURCE_DNS = "scutil --dns"


def _kind(name: str) -> str | None:
    if name.startswith("lo"):
        return "loopback"
    if name.startswith("bridge"):
        return "bridge"  # Internet Sharing / VM bridges: never the tunnel
    return None


def links_and_addresses(interfaces: list[parsers.IfconfigInterface],
                        routes: list[parsers.NetstatRoute]) -> tuple[tuple[Link, ...], tuple[Address, ...]]:
    """Interface indexes: the IPv6 scopeid ifconfig prints, else netstat's
    link#N of a route on the interface, else the listing order (ifconfig
    lists by index)."""
    from_routes = {r.netif: r.link_index for r in routes if r.link_index is not None}
    used: set[int] = set()
    links, addresses = [], []
    for position, iface in enumerate(interfaces, start=1):
        index = iface.index or from_routes.get(iface.name)
        if index is None or index in used:
            index = position if position not in used else max(used) + 1
        used.add(index)
        oper = "UP" if iface.running else "DOWN"  # up but not running: no link (Wi-Fi off, cable out)
        links.append(Link(index=index, name=iface.name, kind=_kind(iface.name), admin_up=iface.up,
                          oper_state=oper))
        for addr, bits, _peer in iface.inet:
            ip = ipaddress.ip_address(addr)
            addresses.append(Address(index, iface.name, ip, bits, 254 if ip.is_loopback else 0))
        for addr, bits in iface.inet6:
            ip = ipaddress.ip_address(addr)
            scope = 254 if ip.is_loopback else 253 if ip.is_link_local else 0
            addresses.append(Address(index, iface.name, ip, bits, scope))
    return tuple(links), tuple(addresses)


def routes_from_netstat(parsed: list[parsers.NetstatRoute], links: tuple[Link, ...],
                        notes: list[str]) -> tuple[Route, ...]:
    index = {l.name: l.index for l in links}
    routes = []
    scoped = 0
    for entry in parsed:
        if entry.link_layer or entry.kind in ("broadcast", "multicast"):
            continue  # neighbour-cache entries and link broadcast/multicast: no routing decision
        if entry.scoped:
            scoped += 1  # only sockets bound to the interface (IP_BOUND_IF) use them
            continue
        rtype = "local" if entry.netif.startswith("lo") and entry.kind == "unicast" else entry.kind
        routes.append(Route(dst=entry.dst, table=MAIN_TABLE, type=rtype,
                            protocol="static" if "S" in entry.flags else "kernel", scope=0,
                            nexthops=(Nexthop(index.get(entry.netif), entry.netif, entry.gateway),)))
    if scoped:
        notes.append(f"{scoped} interface-scoped route(s) (netstat flag I) left out: only sockets bound "
                     f"to their interface use them")
    return tuple(routes)


def resolvers_from_scutil(parsed: list[parsers.ScutilResolver], notes: list[str]) -> tuple[Resolver, ...]:
    """The resolvers ordinary lookups use: the default ones (no match domain)
    take any query; supplemental ones only their domain. Scoped resolvers
    serve only queries bound to their interface and are noted, not listed."""
    out: list[Resolver] = []
    scoped: list[str] = []
    for entry in parsed:
        if entry.mdns or not entry.nameservers:
            continue
        if entry.scoped:
            scoped += [f"{ns} ({entry.ifname or entry.if_index})" for ns in entry.nameservers]
            continue
        domains = (entry.domain,) if entry.domain else ()
        for ns in entry.nameservers:
            resolver = Resolver(address=ipaddress.ip_address(ns), source=SOURCE_DNS, link=entry.ifname,
                                domains=domains, default_route=not domains)
            if resolver not in out:
                out.append(resolver)
    if scoped:
        unique = list(dict.fromkeys(scoped))
        notes.append("scoped resolvers (used only by queries bound to their interface): " + ", ".join(unique))
    return tuple(out)


def profiles_from_nc(parsed: list[parsers.NcService]) -> tuple[VpnProfile, ...]:
    return tuple(VpnProfile(name=s.name, source="scutil --nc list", state=s.state.lower(), kind=s.kind)
                 for s in parsed)


def firewall_from_pf(parsed: list[parsers.PfRule]) -> Firewall:
    """pf rules, kept for evidence. pf decides by the LAST matching rule unless
    one is `quick`, unlike nftables/iptables order: leakcheck's evaluator does
    not judge pf rules yet, and says so."""
    chain = FirewallChain(source="pf", family="any", table="pf", name="filter")
    rules = []
    for rule in parsed:
        if rule.action not in ("pass", "block"):
            continue
        direction_ifaces = rule.interfaces
        rules.append(FirewallRule(
            source="pf", family=rule.family or "any", table="pf", chain="filter", text=rule.text,
            oifnames=direction_ifaces if rule.direction in ("out", None) else (),
            iifnames=direction_ifaces if rule.direction in ("in", None) else (),
            saddrs=tuple(a for a in rule.sources if a not in ("any",)),
            daddrs=tuple(a for a in rule.destinations if a not in ("any",)),
            l4protos=rule.protos, opaque=rule.opaque + (("quick",) if rule.quick else ()),
            action="accept" if rule.action == "pass" else "drop"))
    return Firewall(chains=(chain,), rules=tuple(rules), sources=("pf",),
                    unreadable=("pf rules are listed as evidence; leakcheck does not evaluate pf's "
                                "last-match semantics yet",))


def server_routes(routes: tuple[Route, ...], links: tuple[Link, ...], state: NetState) -> tuple[str, ...]:
    """VPN server addresses, inferred: macOS clients (PPP, IKEv2, OpenVPN,
    WireGuard's app) pin the server with a static host route via the physical
    gateway while the tunnel takes the default path."""
    tunnel_names = {l.name for l in links if link_kind(l, state)}
    tunnel_default = any(r.dst.prefixlen <= 1 and set(r.ifnames) & tunnel_names for r in routes)
    if not tunnel_default:
        return ()
    return tuple(str(r.dst.network_address) for r in routes
                 if r.type == "unicast" and r.dst.prefixlen == r.dst.max_prefixlen
                 and r.protocol == "static" and any(h.gateway for h in r.nexthops)
                 and not set(r.ifnames) & tunnel_names)


def read(runner: Runner, activity: Callable[[list[str]], Activity | None] | None = None) -> NetState:
    """The whole state; without the routing table and the interfaces there is
    nothing to judge (NetStateError, exit 3), other parts are notes."""
    try:
        return _read(runner, activity)
    except CommandFailed as exc:
        raise NetStateError(f"the network state could not be read: {exc}") from exc


def _read(runner: Runner, activity: Callable[[list[str]], Activity | None] | None) -> NetState:
    notes: list[str] = []
    parsed_routes = parsers.parse_netstat_routes(runner.run(NETSTAT))
    links, addresses = links_and_addresses(parsers.parse_ifconfig(runner.run(IFCONFIG)), parsed_routes)
    routes = routes_from_netstat(parsed_routes, links, notes)
    resolvers = resolvers_from_scutil(_optional(runner, SCUTIL_DNS, parsers.parse_scutil_dns, notes) or [], notes)
    profiles = profiles_from_nc(_optional(runner, SCUTIL_NC, parsers.parse_scutil_nc_list, notes) or [])
    pf = _optional(runner, PFCTL_RULES, parsers.parse_pfctl_rules, notes)
    firewall = firewall_from_pf(pf) if pf is not None else Firewall(
        unreadable=("pf rules: pfctl -sr could not be read (needs root)",))
    partial = NetState(links=links, addresses=addresses, routes=routes)
    servers = server_routes(routes, links, partial)
    return NetState(links=links, addresses=addresses, routes=routes, resolvers=resolvers,
                    notes=tuple(notes), firewall=firewall,
                    activity=activity(notes) if activity is not None else None,
                    vpn_profiles=profiles, vpn_servers=servers)


def _optional(runner: Runner, argv: tuple[str, ...], parse: Callable, notes: list[str]):
    """Parts a probe can do without: a failure is a note, never a failed run."""
    try:
        return parse(runner.run(argv))
    except (CommandFailed, ValueError) as exc:
        log.debug("%s failed", " ".join(argv), exc_info=True)
        notes.append(f"{' '.join(argv)}: not read ({exc})")
        return None
