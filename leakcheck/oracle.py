"""The egress oracle: where does a packet to D leave, and what decided it?

The kernel decides (RTM_GETROUTE with FIB match, honouring policy rules and
the uid / mark / iif selectors). A physical egress becomes "protected" when
an xfrm out-policy with a tunnel-mode template covers it, and "blocked" when
an xfrm block policy, a blackhole/unreachable route or no route stops it.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Sequence

from leakcheck.netstate import (ROUTE_PROTOCOLS, ROUTE_TYPES, IPAddress, NetState, Nexthop, Route, Rule,
                                XfrmPolicy, table_name)
from leakcheck.rtnl import Answer, Query, RouteLookup
from leakcheck.tunnel import Tunnel

BLOCKING_TYPES = {"blackhole", "unreachable", "prohibit"}


class Path(str, enum.Enum):
    TUNNEL = "tunnel"  # leaves through a tunnel interface
    PROTECTED = "ipsec"  # leaves a physical interface, ESP-encapsulated by an xfrm policy
    CLEAR = "clear"  # leaves a physical interface in clear: outside the tunnel
    BLOCKED = "blocked"  # no route, blackhole, or an xfrm block/hold
    LOCAL = "local"  # delivered on this host


@dataclass(frozen=True)
class Egress:
    destination: IPAddress
    path: Path
    interface: str | None = None
    gateway: str | None = None
    route: Route | None = None
    rule: Rule | None = None
    xfrm_policy: XfrmPolicy | None = None
    error: str | None = None
    selectors: dict[str, Any] = field(default_factory=dict)

    @property
    def outside_tunnel(self) -> bool:
        return self.path is Path.CLEAR

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": str(self.destination), "path": self.path.value,
                               "interface": self.interface, "gateway": self.gateway,
                               "decided_by": "kernel route lookup (RTM_GETROUTE)"}
        if self.selectors:
            out["as"] = dict(self.selectors)
        if self.route is not None:
            out["route"] = self.route.describe()
            out["route_table"] = table_name(self.route.table)
            out["route_protocol"] = self.route.protocol
        if self.rule is not None:
            out["rule"] = self.rule.describe()
        if self.xfrm_policy is not None:
            out["xfrm_policy"] = self.xfrm_policy.describe()
        if self.error:
            out["error"] = self.error
        return out

    def describe(self) -> str:
        """Short human phrase: 'out of eth0 via 192.0.2.1 in clear'."""
        if self.path is Path.CLEAR:
            via = f" via {self.gateway}" if self.gateway else ""
            return f"out of {self.interface}{via} in clear"
        if self.path is Path.TUNNEL:
            return f"into the tunnel ({self.interface})"
        if self.path is Path.PROTECTED:
            return f"out of {self.interface}, encrypted by IPsec"
        if self.path is Path.BLOCKED:
            return "nowhere (blocked: " + (self.error or (self.route.type if self.route else "no route")) + ")"
        return "to this host"


class Oracle:
    """Answers egress questions against one NetState and one netlink socket."""

    def __init__(self, state: NetState, tunnel: Tunnel, lookup: RouteLookup | None = None):
        self.state = state
        self.tunnel = tunnel
        self._lookup = lookup
        # keyed by text: parsing each answer's prefix into ipaddress objects is
        # the dominant cost of a 20,000-lookup egress map
        self._routes = {(str(r.dst), r.table, r.type): r for r in state.routes}
        self._routes_by_prefix = {(str(r.dst), r.type): r for r in state.routes}
        self._rules = {4: state.rules_for(4), 6: state.rules_for(6)}

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    @property
    def lookup(self) -> RouteLookup:
        if self._lookup is None:
            self._lookup = RouteLookup()
        return self._lookup

    def query(self, dst: IPAddress | str, *, uid: int | None = None, mark: int | None = None,
              iif: str | None = None, src: IPAddress | str | None = None, ipproto: int | None = None,
              dport: int | None = None) -> Query:
        iif_index = None
        if iif is not None:
            link = self.state.link(iif)
            if link is None:
                raise ValueError(f"no interface named {iif}")
            iif_index = link.index
        return Query(dst=ipaddress.ip_address(dst), src=ipaddress.ip_address(src) if src else None,
                     iif=iif_index, mark=mark, uid=uid, ipproto=ipproto, dport=dport)

    def egress(self, dst: IPAddress | str, **selectors: Any) -> Egress:
        return self.egress_many([self.query(dst, **selectors)])[0]

    def egress_many(self, queries: Sequence[Query], explain: bool = True) -> list[Egress]:
        """Answers in query order. `explain=False` leaves out the inferred rule
        (evidence only), which bulk maps do not need."""
        answers = self.lookup.lookup_many(queries)
        return [self.classify(q, a, explain) for q, a in zip(queries, answers)]

    def classify(self, query: Query, answer: Answer, explain: bool = True) -> Egress:
        selectors = _selectors(query, self.state) if explain else {}
        if answer.error:
            return Egress(query.dst, Path.BLOCKED, error=f"no route ({answer.error_name})",
                          selectors=selectors)
        route = self._route_for(answer)
        rule = self._deciding_rule(query, answer) if explain else None
        rtype = ROUTE_TYPES.get(answer.type or 0, "unicast")
        base = dict(route=route, rule=rule, selectors=selectors)
        if rtype in BLOCKING_TYPES:
            return Egress(query.dst, Path.BLOCKED, error=f"{rtype} route", **base)
        oif, gateway = self._first_hop(answer)
        ifname = self.state.ifname(oif)
        if rtype == "local" or ifname == "lo":
            return Egress(query.dst, Path.LOCAL, interface=ifname, **base)
        if self.tunnel.is_tunnel_interface(ifname):
            return Egress(query.dst, Path.TUNNEL, interface=ifname, gateway=gateway, **base)
        policy = self.xfrm_policy_for(query.dst, self._source(answer, ifname, query), query.ipproto)
        if policy is not None and policy.action == "block":
            return Egress(query.dst, Path.BLOCKED, interface=ifname, gateway=gateway,
                          xfrm_policy=policy, error="xfrm block policy", **base)
        if policy is not None and policy.protects:
            return Egress(query.dst, Path.PROTECTED, interface=ifname, gateway=gateway,
                          xfrm_policy=policy, **base)
        return Egress(query.dst, Path.CLEAR, interface=ifname, gateway=gateway, xfrm_policy=policy, **base)

    def xfrm_policy_for(self, dst: IPAddress, src: IPAddress | None,
                        ipproto: int | None = None) -> XfrmPolicy | None:
        """The out-policy the kernel would apply: lowest priority value first."""
        for policy in self.state.out_policies(dst.version):
            if dst not in policy.dst:
                continue
            if src is not None and src.version == dst.version and src not in policy.src:
                continue
            if policy.ipproto and policy.ipproto not in ("any", _proto_name(ipproto)):
                continue
            return policy
        return None

    def _source(self, answer: Answer, ifname: str | None, query: Query) -> IPAddress | None:
        if query.src is not None:
            return query.src
        if answer.prefsrc:
            return ipaddress.ip_address(answer.prefsrc)
        if ifname:
            candidates = self.state.addresses_of(ifname, query.dst.version)
            universe = [a for a in candidates if a.scope == 0] or candidates
            if universe:
                return universe[0].address
        return None

    def _first_hop(self, answer: Answer) -> tuple[int | None, str | None]:
        if answer.oif is not None:
            return answer.oif, answer.gateway
        if answer.multipath:
            return answer.multipath[0]
        return None, answer.gateway

    def _route_for(self, answer: Answer) -> Route | None:
        if answer.prefix is None:
            return None
        rtype = ROUTE_TYPES.get(answer.type or 0, "unicast")
        route = self._routes.get((answer.prefix, answer.table, rtype))
        if route is None:  # the kernel may report another table id (e.g. local routes)
            route = self._routes_by_prefix.get((answer.prefix, rtype))
        if route is not None:
            return route
        return Route(dst=ipaddress.ip_network(answer.prefix, strict=False), table=answer.table or 0, type=rtype,
                     protocol=ROUTE_PROTOCOLS.get(answer.protocol or 0, "unspec"), scope=answer.scope or 0,
                     nexthops=(Nexthop(answer.oif, self.state.ifname(answer.oif), answer.gateway),))

    def _deciding_rule(self, query: Query, answer: Answer) -> Rule | None:
        """The first rule that matches the lookup and points at the answer's table
        (evidence: the kernel does not say which rule it used)."""
        iif = self.state.ifname(query.iif) if query.iif is not None else None
        prefixlen = int(answer.prefix.rsplit("/", 1)[1]) if answer.prefix else 0
        for rule in self._rules[query.dst.version]:
            if rule.action != "lookup" or rule.table != answer.table:
                continue
            if rule.suppress_prefixlen is not None and prefixlen <= rule.suppress_prefixlen:
                continue  # this rule rejects such broad routes; a later one decided
            if rule.matches(dst=query.dst, src=query.src, iif=iif, mark=query.mark or 0,
                            uid=query.uid or 0, ipproto=query.ipproto, dport=query.dport):
                return rule
        return None


def _selectors(query: Query, state: NetState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if query.uid is not None:
        out["uid"] = query.uid
    if query.mark is not None:
        out["mark"] = hex(query.mark)
    if query.iif is not None:
        out["iif"] = state.ifname(query.iif)
    if query.src is not None:
        out["src"] = str(query.src)
    if query.ipproto is not None:
        out["ipproto"] = _proto_name(query.ipproto)
    if query.dport is not None:
        out["dport"] = query.dport
    return out


def _proto_name(number: int | None) -> str | None:
    return {6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp"}.get(number or -1, str(number) if number else None)
