"""Hypothesis strategies for whole network states, and a model of the kernel's
route decision that answers from them.

`worlds()` draws a `World`: a `NetState` as leakcheck.linux would read it
(links of every kind with the kernel's own local and on-link routes,
addresses of both families, rules, routes in several tables, xfrm
policies, a firewall, resolvers, processes and sockets) plus the config
mapping a user might have written, and a few facts the semantic
properties need (which link is the uplink, what the tunnel carries).

`ModelKernel` (leakcheck/fibmodel.py) stands in for the netlink socket (`Oracle(..., lookup=...)`):
it answers RTM_GETROUTE with RTM_F_FIB_MATCH the way Linux's FIB does
(fib_rules_lookup + fib_table_lookup): rules by priority with their
selectors, goto / nop / blackhole actions, suppress_prefixlength applied
only to successful lookups, longest prefix then lowest metric per table,
throw falling through to the next rule, next hops on links that are
administratively down skipped (without carrier they are still used), a bound
device (oif) restricting next hops, IPv4 forwarding off refusing iif
lookups for anything but this host. tests/unit/test_model_kernel.py checks
it against the real kernel in a network namespace. So probes run end to end without a kernel.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from hypothesis import strategies as st

from leakcheck.netstate import (LOCAL_TABLE, MAIN_TABLE, ROUTE_PROTOCOLS, ROUTE_TYPES, Activity, Address,
                                Firewall, FirewallChain, FirewallRule, Link, LinkDetail, NetState, Nexthop,
                                ProcessInfo, Resolver, Route, Rule, SocketInfo, WireGuardInfo, XfrmPolicy,
                                XfrmTemplate)
from leakcheck.rtnl import Answer, Query

# the kernel model lives in leakcheck.fibmodel (the posture probes' what-if uses it too)
from leakcheck.fibmodel import (INVALID_UID, PROTOCOL_NUMBERS, ROUTE_TYPE_ERRORS, RULE_ACTION_ERRORS,  # noqa: F401
                                TYPE_NUMBERS, ModelKernel, default_rules)

net = ipaddress.ip_network
addr = ipaddress.ip_address
WG_TABLE = 51820
SPLIT_TABLE = 100


# ---------------------------------------------------------------- building a state

class Builder:
    """Collects a NetState the way the kernel would hold it: an address brings
    its local route (table local) and its on-link prefix route (main)."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.addresses: list[Address] = []
        self.routes: dict[tuple, Route] = {}
        self.rules: list[Rule] = [*default_rules(4), *default_rules(6)]
        self.xfrm: list[XfrmPolicy] = []
        self.wireguard: list[WireGuardInfo] = []
        self.details: list[LinkDetail] = []
        self.sysctls: dict[str, str] = {}
        self.link("lo", None, oper="UNKNOWN")
        self.address("lo", "127.0.0.1/8", scope=254)
        self.address("lo", "::1/128", scope=254)

    def link(self, name: str, kind: str | None, admin_up: bool = True, oper: str = "UP",
             master: str | None = None, index: int | None = None) -> Link:
        master_index = self.index(master) if master else None
        link = Link(index or max(l.index for l in self.links or [Link(0, "", None, True, "")]) + 1, name, kind,
                    admin_up, oper, master_index)
        self.links.append(link)
        return link

    def index(self, name: str) -> int:
        return next(l.index for l in self.links if l.name == name)

    def hop(self, name: str, gateway: str | None = None) -> Nexthop:
        return Nexthop(self.index(name), name, gateway)

    def address(self, ifname: str, cidr: str, scope: int = 0) -> None:
        iface = ipaddress.ip_interface(cidr)
        self.addresses.append(Address(self.index(ifname), ifname, iface.ip, iface.network.prefixlen, scope))
        host = net(f"{iface.ip}/{iface.ip.max_prefixlen}")
        self.route(host, table=LOCAL_TABLE, type="local", protocol="kernel", scope=254, hops=(self.hop(ifname),))
        if ifname == "lo" and iface.version == 4:
            self.route(iface.network, table=LOCAL_TABLE, type="local", protocol="kernel", scope=254,
                       hops=(self.hop(ifname),))
        # what else the kernel puts in table local: IPv4 broadcast, IPv6 subnet-router anycast
        if iface.version == 4 and iface.network.prefixlen < 31 and ifname != "lo":
            self.route(f"{iface.network.broadcast_address}/32", table=LOCAL_TABLE, type="broadcast",
                       protocol="kernel", scope=253, hops=(self.hop(ifname),))
        elif iface.version == 6 and iface.network.prefixlen < 127 and ifname != "lo":
            self.route(f"{iface.network.network_address}/128", table=LOCAL_TABLE, type="anycast",
                       protocol="kernel", hops=(self.hop(ifname),))
            self.route("ff00::/8", table=LOCAL_TABLE, type="multicast", protocol="kernel", hops=(self.hop(ifname),),
                       metric=256 + self.index(ifname))
        if iface.network.prefixlen < iface.ip.max_prefixlen and ifname != "lo":
            self.route(iface.network, protocol="kernel", scope=253, hops=(self.hop(ifname),),
                       metric=0 if iface.version == 4 else 256)

    def route(self, dst: Any, table: int = MAIN_TABLE, type: str = "unicast", protocol: str = "boot",
              scope: int = 0, hops: tuple[Nexthop, ...] = (), metric: int = 0) -> Route:
        dst = net(str(dst), strict=False)
        kept = hops if type in ("unicast", "local", "broadcast", "anycast", "multicast") else ()
        route = Route(dst, table, type, protocol, scope, kept, metric)
        # the kernel refuses an exact duplicate; IPv6 keeps one route per device (fe80::/64)
        device = kept[0].ifindex if kept and dst.version == 6 else None
        self.routes.setdefault((dst, table, metric, device), route)
        return route

    def build(self, **extra: Any) -> NetState:
        return NetState(links=tuple(self.links), addresses=tuple(self.addresses),
                        routes=tuple(self.routes.values()), rules=tuple(self.rules),
                        xfrm_policies=tuple(self.xfrm), wireguard=tuple(self.wireguard),
                        sysctls=dict(self.sysctls), link_details=tuple(self.details), **extra)


