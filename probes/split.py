"""Is the tunnel split? The complete egress map of the address space.

The IPv4 and IPv6 spaces are cut at every boundary that can change a
routing decision (every route prefix of every table, every rule and xfrm
policy prefix, the managed exceptions, the edges of private space). Inside
one piece every address is routed alike, so one kernel lookup per piece
gives an exact map, not a sample. Each lookup is the egress verdict (route,
xfrm, firewall), the same every other probe asks: a piece routed out of a
physical interface that the firewall drops (a kill switch) does not leave.
Pieces that leave outside the tunnel are reported as CIDRs and as a share
of the public address space:

- `split.prefixes-outside-tunnel`: public prefixes routed outside the
  tunnel (info instead of a leak under `policy.allow_split = true`).
- `split.egress-map` (info): what else leaves directly and why it is fine:
  private / LAN prefixes, the VPN server's own route, managed exceptions,
  and prefixes routed outside the tunnel but held by the firewall.

A family the tunnel does not carry while it carries the other is left to
the `ipv6` probe (an IPv4-only tunnel beside IPv6 is its finding). Skipped when no tunnel is up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable

from leakcheck.addrspace import (PRIVATE_ROUTABLE, SPACE, cidr_blocks, cidr_text, public_intervals,
                                 to_interval)
from leakcheck.errors import ProbeSkipped
from leakcheck.oracle import Layer, Path
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance
from leakcheck.rtnl import Query
from leakcheck.tunnel import family_gap, vpn_endpoints

FAMILY = {4: "IPv4", 6: "IPv6"}
MAX_LISTED = 64  # prefixes listed in evidence; the count is always complete


@dataclass
class EgressMap:
    family: int
    leaking: list[tuple[int, int, str]] = field(default_factory=list)  # start, end, interface
    private: list[tuple[int, int, str]] = field(default_factory=list)
    allowed: list[tuple[int, int, str]] = field(default_factory=list)
    server: list[tuple[int, int, str]] = field(default_factory=list)
    held: list[tuple[int, int, str]] = field(default_factory=list)  # routed out in clear, dropped by the firewall
    held_by: str = ""  # the firewall rule (or chain policy) that drops them
    lookups: int = 0

    def public_outside(self) -> int:
        return sum(end - start for start, end, _ in self.leaking)


def boundaries(ctx: ProbeContext, family: int, extra: Iterable[tuple[int, int]]) -> list[int]:
    """Every address where a routing decision may change, sorted."""
    cuts = {0, SPACE[family]}
    prefixes = [r.dst for r in ctx.state.routes_in(family=family) if r.table != 255]
    prefixes += [p for r in ctx.state.rules_for(family) for p in (r.dst,) if p is not None]
    prefixes += [p.dst for p in ctx.state.out_policies(family)]
    prefixes += ctx.oracle.firewall_prefixes(family)  # the firewall's verdict may change there too
    for net in prefixes:
        cuts.update(to_interval(net))
    for start, end in extra:
        cuts.update((start, end))
    return sorted(c for c in cuts if 0 <= c <= SPACE[family])


def pieces(cuts: list[int], wanted: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Elementary intervals between cuts, restricted to `wanted` space."""
    out = []
    for start, end in wanted:
        inner = [c for c in cuts if start < c < end]
        edges = [start, *inner, end]
        out.extend(zip(edges, edges[1:]))
    return out


def build_map(ctx: ProbeContext, family: int) -> EgressMap:
    version_cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    public = public_intervals(family)
    private = [to_interval(n) for n in PRIVATE_ROUTABLE if n.version == family]
    # the host's own IPv6 LAN is global space but local: accounted like private space
    private += [to_interval(n) for n in ctx.state.own_ipv6_lans() if n.version == family]
    allowed = [to_interval(n) for n in ctx.allowed_direct if n.version == family]
    endpoints = [ipaddress.ip_address(e) for e in vpn_endpoints(ctx.state)]
    servers = [(int(e), int(e) + 1) for e in endpoints if e.version == family]
    cuts = boundaries(ctx, family, public + private + allowed + servers)
    todo = pieces(cuts, union(public + private))
    queries = [Query(dst=version_cls(start)) for start, _ in todo]
    egresses = ctx.oracle.egress_many(queries, explain=False)
    emap = EgressMap(family=family, lookups=len(queries))
    for (start, end), egress in zip(todo, egresses):
        if egress.path is Path.BLOCKED and egress.decided_by is Layer.FIREWALL:
            emap.held.append((start, end, egress.interface or "?"))
            emap.held_by = emap.held_by or (egress.firewall.describe() if egress.firewall else "")
            continue
        if egress.path is not Path.CLEAR:
            continue
        piece = (start, end, egress.interface or "?")
        if _inside(start, end, servers):
            emap.server.append(piece)
        elif _inside(start, end, allowed):
            emap.allowed.append(piece)
        elif any(s <= start < e for s, e in private):
            emap.private.append(piece)
        else:
            emap.leaking.append(piece)
    return emap


def _firewall_text(ctx: ProbeContext, emap: EgressMap) -> str:
    if ctx.state.firewall is None or not ctx.state.firewall.sources:
        return "not read"
    return "lets these prefixes out" if not emap.held else f"lets these out; holds others ({emap.held_by})"


