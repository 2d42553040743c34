"""Where does internet traffic go: into the tunnel, or out of a physical
interface on a direct route?

Asks the egress verdict (the kernel's route lookup with policy rules, the
way an application's packet is routed, then xfrm policies and the
firewall) for every configured canary destination (built-in public
destinations when a family lists none), then for an address inside every
non-tunnel route of every table. A route the firewall's kill switch holds
shut is not a leak:

- `routes.default-route-outside-tunnel`: internet traffic (the canaries)
  leaves a physical interface in clear: no tunnel, tunnel down, or the
  default path bypasses it. Under `policy.allow_split = true` with the
  tunnel up this is reported as info.
- `routes.more-specific-route-outside-tunnel`: a route on a physical
  interface is more specific than the tunnel's covering route and wins
  (TunnelVision, CVE-2024-3661: DHCP option 121 pushes; wg-quick's
  `suppress_prefixlength 0` rule lets any non-default main-table route win).
  The route's protocol (e.g. `proto dhcp`) is in the evidence.
- `routes.public-local-network`: an on-link "local network" whose prefix is
  public address space, so traffic to those public addresses skips the
  tunnel (LocalNet, TunnelCrack, CVE-2023-36672).
- `routes.server-route-any-process`: the route to the VPN server is usable
  by every process, not only the VPN's own marked packets (ServerIP,
  TunnelCrack, CVE-2023-36673). Low severity: it exposes that one address;
  the probe still passes.

Managed exceptions (`policy.allowed_direct`) are never findings. An IPv6
default path beside an IPv4-only tunnel (and the reverse) belongs to the
`ipv6` probe; prefixes a split tunnel leaves out belong to `split`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from leakcheck.active import Observation
from leakcheck.active import Probe as ActivePacket
from leakcheck.addrspace import first_public_address
from leakcheck.netstate import Route
from leakcheck.oracle import Egress, Path, confirm
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance
from leakcheck.tunnel import covering_tunnel_route, family_gap, vpn_endpoints

FAMILY = {4: "IPv4", 6: "IPv6"}


@dataclass(frozen=True)
class Canary:
    """One canary destination: the kernel's answer and, when active checks
    run, what a real test packet did."""

    egress: Egress
    observation: Observation | None
    leaks: bool
    method: str  # observed | inferred


@dataclass(frozen=True)
class Suspect:
    """A physical route the kernel uses for addresses the tunnel meant to carry."""

    route: Route
    egress: Egress
    covering: Any  # the tunnel route or xfrm policy it beats, or None (public LAN)
    on_link: bool


class RoutesProbe(Probe):
    """Is internet traffic routed into the tunnel? Default path, TunnelVision
    routes, public "local networks" and the VPN server route."""

    name = "routes"
    leak_class = "internet traffic on a direct route instead of the tunnel"
    finding_ids = ("routes.default-route-outside-tunnel", "routes.more-specific-route-outside-tunnel",
                   "routes.public-local-network", "routes.server-route-any-process")
    checks = ("full-tunnel", "exceptions")

    def run(self, ctx: ProbeContext) -> list[Finding]:
        endpoints = vpn_endpoints(ctx.state)
        canary_egresses = self._canary_egresses(ctx)
        suspects = self._suspect_routes(ctx, endpoints)
        # one capture window: a test packet to every configured canary and into every suspect
        # route (built-in destinations are only asked of the egress verdict)
        configured = {c for family in (4, 6) for c in ctx.canaries(family)}
        targets = [e.destination for e in canary_egresses if e.destination in configured]
        targets += [s.egress.destination for s in suspects]
        observations = ctx.observe([ActivePacket("udp", str(t), 33434) for t in targets]) or []
        seen = dict(zip(targets, observations))
        canaries = [Canary(e, seen.get(e.destination), *confirm(e, seen.get(e.destination)))
                    for e in canary_egresses]
        findings, flagged = [], set()
        for suspect in suspects:
            obs = seen.get(suspect.egress.destination)
            leaks, method = confirm(suspect.egress, obs)
            if leaks:
                findings.append(self._route_finding(suspect, obs, method, canaries))
                flagged.add(suspect.route.dst)
        return self._canaries(ctx, canaries, flagged) + findings + self._server_routes(ctx, endpoints)

    # -- canaries: the default path -------------------------------------------------

    def _canary_egresses(self, ctx: ProbeContext) -> list[Egress]:
        return [e for family in (4, 6)
                # a family the tunnel does not carry belongs to the ipv6 probe
                if not family_gap(ctx.state, ctx.tunnel, family)
                for e in ctx.oracle.egress_many([ctx.oracle.query(t) for t in ctx.destinations(family)[0]])]

    def _canaries(self, ctx: ProbeContext, canaries: list[Canary], flagged: set[Any]) -> list[Finding]:
        findings = []
        for family in (4, 6):
            leaking = [c for c in canaries if c.egress.destination.version == family and c.leaks
                       and not ctx.is_allowed_direct(c.egress.destination)
                       and not (c.egress.route is not None and c.egress.route.dst in flagged)]
            if leaking:
                findings.append(self._default_finding(ctx, family, leaking))
        return findings

    def _default_finding(self, ctx: ProbeContext, family: int, leaking: list[Canary]) -> Finding:
        first, obs, method = leaking[0].egress, leaking[0].observation, leaking[0].method
        where = first.describe()
        targets = ", ".join(str(c.egress.destination) for c in leaking)
        tunnel = ctx.tunnel
        policy_split = tunnel.up and ctx.config.get("policy", "allow_split")
        if tunnel.state == "absent":
            summary = (f"No VPN tunnel was found: {FAMILY[family]} internet traffic (to {targets}) "
                       f"goes {where}.")
            fix = "Connect the VPN (and set it to connect automatically and block traffic while it is down)."
        elif tunnel.state == "down":
            summary = (f"The VPN tunnel ({', '.join(tunnel.interfaces)}) is down and {FAMILY[family]} "
                       f"internet traffic (to {targets}) goes {where}.")
            fix = ("Reconnect the VPN; enable its kill switch (always-on / block traffic without VPN) "
                   "so nothing leaves while it is down.")
        else:
            summary = (f"{FAMILY[family]} internet traffic (to {targets}) bypasses the tunnel: it goes "
                       f"{where}.")
            fix = (f"Route all {FAMILY[family]} traffic into the tunnel (a default or 0/1 + 128/1 route via "
                   f"the tunnel, or AllowedIPs covering everything) and add a kill switch.")
        if method == "observed" and obs is not None:
            summary += f" Observed: a test packet left {', '.join(obs.clear_on)} in clear."
        if policy_split:
            summary += " Split tunnelling is allowed by policy (policy.allow_split)."
        evidence = {"family": FAMILY[family], "tunnel_state": tunnel.state, "method": method,
                    "destinations": [str(c.egress.destination) for c in leaking], **first.evidence()}
        if obs is not None:
            evidence["observed"] = obs.evidence()
        return self.finding("routes.default-route-outside-tunnel",
                            Severity.INFO if policy_split else Severity.CRITICAL, summary, evidence, fix,
                            Guidance.FULL_TUNNEL, Effect.INFO if policy_split else Effect.LEAK)

    # -- routes on physical interfaces that win over the tunnel ----------------------

    def _candidates(self, ctx: ProbeContext, endpoints: set[str]) -> list[tuple[Route, Any]]:
        out = []
        for route in ctx.state.routes:
            if route.type != "unicast" or route.is_default or route.table == 255 or not route.ifnames:
                continue
            if any(ctx.tunnel.is_tunnel_interface(n) or n == "lo" for n in route.ifnames):
                continue
            if route.dst.prefixlen == route.dst.max_prefixlen and str(route.dst.network_address) in endpoints:
                continue  # the VPN server's own route: see _server_routes
            probe_addr = first_public_address(route.dst)
            if probe_addr is not None:
                out.append((route, probe_addr))
        return out

    def _suspect_routes(self, ctx: ProbeContext, endpoints: set[str]) -> list[Suspect]:
        """Routes on physical interfaces that the kernel really uses for public
        addresses the tunnel meant to carry (or a public on-link LAN)."""
        if not ctx.tunnel.up:
            return []  # without a tunnel every route is direct: the default finding says so
        own_lans = ctx.state.own_ipv6_lans()
        candidates = [(r, a) for r, a in self._candidates(ctx, endpoints) if r.dst not in own_lans]
        egresses = ctx.oracle.egress_many([ctx.oracle.query(a) for _, a in candidates])
        allow_split = ctx.config.get("policy", "allow_split")
        suspects = []
        for (route, addr), egress in zip(candidates, egresses):
            if not egress.outside_tunnel or egress.route is None or egress.route.dst != route.dst:
                continue  # the kernel does not actually use this route for it
            if ctx.is_allowed_direct(route.dst):
                continue
            covering = covering_tunnel_route(ctx.state, ctx.tunnel, addr, route.dst.prefixlen)
            on_link = not any(h.gateway for h in route.nexthops)
            if covering is None and (allow_split or not on_link):
                continue  # a prefix the tunnel never meant to carry: the split probe reports it
            suspects.append(Suspect(route, egress, covering, on_link))
        return suspects

    def _route_finding(self, suspect: Suspect, obs: Observation | None, method: str,
                       canaries: list[Canary]) -> Finding:
        route, egress, covering = suspect.route, suspect.egress, suspect.covering
        evidence = {**route.evidence(), **egress.evidence(), "probe_address": str(egress.destination),
                    "canaries_affected": [str(c.egress.destination) for c in canaries
                                          if c.egress.destination in route.dst],
                    "method": method}
        evidence["route"] = route.describe()
        if obs is not None:
            evidence["observed"] = obs.evidence()
        observed = (f" Observed: a test packet to {obs.probe.dst} left {', '.join(obs.clear_on)} in clear."
                    if method == "observed" and obs is not None else "")
        if covering is not None:
            evidence["covering_route"] = covering.describe()
        iface = ", ".join(route.ifnames)
        if suspect.on_link:
            summary = (f"The local network {route.dst} on {iface} is public address space, so traffic to "
                       f"those public addresses goes straight out of {iface} instead of the tunnel "
                       f"(LocalNet attack, TunnelCrack).{observed}")
            fix = (f"Do not exempt public 'local network' prefixes from the VPN: disable LAN access in "
                   f"the VPN client, or exempt only private ranges; treat {route.dst} on this network as hostile.")
            return self.finding("routes.public-local-network", Severity.HIGH, summary, evidence, fix,
                                Guidance.EXCEPTIONS)
        than = f" ({covering.describe()})" if covering is not None else ""
        cause = (" (TunnelVision, CVE-2024-3661: pushed by DHCP option 121)" if route.protocol == "dhcp"
                 else " (a TunnelVision-style route)")
        summary = (f"A route on {iface} ({route.describe()}) is more specific than the tunnel's route{than} "
                   f"and wins: traffic to {route.dst} goes {egress.describe()}{cause}.{observed}")
        fix = (f"Remove the route ({route.describe()}); stop accepting classless static routes "
               f"(DHCP option 121) on untrusted networks, and add a firewall kill switch that drops "
               f"traffic leaving {iface} except to the VPN server.")
        return self.finding("routes.more-specific-route-outside-tunnel", Severity.HIGH, summary, evidence,
                            fix, Guidance.FULL_TUNNEL)

    # -- the VPN server's own route (ServerIP) ---------------------------------------

    def _server_routes(self, ctx: ProbeContext, endpoints: set[str]) -> list[Finding]:
        if not ctx.tunnel.up or not endpoints:
            return []
        ordered = sorted(endpoints)
        egresses = ctx.oracle.egress_many([ctx.oracle.query(e) for e in ordered])
        findings = []
        for egress in egresses:
            if not egress.outside_tunnel:
                continue
            summary = (f"Any program can reach the VPN server {egress.destination} outside the tunnel "
                       f"({egress.describe()}), not only the VPN itself. An attacker who spoofs DNS for "
                       f"the server name can steer traffic for one chosen address this way (ServerIP, "
                       f"TunnelCrack).")
            fix = ("Limit the bypass to the VPN's own packets (a firewall mark and policy rule, as "
                   "wg-quick does) instead of a host route every process can use; pin the server by "
                   "IP address or resolve its name over a trusted channel.")
            findings.append(self.finding("routes.server-route-any-process", Severity.LOW, summary,
                                         {"endpoint": str(egress.destination), **egress.evidence()}, fix,
                                         Guidance.EXCEPTIONS, Effect.INFO))
        return findings