@dataclass
class World:
    """A generated network state, the config a user wrote, and what was built."""

    state: NetState
    config: dict[str, Any]
    tunnel_kind: str = "none"  # how it was built (wireguard, tun, tap, ppp, xfrm, vti, policy-ipsec, none)
    tunnel_up: bool = False
    tunnel_name: str | None = None
    carries: tuple[int, ...] = ()  # families the tunnel takes the default path of
    uplinks: list[str] = field(default_factory=list)
    gateways: dict[tuple[str, int], str] = field(default_factory=dict)  # (uplink, family) -> gateway
    endpoint: str | None = None
    firewall_blocks_uplink: bool = False  # a kill switch drops output on the uplinks
    extras: list[str] = field(default_factory=list)  # which random features were added


# ---------------------------------------------------------------- strategies

TUNNEL_KINDS = ("wireguard", "wireguard-go", "tun", "tap", "ppp", "xfrm", "vti", "policy-ipsec", "none")
# interface name, netlink kind
TUNNEL_LINKS = {"wireguard": ("wg0", "wireguard"), "wireguard-go": ("wg0", "tun"), "tun": ("tun0", "tun"),
                "tap": ("tap0", "tun"), "ppp": ("ppp0", "ppp"), "xfrm": ("ipsec0", "xfrm"),
                "vti": ("vti0", "vti")}
INTERFACE_TUNNELS = ("wireguard", "wireguard-go", "tun", "tap", "ppp", "xfrm", "vti")
ROUTING_STYLES = ("main-default", "def1", "wg-quick", "split", "nothing")
ENDPOINTS = {4: "203.0.113.7", 6: "2001:db8:ffff::7"}


def public_prefixes(family: int) -> st.SearchStrategy[Any]:
    """Prefixes anywhere in the space, biased towards public and documentation ranges."""
    bits = 32 if family == 4 else 128
    anywhere = st.tuples(st.integers(0, (1 << bits) - 1), st.integers(0, bits)).map(
        lambda t: net(f"{ipaddress.ip_address(t[0]) if family == 4 else ipaddress.IPv6Address(t[0])}/{t[1]}",
                      strict=False))
    known = (["198.51.100.0/24", "8.8.8.0/24", "1.0.0.0/8", "0.0.0.0/1", "128.0.0.0/1", "9.9.9.9/32",
              "1.1.1.1/32", "10.0.0.0/8", "100.64.0.0/10", "192.0.2.0/24"] if family == 4 else
             ["2001:db8:1::/48", "2606:4700::/32", "2000::/3", "::/1", "8000::/1", "2001:4860::/32",
              "fd00::/8", "fe80::/64"])
    return st.one_of(st.sampled_from([net(p) for p in known]), anywhere)


