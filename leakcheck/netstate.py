"""The network state: everything the probes reason about, read once per run.

`NetState` is a frozen snapshot (links, addresses, routes of every table,
policy rules, xfrm policies/states, resolvers, forwarding sysctls, WireGuard
facts). Probes get it through the probe context and never read the OS
themselves. `read_linux()` builds it from netlink (pyroute2) and a few files;
other platforms get their own reader behind the same model.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Iterable, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

log = logging.getLogger(__name__)

MAIN_TABLE = 254
LOCAL_TABLE = 255

ROUTE_PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated",
                   9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp",
                   15: "ntk", 16: "dhcp", 42: "babel", 186: "bgp", 187: "isis", 188: "ospf",
                   189: "rip", 192: "eigrp"}
ROUTE_TYPES = {0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
               6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
RULE_ACTIONS = {1: "lookup", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
TABLE_NAMES = {MAIN_TABLE: "main", LOCAL_TABLE: "local", 253: "default"}
FIB_RULE_INVERT = 0x2


def table_name(table: int) -> str:
    return TABLE_NAMES.get(table, str(table))


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None  # netlink link kind: wireguard, tun, veth, bridge, ppp, xfrm, vti...
    admin_up: bool
    oper_state: str  # UP, DOWN, UNKNOWN, LOWERLAYERDOWN...
    master: int | None = None

    @property
    def usable(self) -> bool:
        """Administratively up and not reported down by its driver."""
        return self.admin_up and self.oper_state not in ("DOWN", "LOWERLAYERDOWN", "NOTPRESENT")


@dataclass(frozen=True)
class Address:
    ifindex: int
    ifname: str
    address: IPAddress
    prefixlen: int
    scope: int  # 0 universe, 253 link, 254 host

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(f"{self.address}/{self.prefixlen}", strict=False)


@dataclass(frozen=True)
class Nexthop:
    ifindex: int | None
    ifname: str | None
    gateway: str | None


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    table: int
    type: str  # unicast, local, blackhole, unreachable, prohibit, throw...
    protocol: str  # kernel, boot, static, dhcp, ra...
    scope: int
    nexthops: tuple[Nexthop, ...]
    metric: int = 0
    prefsrc: str | None = None

    @property
    def family(self) -> int:
        return self.dst.version

    @property
    def ifnames(self) -> tuple[str, ...]:
        return tuple(n.ifname for n in self.nexthops if n.ifname)

    @property
    def is_default(self) -> bool:
        return self.dst.prefixlen == 0

    def describe(self) -> str:
        """`ip route`-like one-liner, for evidence and the terminal."""
        parts = [self.type] if self.type != "unicast" else []
        parts.append("default" if self.is_default else str(self.dst))
        for hop in self.nexthops:
            if hop.gateway:
                parts += ["via", hop.gateway]
            if hop.ifname:
                parts += ["dev", hop.ifname]
        if self.table != MAIN_TABLE:
            parts += ["table", table_name(self.table)]
        parts += ["proto", self.protocol]
        if self.metric:
            parts += ["metric", str(self.metric)]
        return " ".join(parts)

    def evidence(self) -> dict[str, object]:
        return {"route": self.describe(), "prefix": str(self.dst), "table": table_name(self.table),
                "protocol": self.protocol, "interfaces": list(self.ifnames),
                "gateways": [n.gateway for n in self.nexthops if n.gateway]}


@dataclass(frozen=True)
class Rule:
    family: int  # 4 or 6
    priority: int
    action: str  # lookup, goto, nop, blackhole, unreachable, prohibit
    table: int
    invert: bool = False
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    uid_range: tuple[int, int] | None = None
    suppress_prefixlen: int | None = None
    ipproto: int | None = None
    dport_range: tuple[int, int] | None = None
    goto: int | None = None

    def describe(self) -> str:
        """`ip rule`-like one-liner."""
        parts = [f"{self.priority}:"]
        if self.invert:
            parts.append("not")
        parts += ["from", str(self.src) if self.src else "all"]
        if self.dst:
            parts += ["to", str(self.dst)]
        if self.fwmark is not None:
            mark = hex(self.fwmark)
            if self.fwmask not in (None, 0xFFFFFFFF):
                mark += f"/{self.fwmask:#x}"
            parts += ["fwmark", mark]
        if self.iif:
            parts += ["iif", self.iif]
        if self.oif:
            parts += ["oif", self.oif]
        if self.uid_range:
            parts += ["uidrange", f"{self.uid_range[0]}-{self.uid_range[1]}"]
        if self.ipproto is not None:
            parts += ["ipproto", str(self.ipproto)]
        if self.dport_range:
            parts += ["dport", f"{self.dport_range[0]}-{self.dport_range[1]}"]
        if self.action == "lookup":
            parts += ["lookup", table_name(self.table)]
        elif self.action == "goto":
            parts += ["goto", str(self.goto)]
        else:
            parts.append(self.action)
        if self.suppress_prefixlen is not None:
            parts += ["suppress_prefixlength", str(self.suppress_prefixlen)]
        return " ".join(parts)

    def matches(self, *, dst: IPAddress, src: IPAddress | None = None, iif: str | None = None,
                oif: str | None = None, mark: int = 0, uid: int = 0, ipproto: int | None = None,
                dport: int | None = None) -> bool:
        """Whether the rule's selectors match a lookup (used for evidence only:
        the kernel's own lookup decides the egress)."""
        hit = self._selectors_match(dst, src, iif or "lo", oif, mark, uid, ipproto, dport)
        return hit != self.invert

    def _selectors_match(self, dst: IPAddress, src: IPAddress | None, iif: str, oif: str | None,
                         mark: int, uid: int, ipproto: int | None, dport: int | None) -> bool:
        if self.dst is not None and dst not in self.dst:
            return False
        if self.src is not None and (src is None or src not in self.src):
            return False
        if self.iif is not None and self.iif != iif:
            return False
        if self.oif is not None and self.oif != oif:
            return False
        if self.fwmark is not None and (mark & (self.fwmask or 0xFFFFFFFF)) != self.fwmark:
            return False
        if self.uid_range is not None and not self.uid_range[0] <= uid <= self.uid_range[1]:
            return False
        if self.ipproto is not None and self.ipproto != ipproto:
            return False
        if self.dport_range is not None and (dport is None or
                                             not self.dport_range[0] <= dport <= self.dport_range[1]):
            return False
        return True


