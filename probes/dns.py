"""Can DNS queries reach a resolver outside the tunnel?

Every resolver the system would use is collected (`/etc/resolv.conf`; when
it points at systemd-resolved's stub, the per-link servers with their
routing domains), and the kernel is asked where a DNS packet (UDP port 53)
to each one would leave:

- `dns.resolver-outside-tunnel`: a resolver that receives ordinary queries
  is reached outside the tunnel (the hotel/ISP resolver, a per-link server
  with `~.` or DefaultRoute on a physical link), or a local stub resolver
  (dnsmasq, unbound on 127.0.0.x) whose forwarders sent the unique test
  lookup out of a physical interface in clear: the evidence names the
  stub and the process listening on it, its upstream and the packet.
- `dns.scoped-resolver-outside-tunnel` (warn): a per-link resolver outside
  the tunnel that only receives queries for its own routing domains.
- `dns.local-resolver-unverified` (warn): queries go to a local resolver
  whose upstream servers the system does not tell.
- `dns.no-resolver` (warn): no resolver is configured at all.

Managed exceptions (`policy.allowed_direct`) are not findings.
"""

from __future__ import annotations

from typing import Any

from leakcheck.active import Observation
from leakcheck.active import Probe as ActivePacket
from leakcheck.active import unique_name
from leakcheck.netstate import Resolver
from leakcheck.oracle import Egress, Path
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance

UDP = 17
DNS_PORT = 53