@st.composite
def uplinks(draw: st.DrawFn, b: Builder, world: World, clean: bool = False) -> None:
    """0-2 physical ways to the internet: Ethernet and Wi-Fi, IPv4 and/or IPv6
    (`clean`: at least one, all up)."""
    names = draw(st.lists(st.sampled_from(["eth0", "wlan0", "enp0s31f6.100"]), min_size=int(clean), max_size=2,
                          unique=True))
    for i, name in enumerate(names):
        b.link(name, draw(st.sampled_from([None, "veth"])),
               oper="UP" if clean else draw(st.sampled_from(["UP", "UP", "DOWN"])))
        if name.startswith("wlan"):
            b.details.append(LinkDetail(name, devtype="wlan", wireless_mode="managed"))
        world.uplinks.append(name)
        b.address(name, f"fe80::{i + 1}:1/64", scope=253)
        if draw(st.booleans()) or i == 0:
            lan = draw(st.sampled_from(["192.168.{}.10/24", "100.64.{}.10/24", "10.{}.0.10/16",
                                        "198.51.{}.10/24"])).format(100 + i)
            b.address(name, lan)
            gateway = str(ipaddress.ip_interface(lan).network.network_address + 1)
            world.gateways[(name, 4)] = gateway
            if draw(st.booleans()) or i == 0:
                b.route("0.0.0.0/0", protocol="dhcp", hops=(b.hop(name, gateway),), metric=100 + 500 * i)
        if draw(st.booleans()):
            if draw(st.booleans()):
                b.address(name, f"2001:db8:{100 + i}::10/64")
            world.gateways[(name, 6)] = f"fe80::{i + 1}:ff"
            b.route("::/0", protocol="ra", hops=(b.hop(name, f"fe80::{i + 1}:ff"),), metric=1024 + i)
        b.sysctls[f"net.ipv6.conf.{name}.accept_ra"] = draw(st.sampled_from(["0", "1", "2"]))


def _via_uplink(b: Builder, world: World, family: int) -> tuple[Nexthop, ...]:
    for name in world.uplinks:
        if (name, family) in world.gateways:
            return (b.hop(name, world.gateways[(name, family)]),)
    return (b.hop(world.uplinks[0]),) if world.uplinks else ()


@st.composite
def tunnel(draw: st.DrawFn, b: Builder, world: World, kinds: tuple[str, ...] = TUNNEL_KINDS,
           styles: tuple[str, ...] = ROUTING_STYLES, clean: bool = False) -> None:
    """A tunnel of any kind, up or down, carrying IPv4, IPv6 or both, routed its own way
    (`clean`: up, with an address, no xfrm policies beside an interface tunnel)."""
    kind = draw(st.sampled_from(kinds))
    world.tunnel_kind = kind
    if kind == "none":
        return
    families = draw(st.sampled_from([(4,), (6,), (4, 6), (4, 6)]))
    endpoint_family = draw(st.sampled_from([4, 4, 6]))
    endpoint = ENDPOINTS[endpoint_family]
    world.endpoint = endpoint
    if kind == "policy-ipsec":
        _policy_ipsec(draw, b, world, families, endpoint)
        return
    name, link_kind = TUNNEL_LINKS[kind]
    up = clean or draw(st.sampled_from([True, True, True, False]))
    b.link(name, link_kind, admin_up=up, oper=draw(st.sampled_from(["UNKNOWN", "UP"])) if up else "DOWN")
    world.tunnel_name = name
    has_address = clean or draw(st.sampled_from([True, True, True, False]))
    if has_address:
        if 4 in families:
            b.address(name, draw(st.sampled_from(["10.66.0.2/32", "10.66.0.2/24", "100.96.0.2/16"])))
        if 6 in families:
            b.address(name, draw(st.sampled_from(["fd66::2/64", "fd66::2/128", "2001:db8:66::2/64"])))
    world.tunnel_up = up and has_address
    if kind.startswith("wireguard"):
        handshake = draw(st.sampled_from([None, 1, 1_700_000_000, 4_000_000_000]))
        allowed = tuple(p for f in families for p in (("0.0.0.0/0",) if f == 4 else ("::/0",)))
        b.wireguard.append(WireGuardInfo(name, draw(st.sampled_from([None, WG_TABLE])), (endpoint,), allowed,
                                         handshake))
    if kind in ("xfrm", "vti") and not clean and draw(st.booleans()):
        src = next((str(a.address) for a in b.addresses if a.ifname in world.uplinks
                    and a.address.version == endpoint_family and a.scope == 0), "0.0.0.0")
        for f in families:
            b.xfrm.append(XfrmPolicy("out", net("0.0.0.0/0" if f == 4 else "::/0"),
                                     net("0.0.0.0/0" if f == 4 else "::/0"), 375423, "allow",
                                     (XfrmTemplate(src, endpoint, "esp", "tunnel"),)))
    style = draw(st.sampled_from(styles))
    hop = (b.hop(name),)
    for family in families:
        everything = "0.0.0.0/0" if family == 4 else "::/0"
        halves = ("0.0.0.0/1", "128.0.0.0/1") if family == 4 else ("::/1", "8000::/1")
        if style == "main-default":
            b.route(everything, protocol="static", hops=hop, metric=draw(st.sampled_from([0, 50])))
            world.carries += (family,)
        elif style == "def1":
            for half in halves:
                b.route(half, protocol="static", hops=hop)
            world.carries += (family,)
        elif style == "wg-quick":
            b.route(everything, table=WG_TABLE, hops=hop)
            b.rules += [Rule(family, 32764, "lookup", MAIN_TABLE, suppress_prefixlen=0),
                        Rule(family, 32765, "lookup", WG_TABLE, invert=True, fwmark=WG_TABLE,
                             fwmask=0xFFFFFFFF)]
            world.carries += (family,)
        elif style == "split":
            for prefix in draw(st.lists(public_prefixes(family), min_size=1, max_size=3)):
                b.route(prefix, protocol="static", hops=hop)
    if style in ("main-default", "def1") and addr(endpoint).version in families and draw(st.booleans()):
        via = _via_uplink(b, world, addr(endpoint).version)
        if via:
            b.route(f"{endpoint}/{addr(endpoint).max_prefixlen}", protocol="static", hops=via)