@dataclass(frozen=True)
class XfrmTemplate:
    src: str
    dst: str
    proto: str  # esp, ah, comp
    mode: str  # tunnel, transport, beet


@dataclass(frozen=True)
class XfrmPolicy:
    direction: str  # out, in, fwd
    src: IPNetwork
    dst: IPNetwork
    priority: int
    action: str  # allow, block
    templates: tuple[XfrmTemplate, ...] = ()
    ipproto: str | None = None

    @property
    def protects(self) -> bool:
        """Matching packets are encapsulated (a tunnel-mode template)."""
        return self.action == "allow" and any(t.mode == "tunnel" for t in self.templates)

    def describe(self) -> str:
        text = f"src {self.src} dst {self.dst} dir {self.direction} priority {self.priority}"
        if self.action == "block":
            text += " action block"
        for tmpl in self.templates:
            text += f" tmpl src {tmpl.src} dst {tmpl.dst} proto {tmpl.proto} mode {tmpl.mode}"
        return text


@dataclass(frozen=True)
class XfrmState:
    src: str
    dst: str
    proto: str
    spi: str
    mode: str
    # (kind, kernel algorithm name, bits): ("aead", "rfc4106(gcm(aes))", 128 = ICV bits),
    # ("enc", "cbc(aes)", 256 = key bits), ("auth-trunc", "hmac(sha1)", 96). Never the keys.
    algorithms: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class Resolver:
    address: IPAddress
    source: str  # "resolv.conf" or "systemd-resolved"
    link: str | None = None  # per-link resolver (systemd-resolved)
    domains: tuple[str, ...] = ()
    default_route: bool | None = None  # systemd-resolved DefaultRoute flag of the link

    @property
    def takes_any_query(self) -> bool:
        """Per-link resolvers receive queries for any name with `~.` or DefaultRoute."""
        return self.link is None or "~." in self.domains or bool(self.default_route)


@dataclass(frozen=True)
class WireGuardInfo:
    ifname: str
    fwmark: int | None
    endpoints: tuple[str, ...]  # peer endpoint IP addresses
    allowed_ips: tuple[str, ...]
    latest_handshake: int | None  # unix time of the newest handshake, None = never


@dataclass(frozen=True)
class VpnProfile:
    """A VPN the operating system itself knows (macOS `scutil --nc list`, Windows
    `Get-VpnConnection`): what it is and how it is set up. None: not told."""

    name: str
    source: str  # "scutil --nc list" | "Get-VpnConnection"
    state: str  # connected | disconnected | connecting | ...
    kind: str | None = None  # IKEv2, L2TP, Sstp, IPSec, VPN:com.wireguard.macos ...
    server: str | None = None  # an address or a host name
    split_tunneling: bool | None = None
    always_on: bool | None = None
    authentication: tuple[str, ...] = ()
    all_users: bool | None = None

    @property
    def connected(self) -> bool:
        return self.state == "connected"


# ---------------------------------------------------------------- firewall, processes, sockets
# Read for the perapp and tethering probes (leakcheck/linux/firewall.py, sockets.py, downstream.py).

