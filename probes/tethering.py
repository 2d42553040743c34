"""Is traffic from tethered, hotspot or bridged clients forwarded out of a
physical interface instead of the tunnel?

Forwarded packets have no owning app, so per-user rules and many kill
switches (OUTPUT-only firewalls) do not describe them. Every downstream
interface is found: a link that is not the tunnel, not loopback, not a way
to the internet (no default route of any table) and has an address, i.e. a
network behind it: USB tethering (usb0, rndis0), a Wi-Fi hotspot (AP mode),
a bridge (VMs, containers, hotspots), a veth into another namespace. For
each, the kernel is asked where a packet from a client on that network
(a source address from the interface's subnet, arriving on it: `iif`) to
each canary is forwarded; the forwarding sysctls and the firewall's forward
chains decide whether it gets out at all, and source NAT rules whether
clients get answers.

- `tethering.forwarded-outside-tunnel`: clients' traffic is forwarded out
  of a physical interface in clear (with or without NAT; without NAT their
  own addresses leave as they are). Under `policy.allow_split = true`, when
  this host's own traffic to the same destination also leaves directly,
  it is info.
- `tethering.downstream-interfaces` (info): the downstream interfaces found
  and what happens to their traffic (forwarded into the tunnel, not
  forwarded, dropped by the firewall).

Passes: no downstream interface, forwarding off, forwarded into the tunnel
(or covered by IPsec policy), or dropped by a forward-chain rule. Evidence
is the kernel's forwarding decision ("method": "inferred"): a forwarded
packet cannot be sent through the socket API.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from leakcheck.netstate import Address, Firewall, Link, NetState
from leakcheck.oracle import Egress, FirewallDecision, Layer, Path
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance
from leakcheck.tunnel import vpn_endpoints

FAMILY = {4: "IPv4", 6: "IPv6"}
USB_NAMES = ("usb*", "rndis*", "ncm*", "ecm*")
AP_NAMES = ("ap*", "uap*", "wlan*_ap", "swlan*", "softap*")
BRIDGE_PORT_MASTERS = {"bridge", "bond", "team", "vrf"}


@dataclass
class Downstream:
    link: Link
    role: str
    networks: dict[int, Any] = field(default_factory=dict)  # family -> network behind it
    client: dict[int, Any] = field(default_factory=dict)  # family -> a client source address


@dataclass
class Outcome:
    """Where one family of a downstream network's traffic goes."""

    downstream: Downstream
    family: int
    forwarding: bool
    sysctls: dict[str, str | None]
    leaking: list[Egress] = field(default_factory=list)  # forwarded out in clear
    tunnelled: list[Egress] = field(default_factory=list)
    blocked: list[tuple[Egress, FirewallDecision | None]] = field(default_factory=list)
    firewall: FirewallDecision | None = None
    nat: list[str] = field(default_factory=list)
    host_also_direct: bool = False

    @property
    def state(self) -> str:
        if not self.forwarding:
            return "not forwarded (forwarding is off)"
        if self.leaking:
            return f"forwarded out of {self.leaking[0].interface} in clear"
        if self.tunnelled:
            return f"forwarded {self.tunnelled[0].describe()}"
        if self.blocked:
            verdict = self.blocked[0][1]
            if verdict is not None:
                return "dropped by the firewall's forward chain"
            return f"not forwarded ({self.blocked[0][0].describe()})"
        return "no canary to ask about"