def _policy_ipsec(draw: st.DrawFn, b: Builder, world: World, families: tuple[int, ...], endpoint: str) -> None:
    """strongSwan-style policies: everything into ESP, maybe bypasses for the LAN."""
    src = next((str(a.address) for a in b.addresses if a.ifname in world.uplinks and a.scope == 0
                and a.address.version == addr(endpoint).version), "0.0.0.0")
    for family in families:
        everything = net("0.0.0.0/0" if family == 4 else "::/0")
        b.xfrm.append(XfrmPolicy("out", everything, everything, 375423, "allow",
                                 (XfrmTemplate(src, endpoint, "esp", "tunnel"),)))
        world.carries += (family,)
        if draw(st.booleans()):  # a bypass (passthrough) policy for the LAN or a prefix
            b.xfrm.append(XfrmPolicy("out", everything, draw(public_prefixes(family)), 1000, "allow"))
        if draw(st.booleans()):
            b.xfrm.append(XfrmPolicy("out", everything, draw(public_prefixes(family)), 2000, "block"))
        b.xfrm.append(XfrmPolicy("in", everything, everything, 375423, "allow",
                                 (XfrmTemplate(endpoint, src, "esp", "tunnel"),)))
    world.tunnel_up = True


@st.composite
def odd_routes_and_rules(draw: st.DrawFn, b: Builder, world: World) -> None:
    """TunnelVision routes, blackhole / unreachable / throw routes, routes in
    other tables, uidrange / fwmark / iif / goto / src rules, odd xfrm."""
    tables = [MAIN_TABLE, WG_TABLE, SPLIT_TABLE, 253]
    devices = [l.name for l in b.links if l.name != "lo"]
    for _ in range(draw(st.integers(0, 6))):
        family = draw(st.sampled_from([4, 6]))
        rtype = draw(st.sampled_from(["unicast", "unicast", "blackhole", "unreachable", "prohibit", "throw"]))
        hops: tuple[Nexthop, ...] = ()
        if rtype == "unicast":
            if not devices:
                continue
            dev = draw(st.sampled_from(devices))
            gateway = world.gateways.get((dev, family)) if draw(st.booleans()) else None
            hops = (b.hop(dev, gateway),)
            if draw(st.integers(0, 5)) == 0 and len(devices) > 1:  # multipath
                hops += (b.hop(draw(st.sampled_from(devices))),)
        b.route(draw(public_prefixes(family)), table=draw(st.sampled_from(tables)), type=rtype,
                protocol=draw(st.sampled_from(["dhcp", "static", "boot", "ra", "kernel", "bird"])), hops=hops,
                metric=draw(st.sampled_from([0, 0, 100, 600])))
        world.extras.append(f"route:{rtype}")
    if draw(st.booleans()) and world.uplinks:  # a split-table default, used by the rules below
        for family in (4, 6):
            via = _via_uplink(b, world, family)
            if via:
                b.route("0.0.0.0/0" if family == 4 else "::/0", table=SPLIT_TABLE, hops=via)
    for _ in range(draw(st.integers(0, 4))):
        family = draw(st.sampled_from([4, 6]))
        priority = draw(st.integers(1, 32765))
        action = draw(st.sampled_from(["lookup", "lookup", "lookup", "goto", "nop", "blackhole", "unreachable",
                                       "prohibit"]))
        selectors: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
            "uid_range": st.sampled_from([(1000, 1000), (0, 0), (1000, 60000), (65534, 65534)]),
            "fwmark": st.sampled_from([0x100, 0xCA6C, WG_TABLE, 1]),
            "iif": st.sampled_from(devices + ["lo"] if devices else ["lo"]),
            "oif": st.sampled_from(devices or ["lo"]),
            "src": public_prefixes(family), "dst": public_prefixes(family),
            "suppress_prefixlen": st.sampled_from([0, 1, 8]),
            "ipproto": st.sampled_from([6, 17]), "dport_range": st.sampled_from([(53, 53), (1, 1024)]),
            "invert": st.booleans()}))
        if "fwmark" in selectors:
            selectors["fwmask"] = draw(st.sampled_from([None, 0xFFFFFFFF, 0xFF00]))
        goto = draw(st.integers(priority + 1, 32766)) if action == "goto" else None
        b.rules.append(Rule(family, priority, action, draw(st.sampled_from(tables)), goto=goto, **selectors))
        world.extras.append(f"rule:{action}:{','.join(sorted(selectors))}")
    if world.uplinks and draw(st.integers(0, 7)) == 0:
        # RFC 5549: an IPv4 route via an IPv6 (link-local) gateway
        b.route(draw(public_prefixes(4)), protocol="bird", hops=(b.hop(world.uplinks[0], "fe80::1:ff"),))
        world.extras.append("ipv4-via-ipv6")
    if draw(st.integers(0, 7)) == 0:
        # links, addresses and routes are separate dumps: a link can vanish in between
        family = draw(st.sampled_from([4, 6]))
        b.route(draw(public_prefixes(family)), protocol="static", hops=(Nexthop(99, None, None),))
        b.addresses.append(Address(98, "gone0", addr("192.0.2.99" if family == 4 else "2001:db8:99::1"), 24, 0))
        world.extras.append("vanished-link")
    for _ in range(draw(st.integers(0, 2))):
        family = draw(st.sampled_from([4, 6]))
        b.xfrm.append(XfrmPolicy(draw(st.sampled_from(["out", "in", "fwd"])), draw(public_prefixes(family)),
                                 draw(public_prefixes(family)), draw(st.integers(0, 400000)),
                                 draw(st.sampled_from(["allow", "block"])),
                                 draw(st.sampled_from([(), (XfrmTemplate("192.0.2.1", "203.0.113.9", "esp",
                                                                         draw(st.sampled_from(["tunnel",
                                                                                               "transport"]))),)])),
                                 draw(st.sampled_from([None, "any", "udp", "tcp"]))))
        world.extras.append("xfrm")