class DnsProbe(Probe):
    """Does each resolver the system uses sit behind the tunnel?"""

    name = "dns"
    leak_class = "DNS queries reaching a resolver outside the tunnel"
    finding_ids = ("dns.resolver-outside-tunnel", "dns.scoped-resolver-outside-tunnel",
                   "dns.local-resolver-unverified", "dns.no-resolver")
    checks = ("dns",)

    def run(self, ctx: ProbeContext) -> list[Finding]:
        resolvers = list(ctx.state.resolvers)
        if not resolvers:
            return [self.finding("dns.no-resolver", Severity.LOW, "No DNS resolver is configured.",
                                 {"sources": ["/etc/resolv.conf"]}, "Configure the VPN's resolver.",
                                 Guidance.DNS, Effect.WARN)]
        local = [r for r in resolvers if r.address.is_loopback]
        remote = [r for r in resolvers if not r.address.is_loopback]
        observed = self._active_query(ctx)
        findings: list[Finding] = []
        for resolver in local:
            finding = self._local_finding(ctx, resolver, observed)
            if finding is not None:
                findings.append(finding)
        queries = [ctx.oracle.query(r.address, ipproto=UDP, dport=DNS_PORT) for r in remote]
        for resolver, egress in zip(remote, ctx.oracle.egress_many(queries)):
            finding = self._judge(ctx, resolver, egress, observed)
            if finding is not None:
                findings.append(finding)
        if observed is not None and observed.outcome == "clear" and not any(
                f.id == "dns.resolver-outside-tunnel" for f in findings):
            findings.append(self._observed_finding(ctx, observed, local))
        return findings

    def _active_query(self, ctx: ProbeContext) -> Observation | None:
        """A unique name through the system resolver, captured on every interface."""
        nonce, name = unique_name(ctx.config.get("canaries", "dns_zone"))
        seen = ctx.observe([ActivePacket("dns", "", qname=name, nonce=nonce)])
        return seen[0] if seen else None

    def _observed_finding(self, ctx: ProbeContext, obs: Observation, local: list[Resolver]) -> Finding:
        where = ", ".join(obs.clear_on)
        evidence: dict[str, Any] = {"resolver": obs.clear_dst, "upstream": obs.clear_dst,
                                    "upstream_interface": obs.clear_on[0] if obs.clear_on else None,
                                    "method": "observed", "observed": obs.evidence()}
        if local:
            stub = self._stub(ctx, local[0])
            evidence["stub"] = stub
            who = f" ({stub['process']})" if stub.get("process") else ""
            summary = (f"DNS queries go to a local resolver at {local[0].address}{who}, which forwards them "
                       f"to {obs.clear_dst} out of {where} in clear: a test lookup of a unique name was "
                       f"seen leaving the tunnel.")
            fix = (f"Point the local resolver's forwarders at the VPN's resolver (and do not pin them to "
                   f"{where}), or use the VPN's resolver directly; block port 53/853 outside the tunnel.")
        else:
            summary = (f"A test lookup of a unique name through the system resolver left {where} in clear "
                       f"to {obs.clear_dst}: DNS queries escape the tunnel.")
            fix = ("Find what sends queries outside the tunnel (a local resolver's forwarders, a per-link "
                   "resolver) and point it at the VPN's resolver; block port 53/853 outside the tunnel.")
        if obs.clear_dst:
            # what the egress verdict says of the same packet sent the ordinary way (a pinned
            # forwarder is bound to its interface, so the two may differ: the observation wins)
            evidence["verdict_for_upstream"] = ctx.oracle.egress(obs.clear_dst, ipproto=UDP,
                                                                 dport=DNS_PORT).evidence()
        return self.finding("dns.resolver-outside-tunnel", Severity.CRITICAL, summary, evidence, fix, Guidance.DNS)

    @staticmethod
    def _stub(ctx: ProbeContext, resolver: Resolver) -> dict[str, Any]:
        """The local stub: its address, where resolv.conf named it, and the process listening there."""
        out: dict[str, Any] = {"address": str(resolver.address), "source": resolver.source,
                               "kind": ctx.state.stub_resolver, "process": None, "pid": None}
        activity = ctx.state.activity
        if activity is None:
            return out
        for sock in activity.sockets:
            if sock.local_port == DNS_PORT and sock.local in (str(resolver.address), "0.0.0.0", "::"):
                owners = activity.owners(sock)
                if owners:
                    out["process"], out["pid"] = owners[0].name, owners[0].pid
                    break
        return out

    def _judge(self, ctx: ProbeContext, resolver: Resolver, egress: Egress,
               observed: Observation | None) -> Finding | None:
        if egress.path is Path.LOCAL:
            return self._local_finding(ctx, resolver, observed)
        if egress.path is not Path.CLEAR or ctx.is_allowed_direct(resolver.address):
            return None
        seen_here = observed is not None and observed.clear_dst == str(resolver.address)
        evidence = {"resolver": str(resolver.address), "source": resolver.source, "link": resolver.link,
                    "domains": list(resolver.domains), **egress.evidence(),
                    "method": "observed" if seen_here else "inferred"}
        if observed is not None:
            evidence["observed"] = observed.evidence()
        where = egress.describe()
        if not resolver.takes_any_query:
            summary = (f"The resolver {resolver.address} of link {resolver.link} is reached {where}; "
                       f"it only receives queries for {', '.join(resolver.domains) or 'its own domains'}, "
                       f"which leave outside the tunnel.")
            fix = (f"Remove the DNS servers of {resolver.link} while the VPN is up, or confirm those "
                   f"domains may be resolved locally.")
            return self.finding("dns.scoped-resolver-outside-tunnel", Severity.MEDIUM, summary, evidence,
                                fix, Guidance.DNS, Effect.WARN)
        origin = (f"systemd-resolved link {resolver.link}" if resolver.link
                  else f"{resolver.source}")
        summary = (f"DNS queries go to {resolver.address} ({origin}), which is reached {where}: every "
                   f"name this machine looks up is visible to that network.")
        if seen_here:
            summary += f" Observed: a test lookup left {', '.join(observed.clear_on)} in clear."  # type: ignore[union-attr]
        fix = ("Make the VPN's resolver the only one while connected (push it with the tunnel and set "
               "the tunnel link's DNS domain to '~.'), and block port 53/853 outside the tunnel.")
        return self.finding("dns.resolver-outside-tunnel", Severity.CRITICAL, summary, evidence, fix,
                            Guidance.DNS)

    def _local_finding(self, ctx: ProbeContext, resolver: Resolver,
                       observed: Observation | None) -> Finding | None:
        if observed is not None and observed.outcome != "not-sent":
            return None  # the active lookup showed where its queries really go
        summary = (f"DNS queries go to a local resolver at {resolver.address} whose upstream servers the "
                   f"system does not tell, so leakcheck cannot see whether they use the tunnel.")
        evidence = {"resolver": str(resolver.address), "source": resolver.source,
                    "stub": ctx.state.stub_resolver}
        fix = ("Check the local resolver's forwarders (dnsmasq/unbound/dnscrypt configuration) point "
               "at the VPN's resolver, or set canaries.dns_zone for an active unique-name test.")
        return self.finding("dns.local-resolver-unverified", Severity.LOW, summary, evidence, fix,
                            Guidance.DNS, Effect.WARN)