@dataclass(frozen=True)
class FirewallChain:
    source: str  # nftables | iptables | ip6tables
    family: str  # nftables family (ip, ip6, inet, bridge...); iptables: ip / ip6
    table: str
    name: str
    type: str | None = None  # filter, route, nat (base chains only)
    hook: str | None = None  # prerouting, input, forward, output, postrouting; None: a regular chain
    priority: int = 0
    policy: str | None = None  # accept | drop (base chains)


@dataclass(frozen=True)
class FirewallRule:
    """One rule, reduced to the selectors and actions leakcheck reasons about.
    Selector tuples hold alternatives (any may match); `negated` names the
    selectors written with `!=`. `opaque` lists matches not understood: a
    rule with any cannot be decided and is treated as "may match"."""

    source: str
    family: str
    table: str
    chain: str
    text: str  # the rule as nft / iptables-save would print it (for evidence)
    uids: tuple[tuple[int, int], ...] = ()  # meta skuid / -m owner --uid-owner
    gids: tuple[tuple[int, int], ...] = ()
    cgroups: tuple[str, ...] = ()  # "cgroupv2:<path>" or "classid:<hex>" (net_cls)
    iifnames: tuple[str, ...] = ()  # may end in * (a prefix match)
    oifnames: tuple[str, ...] = ()
    saddrs: tuple[str, ...] = ()  # prefixes
    daddrs: tuple[str, ...] = ()
    marks: tuple[tuple[int, int], ...] = ()  # matched packet mark (value, mask)
    l4protos: tuple[str, ...] = ()
    dports: tuple[tuple[int, int], ...] = ()  # destination port ranges (tcp/udp/th dport, --dport)
    nfprotos: tuple[str, ...] = ()  # ipv4 / ipv6 (meta nfproto in an inet table)
    ct_states: tuple[str, ...] = ()
    negated: tuple[str, ...] = ()  # selector names matched with != ("uids", "oifnames"...)
    opaque: tuple[str, ...] = ()  # matches leakcheck does not interpret
    set_mark: int | None = None  # meta mark set / MARK --set-(x)mark: the packet mark
    set_mark_mask: int = 0xFFFFFFFF
    set_ct_mark: int | None = None
    action: str | None = None  # accept, drop, reject, return, jump, goto, masquerade, snat, dnat, redirect
    target: str | None = None  # chain of jump / goto; address of snat / dnat

    @property
    def selects_by_owner(self) -> bool:
        return bool(self.uids or self.gids or self.cgroups)


@dataclass(frozen=True)
class Firewall:
    chains: tuple[FirewallChain, ...] = ()
    rules: tuple[FirewallRule, ...] = ()
    sources: tuple[str, ...] = ()  # what was read: nftables, iptables, ip6tables
    unreadable: tuple[str, ...] = ()  # what could not be read, and why

    def chain(self, source: str, family: str, table: str, name: str) -> FirewallChain | None:
        for chain in self.chains:
            if (chain.source, chain.family, chain.table, chain.name) == (source, family, table, name):
                return chain
        return None

    def rules_of(self, chain: FirewallChain) -> list[FirewallRule]:
        return [r for r in self.rules if (r.source, r.family, r.table, r.chain) ==
                (chain.source, chain.family, chain.table, chain.name)]


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    name: str
    uid: int
    user: str | None = None
    exe: str | None = None
    cgroup: str | None = None  # cgroup v2 path ("0::" line of /proc/PID/cgroup)
    tunnel_client: bool = False  # holds /dev/net/tun open: a userspace VPN / tunnel client

    def evidence(self) -> dict[str, object]:
        return {"pid": self.pid, "name": self.name, "exe": self.exe, "uid": self.uid, "user": self.user}


@dataclass(frozen=True)
class SocketInfo:
    protocol: str  # tcp | udp
    family: int  # 4 | 6 (IPv4-mapped IPv6 sockets are reported as 4)
    state: str  # established, syn-sent, unconnected, ...
    local: str
    local_port: int
    remote: str | None  # None: not connected (UDP) or wildcard
    remote_port: int | None
    uid: int
    inode: int
    bound_device: str | None = None  # SO_BINDTODEVICE
    mark: int | None = None  # SO_MARK; None when not readable (needs CAP_NET_ADMIN)
    pids: tuple[int, ...] = ()  # processes holding it (empty when not visible)

    def describe(self) -> str:
        remote = f"{_hostport(self.remote, self.remote_port)}" if self.remote else "(not connected)"
        dev = f" bound to {self.bound_device}" if self.bound_device else ""
        return f"{self.protocol} {_hostport(self.local, self.local_port)} -> {remote}{dev}"