@st.composite
def downstream(draw: st.DrawFn, b: Builder, world: World) -> None:
    """Tethering and bridges: USB gadget, Wi-Fi hotspot, a bridge with a port, a container veth."""
    for kind in draw(st.lists(st.sampled_from(["usb", "ap", "bridge", "veth"]), max_size=2, unique=True)):
        if kind == "bridge":
            b.link("br0", "bridge")
            b.link("vnet0", "tun", master="br0")
            name = "br0"
        elif kind == "usb":
            name = "usb0"
            b.link(name, None)
            b.details.append(LinkDetail(name, devtype="gadget", driver="usb_f_rndis"))
        elif kind == "ap":
            name = "ap0"
            b.link(name, None)
            b.details.append(LinkDetail(name, devtype="wlan", wireless_mode="AP"))
        else:
            name = "veth-ct"
            b.link(name, "veth")
            b.details.append(LinkDetail(name, peer_elsewhere=True))
        if draw(st.booleans()):
            b.address(name, draw(st.sampled_from(["192.168.42.1/24", "10.42.0.1/24", "198.18.0.1/30",
                                                  "192.168.7.1/31"])).replace("42", str(42 + len(b.links))))
        if draw(st.booleans()):
            b.address(name, f"2001:db8:{4200 + len(b.links)}::1/64")
        b.sysctls[f"net.ipv4.conf.{name}.forwarding"] = draw(st.sampled_from(["0", "1"]))
        world.extras.append(f"downstream:{kind}")
    b.sysctls["net.ipv4.ip_forward"] = draw(st.sampled_from(["0", "1"]))
    b.sysctls["net.ipv6.conf.all.forwarding"] = draw(st.sampled_from(["0", "1"]))