def union(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, overlapping intervals merged."""
    out: list[list[int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def _inside(start: int, end: int, intervals: list[tuple[int, int]]) -> bool:
    return any(s <= start and end <= e for s, e in intervals)


def merged_blocks(pieces_: list[tuple[int, int, str]], family: int) -> list[tuple[int, int, str]]:
    """Adjacent pieces on the same interface merged, as CIDR blocks (network, prefixlen, interface)."""
    merged: list[list] = []
    for start, end, iface in sorted(pieces_):
        if merged and merged[-1][1] == start and merged[-1][2] == iface:
            merged[-1][1] = end
        else:
            merged.append([start, end, iface])
    return [(net, plen, iface) for start, end, iface in merged
            for net, plen in cidr_blocks(family, start, end)]


def merged_cidrs(family: int, pieces_: list[tuple[int, int, str]],
                 limit: int | None = None) -> list[tuple[str, str]]:
    """Like merged_blocks, as (cidr text, interface); only the first `limit` rendered."""
    blocks = merged_blocks(pieces_, family)[:limit]
    return [(cidr_text(family, net, plen), iface) for net, plen, iface in blocks]


def share(part: int, whole: int) -> str:
    """A percentage that never rounds a partial share to 0% or 100%."""
    if not whole or part == 0:
        return "0%"
    if part == whole:
        return "100%"
    text = f"{100.0 * part / whole:.4f}".rstrip("0").rstrip(".")
    if text in ("0", "100"):
        return "<0.0001%" if text == "0" else ">99.9999%"
    return text + "%"


class SplitProbe(Probe):
    """The exact egress map of IPv4 and IPv6: which prefixes leave outside
    the tunnel, and whether each is an allowed exception."""

    name = "split"
    leak_class = "split tunnelling: address space routed outside the tunnel"
    finding_ids = ("split.prefixes-outside-tunnel", "split.egress-map")
    checks = ("full-tunnel", "exceptions")
    timeout_s = 20.0

    def run(self, ctx: ProbeContext) -> list[Finding]:
        if not ctx.tunnel.up:
            raise ProbeSkipped("no tunnel is up, so there is nothing to split (the routes probe "
                               "reports where traffic goes)")
        findings = []
        for family in (4, 6):
            if family_gap(ctx.state, ctx.tunnel, family):
                continue  # IPv4-only tunnel beside IPv6 (or the reverse): the ipv6 probe's finding
            emap = build_map(ctx, family)
            if emap.leaking:
                findings.append(self._leak_finding(ctx, emap))
            accounted = self._accounting(emap)
            if accounted:
                findings.append(accounted)
        return findings

    def _leak_finding(self, ctx: ProbeContext, emap: EgressMap) -> Finding:
        family = emap.family
        blocks = merged_blocks(emap.leaking, family)
        cidrs = merged_cidrs(family, emap.leaking, MAX_LISTED)
        total = sum(end - start for start, end in public_intervals(family))
        pct = share(emap.public_outside(), total)
        interfaces = sorted({iface for *_, iface in blocks})
        allowed = ctx.config.get("policy", "allow_split")
        count = len(blocks)
        listed = ", ".join(c for c, _ in cidrs[:4]) + (f" and {count - 4} more" if count > 4 else "")
        summary = (f"The tunnel is split: {count} public {FAMILY[family]} prefix"
                   f"{'es' if count > 1 else ''} ({listed}; {pct} of public {FAMILY[family]} space) "
                   f"{'go' if count > 1 else 'goes'} out of {', '.join(interfaces)} instead of the tunnel.")
        if allowed:
            summary += " Split tunnelling is allowed by policy (policy.allow_split)."
        evidence = {"family": FAMILY[family], "prefixes": [c for c, _ in cidrs],
                    "prefix_count": count, "interfaces": interfaces, "public_share": pct,
                    "public_addresses_outside": emap.public_outside(), "lookups": emap.lookups,
                    "decided_by": "route", "firewall": _firewall_text(ctx, emap),
                    "method": "egress verdict per address-space piece (route, xfrm, firewall): exact map"}
        fix = ("Route everything into the tunnel (full tunnel). If some services must go direct, list "
               "their prefixes in policy.allowed_direct so they are managed exceptions.")
        return self.finding("split.prefixes-outside-tunnel", Severity.INFO if allowed else Severity.HIGH,
                            summary, evidence, fix, Guidance.FULL_TUNNEL,
                            Effect.INFO if allowed else Effect.LEAK)

    def _accounting(self, emap: EgressMap) -> Finding | None:
        groups = {"private": emap.private, "allowed_exceptions": emap.allowed, "vpn_server": emap.server,
                  "held_by_firewall": emap.held}
        evidence: dict[str, object] = {"family": FAMILY[emap.family], "lookups": emap.lookups}
        for key, group in groups.items():
            evidence[key] = [f"{c} ({i})" for c, i in merged_cidrs(emap.family, group, MAX_LISTED)]
        if not any(groups.values()):
            return None
        parts = [f"{len(evidence[k])} {label}" for k, label in
                 (("private", "private/LAN prefix(es)"), ("allowed_exceptions", "managed exception(s)"),
                  ("vpn_server", "VPN server route(s)"),
                  ("held_by_firewall", "prefix(es) routed outside the tunnel but dropped by the firewall"))
                 if evidence[k]]
        if emap.held:
            evidence["held_decided_by"] = "firewall"
            evidence["held_by"] = emap.held_by
        summary = f"{FAMILY[emap.family]} also leaves directly, as expected: " + ", ".join(parts) + "."
        return self.finding("split.egress-map", Severity.INFO, summary, evidence, "", Guidance.EXCEPTIONS,
                            Effect.INFO)


