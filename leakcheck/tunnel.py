"""Which interfaces are the VPN tunnel, and what kind of tunnel it is.

Interface tunnels are recognised by netlink kind (wireguard, tun, ppp, xfrm,
vti...), by the WireGuard UAPI socket of userspace implementations, and by
common vendor names; policy-based IPsec by xfrm out-policies with a
tunnel-mode template. `[tunnel] interfaces` in the config overrides all of it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from leakcheck.config import Config
from leakcheck.netstate import Link, NetState
from leakcheck.report import TunnelSummary

TUNNEL_KINDS = {"wireguard": "wireguard", "tun": "tun", "ppp": "ppp", "xfrm": "ipsec", "vti": "ipsec",
                "vti6": "ipsec", "ipip": "other", "gre": "other", "ip6tnl": "other", "sit": "other"}
# Vendor clients with recognisable interface names (kind alone says only "tun").
NAME_KINDS = (("wg*", "wireguard"), ("nordlynx", "wireguard"), ("mullvad*", "wireguard"),
              ("proton*", "wireguard"), ("tailscale*", "wireguard"), ("utun*", "tun"), ("tun*", "tun"),
              ("tap*", "tun"), ("cscotun*", "tun"), ("gpd*", "tun"), ("vpn*", "tun"), ("ppp*", "ppp"),
              ("ipsec*", "ipsec"), ("xfrm*", "ipsec"), ("vti*", "ipsec"))
# Link kinds that are never a tunnel even when a name glob would say so.
NOT_TUNNEL_KINDS = {"veth", "bridge", "bond", "vlan", "macvlan", "dummy"}


@dataclass(frozen=True)
class Tunnel:
    state: str  # up | down | absent
    kind: str  # wireguard | ipsec | tun | ppp | other | none
    interfaces: tuple[str, ...]
    policy_ipsec: bool = False  # xfrm tunnel-mode out-policies are installed

    def summary(self) -> TunnelSummary:
        return TunnelSummary(state=self.state, kind=self.kind, interfaces=list(self.interfaces))

    @property
    def up(self) -> bool:
        return self.state == "up"

    def is_tunnel_interface(self, name: str | None) -> bool:
        return name is not None and name in self.interfaces


def link_kind(link: Link, state: NetState) -> str | None:
    """The tunnel kind of one link, or None if it is not a tunnel."""
    if link.kind in NOT_TUNNEL_KINDS or link.name == "lo":
        return None
    if any(wg.ifname == link.name for wg in state.wireguard):
        return "wireguard"
    if link.kind in TUNNEL_KINDS and link.kind != "tun":
        return TUNNEL_KINDS[link.kind]
    for pattern, kind in NAME_KINDS:
        if fnmatch.fnmatchcase(link.name, pattern):
            return kind
    return "tun" if link.kind == "tun" else None


def detect(state: NetState, config: Config) -> Tunnel:
    configured = config.get("tunnel", "interfaces")
    if configured:
        links = [l for l in state.links if config.tunnel_interface_matches(l.name)]
        kinds = {l.name: (link_kind(l, state) or "other") for l in links}
    else:
        kinds = {}
        links = []
        for link in state.links:
            kind = link_kind(link, state)
            if kind:
                kinds[link.name] = kind
                links.append(link)
    policy_ipsec = any(p.protects for p in state.out_policies())
    if links:
        # an address beyond IPv6 link-local: macOS keeps idle system utun
        # interfaces (utun0, utun1...) up with nothing but fe80:: on them
        up = [l for l in links if l.usable and any(not (a.address.version == 6 and a.address.is_link_local)
                                                   for a in state.addresses_of(l.name))]
        shown = up or links
        kind = _dominant({kinds[l.name] for l in shown})
        return Tunnel(state="up" if up else "down", kind=kind,
                      interfaces=tuple(l.name for l in shown), policy_ipsec=policy_ipsec)
    if policy_ipsec:
        # The kernel enforces the policies whether or not SAs are negotiated yet:
        # uncovered traffic is held back, so the tunnel is in force.
        return Tunnel(state="up", kind="ipsec", interfaces=(), policy_ipsec=True)
    return Tunnel(state="absent", kind="none", interfaces=())


def _dominant(kinds: set[str]) -> str:
    for kind in ("wireguard", "ipsec", "tun", "ppp", "other"):
        if kind in kinds:
            return kind
    return "other"


def vpn_endpoints(state: NetState, tunnel: Tunnel | None = None) -> set[str]:
    """Addresses of the VPN servers: WireGuard peers, IPsec tunnel peers, and
    the servers of tun/tap/ppp clients (the remote ends of the sockets of the
    process holding the device: leakcheck/linux/tunowners.py). With `tunnel`,
    only the servers of its interfaces (and IPsec's when it is policy-based)."""
    def ours(ifname: str) -> bool:
        return tunnel is None or tunnel.is_tunnel_interface(ifname)

    endpoints = {ep for wg in state.wireguard if ours(wg.ifname) for ep in wg.endpoints}
    endpoints |= {ep for owner in state.tunnel_owners if ours(owner.ifname) for ep in owner.endpoints}
    if tunnel is None or tunnel.policy_ipsec or tunnel.kind == "ipsec":
        endpoints |= {t.dst for p in state.out_policies() if p.protects for t in p.templates if t.dst}
    endpoints |= set(state.vpn_servers)  # macOS / Windows backends (leakcheck/platform)
    return endpoints


def vpn_marks(state: NetState) -> set[int]:
    """Firewall marks the VPN puts on its own packets (wg-quick's fwmark)."""
    return {wg.fwmark for wg in state.wireguard if wg.fwmark}


def tunnel_routes(state: NetState, tunnel: Tunnel, family: int | None = None) -> list:
    """Unicast routes (any table) whose next hop is a tunnel interface."""
    return [r for r in state.routes_in(family=family)
            if r.type == "unicast" and any(tunnel.is_tunnel_interface(n) for n in r.ifnames)]


def carries_family(state: NetState, tunnel: Tunnel, family: int) -> bool:
    """Does the tunnel carry any public address space of this IP family?
    (A link-local or the tunnel's own ULA route does not count.)"""
    from leakcheck.addrspace import first_public_address

    if not tunnel.up:
        return False
    if any(first_public_address(r.dst) is not None for r in tunnel_routes(state, tunnel, family)):
        return True
    return any(p.protects and first_public_address(p.dst) is not None for p in state.out_policies(family))


def covering_tunnel_route(state: NetState, tunnel: Tunnel, addr, shorter_than: int):
    """The most specific tunnel route (or protecting xfrm policy) that covers
    `addr` with a prefix shorter than `shorter_than`: what the VPN meant to
    carry. None if the tunnel never meant to carry the address."""
    best = None
    for route in tunnel_routes(state, tunnel, addr.version):
        if addr in route.dst and route.dst.prefixlen < shorter_than:
            if best is None or route.dst.prefixlen > best.dst.prefixlen:
                best = route
    if best is not None:
        return best
    for policy in state.out_policies(addr.version):
        if policy.protects and addr in policy.dst and policy.dst.prefixlen < shorter_than:
            return policy
    return None


def carries_default(state: NetState, tunnel: Tunnel, family: int) -> bool:
    """Does the tunnel take this family's default path (0/0, or two /1s as
    OpenVPN's def1 does, or an xfrm policy that broad)?"""
    if not tunnel.up:
        return False
    if any(r.dst.prefixlen <= 1 for r in tunnel_routes(state, tunnel, family)):
        return True
    return any(p.protects and p.dst.prefixlen <= 1 for p in state.out_policies(family))


def family_gap(state: NetState, tunnel: Tunnel, family: int) -> bool:
    """A full tunnel for the other IP family that carries none of this one:
    the case the ipv6 probe owns (routes and split leave this family to it).
    A tunnel split for both families is the split probe's, not this."""
    other = 6 if family == 4 else 4
    return carries_default(state, tunnel, other) and not carries_family(state, tunnel, family)