@st.composite
def resolvers(draw: st.DrawFn, b: Builder, world: World) -> tuple[tuple[Resolver, ...], str | None]:
    """Plain, loopback stubs (with and without a known upstream), per-link and scoped servers,
    IPv6 link-local with a scope."""
    links = [l.name for l in b.links if l.name != "lo"] or ["eth0"]
    plain = st.builds(Resolver, st.sampled_from([addr(a) for a in ("192.168.100.1", "10.66.0.1", "9.9.9.9",
                                                                     "2001:db8:100::53", "fd66::1",
                                                                     "::ffff:192.168.100.1", "0.0.0.0")]),
                      st.just("resolv.conf"))
    stub = st.builds(Resolver, st.sampled_from([addr("127.0.0.53"), addr("127.0.0.1"), addr("::1"),
                                                addr("127.0.1.1")]), st.just("resolv.conf"))
    per_link = st.builds(Resolver, st.sampled_from([addr(a) for a in ("192.168.100.1", "10.66.0.1", "8.8.8.8",
                                                                       "2001:db8:100::53")]),
                         st.just("systemd-resolved"), st.sampled_from(links),
                         st.sampled_from([(), ("~.",), ("corp.example",), ("~corp.example", "lan")]),
                         st.sampled_from([None, True, False]))
    scoped = st.builds(lambda name, host, source, per_link: Resolver(
        ipaddress.IPv6Address(f"fe80::{host}%{name}"), source, name if per_link else None),
        st.sampled_from(links), st.sampled_from(["1", "53", "1:ff"]),
        st.sampled_from(["resolv.conf", "systemd-resolved"]), st.booleans())
    found = tuple(draw(st.lists(st.one_of(plain, stub, per_link, scoped), max_size=4)))
    stub_name = draw(st.sampled_from([None, "systemd-resolved", "dnsmasq"])) if any(
        r.address.is_loopback for r in found) else None
    return found, stub_name


def _rule(chain: FirewallChain, text: str, **fields: Any) -> FirewallRule:
    return FirewallRule(chain.source, chain.family, chain.table, chain.name, text, **fields)


@st.composite
def firewalls(draw: st.DrawFn, b: Builder, world: World) -> Firewall | None:
    """None (not read), unreadable, or rule sets: kill switches, marks by owner / cgroup, NAT,
    forward drops, jumps, opaque matches, iptables."""
    choice = draw(st.sampled_from(["none", "unreadable", "rules", "rules", "rules"]))
    if choice == "none":
        return None
    if choice == "unreadable":
        return Firewall(unreadable=("nftables: permission denied (not root)",))
    family = draw(st.sampled_from(["inet", "ip", "ip6"]))
    source = draw(st.sampled_from(["nftables", "nftables", "iptables", "ip6tables"]))
    if source != "nftables":
        family = "ip" if source == "iptables" else "ip6"
    chains, rules = [], []
    tunnel = world.tunnel_name or "tun0"
    if draw(st.booleans()):  # a kill switch on output
        out = FirewallChain(source, family, "killswitch" if source == "nftables" else "filter", "output",
                            "filter", "output", 0, draw(st.sampled_from(["drop", "accept"])))
        chains.append(out)
        rules += [_rule(out, 'oifname "lo" accept', oifnames=("lo",), action="accept"),
                  _rule(out, f'oifname "{tunnel}" accept', oifnames=(tunnel,), action="accept")]
        if world.endpoint:
            rules.append(_rule(out, f"ip daddr {world.endpoint} udp accept", daddrs=(f"{world.endpoint}/32"
                                                                                       if ":" not in world.endpoint
                                                                                       else f"{world.endpoint}/128",),
                               l4protos=("udp",), action="accept"))
        if draw(st.booleans()):
            rules.append(_rule(out, "ip daddr 192.168.0.0/16 accept", daddrs=("192.168.0.0/16",), action="accept"))
        if out.policy != "drop" and world.uplinks:
            rules.append(_rule(out, f'oifname "{world.uplinks[0]}" drop', oifnames=(world.uplinks[0],),
                               action="drop"))
        world.firewall_blocks_uplink = out.policy == "drop" or bool(world.uplinks)
    if draw(st.booleans()):  # marks by owner or cgroup before routing
        route = FirewallChain(source, family, "mangle", "reroute", "route" if source == "nftables" else "filter",
                              "output", -150)
        chains.append(route)
        mark = draw(st.sampled_from([0x100, 0xCA6C, WG_TABLE]))
        uid = draw(st.sampled_from([1000, 0, 65534]))
        rules.append(_rule(route, f"meta skuid {uid} meta mark set {mark:#x}", uids=((uid, uid),),
                           set_mark=mark, negated=("uids",) if draw(st.integers(0, 4)) == 0 else ()))
        rules.append(_rule(route, f"socket cgroupv2 level 2 \"user.slice/app.scope\" meta mark set {mark:#x}",
                           cgroups=("cgroupv2:user.slice/app.scope",), set_mark=mark))
        if draw(st.booleans()):
            rules.append(_rule(route, f"ip daddr 198.51.100.0/24 meta mark set {mark:#x}",
                               daddrs=("198.51.100.0/24",), set_mark=mark))
        if draw(st.booleans()):  # an inet table mixes families in one set
            rules.append(_rule(route, f"ip daddr {{ 9.9.9.0/24, 2001:db8::/32 }} meta mark set {mark:#x}",
                               daddrs=("9.9.9.0/24", "2001:db8::/32"), set_mark=mark, marks=((0, 0xFF),)))
    if draw(st.booleans()):  # NAT and a forward chain for downstream clients
        nat = FirewallChain(source, family, "nat", "postrouting", "nat", "postrouting", 100)
        fwd = FirewallChain(source, family, "filter", "forward", "filter", "forward", 0,
                            draw(st.sampled_from(["accept", "drop"])))
        chains += [nat, fwd]
        up = world.uplinks[0] if world.uplinks else "eth0"
        rules.append(_rule(nat, f'oifname "{up}" masquerade', oifnames=(up,), action="masquerade"))
        rules.append(_rule(fwd, 'iifname "br0" oifname "eth0" drop', iifnames=("br0",), oifnames=("eth0",),
                           action="drop"))
        rules.append(_rule(fwd, "ct state established,related accept", ct_states=("established", "related"),
                           action="accept"))
    if draw(st.booleans()):  # jumps, returns, opaque matches
        base = FirewallChain(source, family, "filter", "OUTPUT", "filter", "output", 10, "accept")
        sub = FirewallChain(source, family, "filter", "vpn-guard")
        chains += [base, sub]
        rules += [_rule(base, "jump vpn-guard", action=draw(st.sampled_from(["jump", "goto"])), target="vpn-guard"),
                  _rule(base, "jump missing-chain", action="jump", target="missing-chain"),
                  _rule(sub, "meta l4proto udp th dport 53 drop", l4protos=("udp",), opaque=("th dport",),
                        action="drop"),
                  _rule(sub, "oifname \"wlan*\" reject", oifnames=("wlan*",), action="reject"),
                  _rule(sub, "return", action="return"),
                  _rule(sub, "ip daddr vmap @x", action="vmap", opaque=("vmap",))]
    sources = tuple(sorted({c.source for c in chains})) or (source,)
    return Firewall(tuple(chains), tuple(rules), sources, draw(st.sampled_from([(), ("ip6tables: not found",)])))