class TetheringProbe(Probe):
    """Tethered, hotspot and bridged clients: is their forwarded traffic kept in the tunnel?"""

    name = "tethering"
    leak_class = "traffic of tethered, hotspot or bridged clients forwarded outside the tunnel"
    finding_ids = ("tethering.forwarded-outside-tunnel", "tethering.downstream-interfaces")
    checks = ("full-tunnel",)

    def run(self, ctx: ProbeContext) -> list[Finding]:
        downstream = find_downstream(ctx)
        if not downstream:
            return []
        fw = ctx.state.firewall
        outcomes = [self._outcome(ctx, d, family, fw) for d in downstream for family in sorted(d.networks)]
        findings = [self._leak_finding(ctx, o, fw) for o in outcomes if o.leaking]
        findings.append(self._inventory(outcomes))
        return findings

    def _outcome(self, ctx: ProbeContext, down: Downstream, family: int, fw: Firewall | None) -> Outcome:
        forwarding, sysctls = forwarding_on(ctx.state, down.link.name, family)
        outcome = Outcome(down, family, forwarding, sysctls)
        targets = [t for t in ctx.destinations(family)[0] if not ctx.is_allowed_direct(t)]
        if not forwarding or not targets:
            return outcome
        client = down.client[family]
        queries = [ctx.oracle.query(t, iif=down.link.name, src=client) for t in targets]
        # the egress verdict with iif: the forwarding decision, then the forward chains
        egresses = ctx.oracle.egress_many(queries)
        for query, egress in zip(queries, egresses):
            if egress.path is Path.BLOCKED and egress.decided_by is Layer.FIREWALL:
                outcome.blocked.append((egress, egress.firewall))
            elif egress.path is Path.CLEAR:
                outcome.firewall = outcome.firewall or egress.firewall
                outcome.leaking.append(egress)
                if not outcome.nat and fw is not None:
                    outcome.nat = [r.text for r in ctx.oracle.nat_rules(query, egress.interface)]
            elif egress.path in (Path.TUNNEL, Path.PROTECTED):
                outcome.tunnelled.append(egress)
            else:
                outcome.blocked.append((egress, None))
        if outcome.leaking:
            first = outcome.leaking[0]
            host = ctx.oracle.egress(first.destination)
            outcome.host_also_direct = host.path is Path.CLEAR
        return outcome

    # -- findings -------------------------------------------------------------------

    def _leak_finding(self, ctx: ProbeContext, outcome: Outcome, fw: Firewall | None) -> Finding:
        down, family, first = outcome.downstream, outcome.family, outcome.leaking[0]
        net = down.networks[family]
        policy_split = bool(ctx.config.get("policy", "allow_split")) and outcome.host_also_direct and ctx.tunnel.up
        if fw is None or not fw.sources:
            nat = " (NAT rules could not be read without root)"
        elif outcome.nat:
            nat = f", source-NATed ({outcome.nat[0]}) so they get answers"
        else:
            nat = " (no source NAT rule seen: their own addresses leave as they are)"
        summary = (f"{FAMILY[family]} traffic from clients on {down.link.name} ({down.role}, {net}) is forwarded "
                   f"{first.describe()}{nat}: tethered and bridged devices bypass the VPN.")
        if not ctx.tunnel.up:
            summary += (" No VPN tunnel is up, and nothing in the forward path stops it (a kill switch that "
                        "filters only this machine's own output does not cover forwarded traffic).")
        if policy_split:
            summary += " Split tunnelling is allowed by policy (policy.allow_split)."
        evidence: dict[str, Any] = {
            "downstream_interface": down.link.name, "role": down.role, "family": FAMILY[family],
            "client_network": str(net), "client_address_used": str(down.client[family]),
            "forwarding": outcome.sysctls, "destinations": [str(e.destination) for e in outcome.leaking],
            "nat_rules": outcome.nat, "method": "inferred", **first.evidence(),
        }
        evidence["decided_by"] = "kernel forwarding decision (RTM_GETROUTE with iif and src)"
        evidence["firewall_forward"] = (outcome.firewall.evidence() if outcome.firewall is not None else
                                        {"result": "not readable", "note": "; ".join(fw.unreadable) if fw else
                                         "the firewall was not read"})
        fix = (f"Send forwarded traffic from {down.link.name} into the tunnel (a rule 'from {net} lookup <the "
               f"VPN's table>' or the tunnel as default route, NAT out of the tunnel), or stop sharing the "
               f"connection; a forward-chain kill switch that drops {down.link.name} -> "
               f"{first.interface} stops it either way.")
        return self.finding("tethering.forwarded-outside-tunnel",
                            Severity.INFO if policy_split else Severity.HIGH, summary, evidence, fix,
                            Guidance.FULL_TUNNEL, Effect.INFO if policy_split else Effect.LEAK)

    def _inventory(self, outcomes: list[Outcome]) -> Finding:
        entries = []
        for o in outcomes:
            entry: dict[str, Any] = {"interface": o.downstream.link.name, "role": o.downstream.role,
                                     "family": FAMILY[o.family], "network": str(o.downstream.networks[o.family]),
                                     "forwarding": o.sysctls, "outcome": o.state}
            if o.blocked and o.blocked[0][1] is not None:
                entry["firewall_forward"] = o.blocked[0][1].evidence()  # type: ignore[union-attr]
            entries.append(entry)
        text = "; ".join(f"{e['interface']} ({e['role']}, {e['family']} {e['network']}): {e['outcome']}"
                         for e in entries)
        return self.finding("tethering.downstream-interfaces", Severity.INFO,
                            f"Downstream networks found: {text}.", {"downstream": entries}, "",
                            Guidance.FULL_TUNNEL, Effect.INFO)


