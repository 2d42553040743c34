"""Does IPv6 leave outside a tunnel that only carries IPv4 (or IPv4 outside
an IPv6-only tunnel)?

The most common leak measured at scale: an IPv4-only VPN next to a working
IPv6 path. For each family the tunnel does not carry, the egress verdict
(route, xfrm, firewall) is asked where traffic of that family goes: to the
configured canaries, or to built-in public destinations when the config
lists none (what is looked at never depends on the canary list; test
packets go to configured canaries only). A leak needs both a direct path
and a global source address on that interface. A link-local address or
router solicitations alone are not a leak; IPv6 disabled or blackholed is
a pass.

- `ipv6.ipv6-outside-ipv4-only-tunnel`: IPv6 has a direct path beside an
  IPv4-only tunnel.
- `ipv6.ipv4-outside-ipv6-only-tunnel`: the reverse.
- `ipv6.direct-route-without-global-address` (warn): a direct route exists
  but no global address to use it yet (e.g. waiting for a router
  advertisement); it becomes a leak as soon as one arrives.

Skipped when no tunnel is up (the routes probe reports every family then).
"""

from __future__ import annotations

from leakcheck.active import Probe as ActivePacket
from leakcheck.addrspace import is_public
from leakcheck.errors import ProbeSkipped
from leakcheck.oracle import Egress, confirm
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance
from leakcheck.tunnel import family_gap

FAMILY = {4: "IPv4", 6: "IPv6"}
LEAK_IDS = {6: "ipv6.ipv6-outside-ipv4-only-tunnel", 4: "ipv6.ipv4-outside-ipv6-only-tunnel"}


class Ipv6Probe(Probe):
    """IPv6 beside an IPv4-only tunnel, and IPv4 beside an IPv6-only one."""

    name = "ipv6"
    leak_class = "one IP family leaving outside a tunnel that carries only the other"
    finding_ids = ("ipv6.ipv6-outside-ipv4-only-tunnel", "ipv6.ipv4-outside-ipv6-only-tunnel",
                   "ipv6.direct-route-without-global-address")
    checks = ("full-tunnel",)

    def run(self, ctx: ProbeContext) -> list[Finding]:
        if not ctx.tunnel.up:
            raise ProbeSkipped("no tunnel is up (the routes probe reports where each family goes)")
        findings = []
        for family, other in ((6, 4), (4, 6)):
            if not family_gap(ctx.state, ctx.tunnel, family):
                continue
            finding = self._check_family(ctx, family, other)
            if finding is not None:
                findings.append(finding)
        return findings

    def _check_family(self, ctx: ProbeContext, family: int, other: int) -> Finding | None:
        # the family's internet, whatever the canaries say: built-in destinations stand in
        targets, origin = ctx.destinations(family)
        egresses = ctx.oracle.egress_many([ctx.oracle.query(t) for t in targets])
        candidates = [e for e in egresses if not ctx.is_allowed_direct(e.destination)]
        # test packets only to configured canaries: they add evidence, they do not decide
        sent = [e for e in candidates if origin == "config"]
        observations = ctx.observe([ActivePacket("udp", str(e.destination), 33434) for e in sent]) or []
        seen = dict(zip([e.destination for e in sent], observations))
        leaking = []
        for egress in candidates:
            obs = seen.get(egress.destination)
            leaks, method = confirm(egress, obs)
            if leaks:
                leaking.append((egress, obs, method))
        if not leaking:
            return None  # disabled, blackholed, firewalled or unreachable: nothing can leave
        first, obs, method = leaking[0]
        sources = [str(a.address) for a in ctx.state.addresses_of(first.interface or "", family)
                   if is_public(a.address)]
        evidence = {"family": FAMILY[family], "tunnel_carries": FAMILY[other],
                    "destinations": [str(e.destination) for e, _, _ in leaking], "destinations_from": origin,
                    "addresses": sources,
                    "accept_ra": ctx.state.sysctls.get(f"net.ipv6.conf.{first.interface}.accept_ra"),
                    **first.evidence(), "method": method}
        if obs is not None:
            evidence["observed"] = obs.evidence()
        if not sources:
            return self._no_address_finding(family, other, first, evidence)
        summary = (f"The tunnel carries only {FAMILY[other]}, but {FAMILY[family]} traffic (to "
                   f"{first.destination}) goes {first.describe()} from {', '.join(sources)}: "
                   f"your real {FAMILY[family]} address is exposed."
                   + (f" Observed: a test packet left {', '.join(obs.clear_on)} in clear."
                      if method == "observed" and obs is not None else ""))
        fix = (f"Carry {FAMILY[family]} in the tunnel too (route ::/0 or 0.0.0.0/0 into it), or block "
               f"{FAMILY[family]} outside the tunnel while the VPN is up (firewall drop, or disable "
               f"{FAMILY[family]} on {first.interface}).")
        return self.finding(LEAK_IDS[family], Severity.CRITICAL, summary, evidence, fix, Guidance.FULL_TUNNEL)

    def _no_address_finding(self, family: int, other: int, egress: Egress, evidence: dict) -> Finding:
        summary = (f"The tunnel carries only {FAMILY[other]}; {FAMILY[family]} has a direct route "
                   f"({egress.describe()}) but no global address yet, so nothing leaks now. It will as "
                   f"soon as the network hands out an address.")
        fix = f"Block or blackhole {FAMILY[family]} outside the tunnel while the VPN is up."
        return self.finding("ipv6.direct-route-without-global-address", Severity.MEDIUM, summary, evidence,
                            fix, Guidance.FULL_TUNNEL, Effect.WARN)