@st.composite
def activities(draw: st.DrawFn, b: Builder, world: World) -> Activity | None:
    """None (not read) or processes and sockets: the VPN client, users, bound and marked sockets."""
    if draw(st.integers(0, 4)) == 0:
        return None
    devices = [l.name for l in b.links if l.name != "lo"]
    procs = [ProcessInfo(1, "systemd", 0, "root", "/usr/lib/systemd/systemd", "/init.scope"),
             ProcessInfo(100, draw(st.sampled_from(["wireguard-go", "openvpn", "charon", "pppd"])), 0, "root",
                         None, None, tunnel_client=draw(st.booleans())),
             ProcessInfo(200, "firefox", 1000, draw(st.sampled_from([None, "alice"])), "/usr/bin/firefox",
                         "/user.slice/app.scope"),
             ProcessInfo(300, "steam", draw(st.sampled_from([1001, 65534, 4294967294])), None)]
    remote = st.sampled_from([None, "1.1.1.1", "198.51.100.9", "192.168.100.1", "2606:4700::1111",
                              world.endpoint or "203.0.113.7", "fe80::1", "10.66.0.1"])
    sockets = []
    for inode in range(draw(st.integers(0, 6))):
        peer = draw(remote)
        family = 6 if peer and ":" in peer else draw(st.sampled_from([4, 6])) if peer is None else 4
        local = draw(st.sampled_from(["0.0.0.0", "192.168.100.10", "10.66.0.2"] if family == 4 else
                                     ["::", "2001:db8:100::10", "fe80::1:1"]))
        sockets.append(SocketInfo(
            draw(st.sampled_from(["tcp", "udp"])), family,
            "established" if peer else "unconnected", local, draw(st.sampled_from([40000, 68, 5353, 53])),
            peer, draw(st.sampled_from([443, 53, 51820])) if peer else None,
            draw(st.sampled_from([0, 1000, 1001, -1])), 1000 + inode,
            bound_device=draw(st.sampled_from([None, None, *devices, "gone0"])),
            mark=draw(st.sampled_from([None, 0, WG_TABLE, 0x100])),
            pids=draw(st.sampled_from([(), (100,), (200,), (300, 999)]))))
    return Activity(tuple(procs), tuple(sockets), (("alice", 1000),) if draw(st.booleans()) else (),
                    "sock_diag", draw(st.booleans()),
                    draw(st.sampled_from([(), ("other users' processes are not visible (not root)",)])))