# ---------------------------------------------------------------- downstream interfaces

def upstream_interfaces(ctx: ProbeContext) -> set[str]:
    """Ways to the internet: non-tunnel interfaces with a default route (any table) or a
    route to the VPN server."""
    names = {n for r in ctx.state.routes if r.is_default and r.type == "unicast" for n in r.ifnames}
    endpoints = [ipaddress.ip_address(e) for e in vpn_endpoints(ctx.state)]
    for route in ctx.state.routes:
        if route.type == "unicast" and route.table != 255 and any(e in route.dst for e in endpoints) \
                and route.dst.prefixlen > 0:
            names.update(route.ifnames)
    return {n for n in names if not ctx.tunnel.is_tunnel_interface(n)}


def find_downstream(ctx: ProbeContext) -> list[Downstream]:
    state = ctx.state
    upstream = upstream_interfaces(ctx)
    out = []
    for link in state.links:
        if (link.name == "lo" or not link.usable or link.name in upstream
                or ctx.tunnel.is_tunnel_interface(link.name) or _is_port(state, link)):
            continue
        down = Downstream(link, role_of(state, link))
        for family in (4, 6):
            address = _client_side(state.addresses_of(link.name, family))
            if address is None:
                continue
            client = client_address(address)
            if client is not None:
                down.networks[family], down.client[family] = address.network, client
        if down.networks:
            out.append(down)
    return out


def _is_port(state: NetState, link: Link) -> bool:
    """A bridge/bond port: traffic arrives on its master, which is checked instead."""
    master = state.link(link.master) if link.master else None
    return master is not None and (master.kind or "") in BRIDGE_PORT_MASTERS


def _client_side(addresses: list[Address]) -> Address | None:
    """The address whose subnet holds the clients: global scope, room for another host."""
    for address in addresses:
        ip = address.address
        if address.scope != 0 or ip.is_link_local or ip.is_loopback:
            continue
        if address.prefixlen >= ip.max_prefixlen - 1:
            continue  # a point-to-point /31 or /32: no subnet of clients behind it
        return address
    return None


def client_address(address: Address) -> Any:
    """Another host on the interface's subnet: the source a client would use."""
    net = address.network
    for offset in (2, 3, 1, 4):
        candidate = net.network_address + offset
        if candidate != address.address and candidate in net and candidate != getattr(net, "broadcast_address", None):
            return candidate
    return None


def role_of(state: NetState, link: Link) -> str:
    detail = state.link_detail(link.name)
    name = link.name
    if any(fnmatch.fnmatchcase(name, p) for p in USB_NAMES) or (detail and detail.devtype == "gadget") or \
            (detail and detail.driver in ("g_ether", "usb_f_rndis", "usb_f_ecm", "usb_f_ncm")):
        return "USB tethering"
    if (detail and (detail.wireless_mode or "").lower() == "ap") or any(fnmatch.fnmatchcase(name, p) for p in AP_NAMES):
        return "Wi-Fi hotspot (AP mode)"
    if link.kind == "bridge" or (detail and detail.devtype == "bridge"):
        return "bridge (VMs, containers or a hotspot)"
    if link.kind == "veth":
        return "veth into another namespace (container)" if detail and detail.peer_elsewhere else "veth"
    if detail and detail.devtype == "wlan":
        return "Wi-Fi"
    return f"{link.kind or 'ethernet'} network"


def forwarding_on(state: NetState, ifname: str, family: int) -> tuple[bool, dict[str, str | None]]:
    """IPv4: net.ipv4.ip_forward and the input interface's conf.<if>.forwarding; IPv6:
    net.ipv6.conf.all.forwarding. Unknown values count as on (the kernel's answer decides)."""
    if family == 4:
        keys = ["net.ipv4.ip_forward", f"net.ipv4.conf.{ifname}.forwarding"]
    else:
        keys = ["net.ipv6.conf.all.forwarding", f"net.ipv6.conf.{ifname}.forwarding"]
    values = {k: state.sysctls.get(k) for k in keys}
    decisive = keys if family == 4 else keys[:1]
    return all(values[k] != "0" for k in decisive), values