def _hostport(host: str | None, port: int | None) -> str:
    host = host or "*"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Activity:
    """Processes, logins and live sockets of this network namespace."""

    processes: tuple[ProcessInfo, ...] = ()
    sockets: tuple[SocketInfo, ...] = ()
    logins: tuple[tuple[str, int], ...] = ()  # (user, uid) with a login session
    socket_source: str = ""  # sock_diag | psutil
    complete: bool = False  # every process and socket owner was visible (root)
    limits: tuple[str, ...] = ()  # what could not be seen, and why

    def process(self, pid: int) -> ProcessInfo | None:
        for proc in self.processes:
            if proc.pid == pid:
                return proc
        return None

    def owners(self, sock: SocketInfo) -> list[ProcessInfo]:
        return [p for p in (self.process(pid) for pid in sock.pids) if p is not None]


@dataclass(frozen=True)
class LinkDetail:
    """What kind of device a link is, beyond its netlink kind (for tethering)."""

    name: str
    devtype: str | None = None  # DEVTYPE from sysfs uevent: wlan, bridge, gadget, vlan...
    driver: str | None = None
    wireless_mode: str | None = None  # AP, managed, ... (when `iw` tells)
    peer_elsewhere: bool = False  # veth whose peer lives in another network namespace



@dataclass(frozen=True)
class TunnelOwner:
    """The process holding a tun/tap/ppp device, and the VPN servers it talks
    to: the remote ends of its sockets outside the tunnel (leakcheck/linux/tunowners.py)."""

    ifname: str
    pid: int
    name: str  # the process's name (comm)
    endpoints: tuple[str, ...] = ()  # outer endpoint addresses (the VPN servers)
    evidence: tuple[str, ...] = ()  # how each endpoint was found, in words


@dataclass(frozen=True)
class NetState:
    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    routes: tuple[Route, ...] = ()
    rules: tuple[Rule, ...] = ()
    xfrm_policies: tuple[XfrmPolicy, ...] = ()
    xfrm_states: tuple[XfrmState, ...] = ()
    resolvers: tuple[Resolver, ...] = ()
    sysctls: dict[str, str] = field(default_factory=dict)
    wireguard: tuple[WireGuardInfo, ...] = ()
    stub_resolver: str | None = None  # e.g. "systemd-resolved" when resolv.conf points at it
    vpn_profiles: tuple[VpnProfile, ...] = ()  # macOS / Windows: the OS's own VPN services
    vpn_servers: tuple[str, ...] = ()  # VPN server addresses a non-Linux backend found
    notes: tuple[str, ...] = ()  # what could not be read, and why
    firewall: Firewall | None = None  # None: not read
    activity: Activity | None = None  # processes and live sockets; None: not read
    link_details: tuple[LinkDetail, ...] = ()
    tunnel_owners: tuple[TunnelOwner, ...] = ()  # tun/tap/ppp holders and their servers
    accounts: dict[int, tuple[str, int]] = field(default_factory=dict)  # uid -> (user name, primary gid)

    def link(self, name_or_index: str | int | None) -> Link | None:
        for link in self.links:
            if link.name == name_or_index or link.index == name_or_index:
                return link
        return None

    def link_detail(self, name: str) -> LinkDetail | None:
        return next((d for d in self.link_details if d.name == name), None)

    def ifname(self, index: int | None) -> str | None:
        link = self.link(index) if index is not None else None
        return link.name if link else None

    def addresses_of(self, ifname: str, family: int | None = None) -> list[Address]:
        return [a for a in self.addresses
                if a.ifname == ifname and (family is None or a.address.version == family)]

    def routes_in(self, tables: Iterable[int] | None = None, family: int | None = None) -> list[Route]:
        wanted = set(tables) if tables is not None else None
        return [r for r in self.routes
                if (wanted is None or r.table in wanted) and (family is None or r.family == family)]

    def rules_for(self, family: int) -> list[Rule]:
        return sorted((r for r in self.rules if r.family == family), key=lambda r: r.priority)

    def own_ipv6_lans(self) -> list[IPNetwork]:
        """IPv6 on-link prefixes (/64 or longer) holding one of this host's own
        addresses on that link: the local network itself. IPv6 LANs are global
        space by design, so unlike a public IPv4 LAN this is not a LocalNet sign."""
        out = []
        for route in self.routes:
            if (route.family != 6 or route.type != "unicast" or route.dst.prefixlen < 64
                    or any(h.gateway for h in route.nexthops) or len(route.ifnames) != 1):
                continue
            mine = [a for a in self.addresses_of(route.ifnames[0], 6) if a.address in route.dst]
            if mine and route.dst not in out:
                out.append(route.dst)
        return out

    def out_policies(self, family: int | None = None) -> list[XfrmPolicy]:
        return sorted((p for p in self.xfrm_policies if p.direction == "out"
                       and (family is None or p.dst.version == family)), key=lambda p: p.priority)


def family_number(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6