def configs(draw: st.DrawFn, world: World) -> dict[str, Any]:
    """The config a user might write: default, empty or odd canaries, exceptions, split policy."""
    # odd ones too: a LAN address, this host's own address, the VPN server
    ipv4 = draw(st.sampled_from([None, [], ["198.51.100.1"], ["1.1.1.1", "8.8.8.8"], ["10.66.0.1"],
                                 ["192.168.100.1", "9.9.9.9"], ["192.168.100.10"], ["203.0.113.7"]]))
    ipv6 = draw(st.sampled_from([None, [], ["2606:4700:4700::1111"], ["2001:db8:1::1"], ["fd66::1"],
                                 ["2001:db8:100::10", "2001:db8:ffff::7"]]))
    canaries: dict[str, Any] = {"active": False}
    if ipv4 is not None:
        canaries["ipv4"] = ipv4
    if ipv6 is not None:
        canaries["ipv6"] = ipv6
    policy = {"allowed_direct": draw(st.sampled_from([[], ["198.51.100.0/24"], ["0.0.0.0/0"],
                                                       ["203.0.113.0/24", "2001:db8::/32"]])),
              "allow_split": draw(st.booleans())}
    cfg: dict[str, Any] = {"canaries": canaries, "policy": policy}
    if draw(st.integers(0, 5)) == 0:
        cfg["tunnel"] = {"interfaces": draw(st.sampled_from([["tun*"], ["eth0"], ["nothing*"], ["*"], ["lo"]]))}
    return cfg


@st.composite
def histories(draw: st.DrawFn) -> list[Any]:
    """tunnel-history.json as the agent writes it, and as a damaged file might hold it."""
    entry = st.fixed_dictionaries({"interface": st.sampled_from(["wg0", "tun0", None]),
                                   "down_at": st.sampled_from(["2026-12-01T10:00:00.000Z", "2026-12-01T10:00:00",
                                                               "yesterday", "2999-01-01T00:00:00Z"]),
                                   "up_at": st.sampled_from([None, "2026-12-01T10:00:05.000Z"]),
                                   "outage_s": st.sampled_from([None, 5.0, 0, 120, True, "5"])})
    return draw(st.lists(st.one_of(entry, st.sampled_from([{}, 7, "x", {"down_at": None}])), max_size=4))


@st.composite
def worlds(draw: st.DrawFn, kinds: tuple[str, ...] = TUNNEL_KINDS, extras: bool = True, up: bool = False,
           styles: tuple[str, ...] = ROUTING_STYLES) -> World:
    """A whole network state. `extras=False` leaves out the random routes, rules,
    xfrm policies, firewall, sockets and downstream links; `up` keeps at least
    one uplink and the tunnel up, with no xfrm policy beside an interface tunnel
    (what the semantic properties edit)."""
    b = Builder()
    world = World(NetState(), {})
    draw(uplinks(b, world, up))
    draw(tunnel(b, world, kinds, styles, up))
    if extras:
        draw(downstream(b, world))
        draw(odd_routes_and_rules(b, world))
    found, stub = draw(resolvers(b, world))
    fw = draw(firewalls(b, world)) if extras else None
    activity = draw(activities(b, world)) if extras else None
    world.state = b.build(resolvers=found, stub_resolver=stub, firewall=fw, activity=activity,
                          notes=draw(st.sampled_from([(), ("xfrm: permission denied",)])))
    world.config = configs(draw, world)
    return world


@st.composite
def clean_full_tunnels(draw: st.DrawFn) -> World:
    """An interface tunnel that is up and is the only default path of every family it
    carries, with nothing more specific on a physical link than the (private) LAN."""
    world = draw(worlds(kinds=INTERFACE_TUNNELS, extras=False, up=True, styles=("main-default", "def1", "wg-quick")))
    state = world.state
    keep = []
    for route in state.routes:
        physical = route.table != LOCAL_TABLE and route.ifnames and world.tunnel_name not in route.ifnames
        if physical and (route.is_default or not _private(route.dst)):
            continue  # drop physical defaults, public LANs and the server route
        keep.append(route)
    world.state = replace(state, routes=tuple(keep))
    world.config["policy"] = {"allowed_direct": [], "allow_split": False}
    world.config.pop("tunnel", None)  # auto-detect: a glob naming another link is another property
    return world


def _private(prefix: Any) -> bool:
    from leakcheck.addrspace import is_public
    return not any(is_public(a) for a in (prefix.network_address, prefix.broadcast_address)) and \
        prefix.prefixlen >= (8 if prefix.version == 4 else 10)
