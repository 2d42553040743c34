"""A model of the kernel's route decision (fib_rules_lookup + fib_table_lookup),
answering RTM_GETROUTE-with-FIB-match questions from a NetState snapshot.

Two users: the property tests (tests/unit/strategies.py), where it stands in
for the netlink socket so probes run end to end without a kernel, and the
what-if questions of the posture probes ("where would this packet go if the
tunnel were gone?"), which the live kernel cannot answer without changing the
network. It follows Linux: rules by priority with their selectors, goto / nop /
blackhole actions, suppress_prefixlength applied only to successful lookups,
longest prefix then lowest metric per table, throw falling through to the next
rule, next hops on links that are administratively down skipped (without
carrier they are still used), a bound device (oif) restricting next hops, IPv4
forwarding off refusing iif lookups for anything but this host.
tests/unit/test_model_kernel.py checks it against the real kernel in a network
namespace.
"""

from __future__ import annotations

import errno
from typing import Iterable

from leakcheck.netstate import LOCAL_TABLE, MAIN_TABLE, ROUTE_PROTOCOLS, ROUTE_TYPES, NetState, Nexthop, Route, Rule
from leakcheck.rtnl import Answer, Query

PROTOCOL_NUMBERS = {name: number for number, name in ROUTE_PROTOCOLS.items()}
TYPE_NUMBERS = {name: number for number, name in ROUTE_TYPES.items()}
# What a route of this type makes fib_table_lookup return (fib_props[type].error).
ROUTE_TYPE_ERRORS = {"blackhole": errno.EINVAL, "unreachable": errno.EHOSTUNREACH,
                     "prohibit": errno.EACCES}
RULE_ACTION_ERRORS = {"blackhole": errno.EINVAL, "unreachable": errno.ENETUNREACH,
                      "prohibit": errno.EACCES}
INVALID_UID = 0xFFFFFFFF  # the uid of a forwarded packet (an iif lookup without RTA_UID)


def default_rules(family: int) -> tuple[Rule, ...]:
    """What every Linux network namespace starts with."""
    return (Rule(family, 0, "lookup", LOCAL_TABLE), Rule(family, 32766, "lookup", MAIN_TABLE),
            Rule(family, 32767, "lookup", 253))


class ModelKernel:
    """RTM_GETROUTE answers computed from a NetState (see the module docstring)."""

    def __init__(self, state: NetState):
        self.state = state
        self.asked: list[Query] = []

    def lookup_many(self, queries: Iterable[Query]) -> list[Answer]:
        queries = list(queries)
        self.asked += queries
        return [self.answer(q) for q in queries]

    def close(self) -> None:
        pass

    def answer(self, q: Query) -> Answer:
        iif = self.state.ifname(q.iif) if q.iif is not None else None
        if iif not in (None, "lo") and q.dst.version == 4 and q.dst.is_loopback:
            return Answer(error=errno.EINVAL)  # an IPv4 martian; IPv6's input lookup just looks up
        found = self._lookup(q)
        if q.dst.version == 4 and iif is not None and not self._forwards(iif) and found.type not in (2, 3):
            return Answer(error=errno.EHOSTUNREACH)  # not for this host, and IPv4 forwarding is off
        return found

    def _lookup(self, q: Query) -> Answer:
        family = q.dst.version
        iif = self.state.ifname(q.iif) if q.iif is not None else None
        oif = self.state.ifname(q.oif) if q.oif is not None else None
        uid = q.uid if q.uid is not None else (INVALID_UID if iif is not None else 0)
        rules = self.state.rules_for(family) or list(default_rules(family))
        i = 0
        while i < len(rules):
            rule = rules[i]
            i += 1
            if not rule.matches(dst=q.dst, src=q.src, iif=iif, oif=oif, mark=q.mark or 0, uid=uid,
                                ipproto=q.ipproto, dport=q.dport):
                continue
            if rule.action == "nop":
                continue
            if rule.action == "goto":
                target = next((j for j, r in enumerate(rules) if r.priority == rule.goto), None)
                if target is not None and target >= i:  # the kernel only accepts forward gotos
                    i = target
                continue
            if rule.action in RULE_ACTION_ERRORS:
                return Answer(error=RULE_ACTION_ERRORS[rule.action])
            route = self._best(rule.table, q, q.oif, forwarded=iif not in (None, "lo"))
            if route is None or route.type == "throw":
                continue
            if route.type in ROUTE_TYPE_ERRORS:
                return Answer(error=ROUTE_TYPE_ERRORS[route.type])
            if rule.suppress_prefixlen is not None and route.dst.prefixlen <= rule.suppress_prefixlen:
                continue
            return self._answer(route, q.oif)
        # a bound socket without a route is sent on-link, which FIB_MATCH reports as no match
        return Answer(error=errno.EHOSTUNREACH if q.oif is not None else errno.ENETUNREACH)

    def _forwards(self, iif: str) -> bool:
        sysctls = self.state.sysctls
        return (sysctls.get("net.ipv4.ip_forward", "0") != "0"
                and sysctls.get(f"net.ipv4.conf.{iif}.forwarding", "1") != "0")

    def _alive(self, hop: Nexthop) -> bool:
        """Routes via a link that is administratively down are gone; without carrier
        (oper down) they stay and are used (ignore_routes_with_linkdown is 0 by default)."""
        link = self.state.link(hop.ifindex) if hop.ifindex is not None else None
        return link is not None and link.admin_up

    def _best(self, table: int, q: Query, oif: int | None, forwarded: bool = False) -> Route | None:
        best: Route | None = None
        for route in self.state.routes:
            if route.table != table or route.family != q.dst.version or q.dst not in route.dst:
                continue
            if forwarded and route.family == 6 and route.dst.prefixlen == 128 and route.dst[0].is_loopback:
                continue  # ::1 arriving from outside: its lo route does not match (seen in the namespace)
            if route.nexthops:  # a bound device (oif) must be one of the route's live next hops
                hops = [h for h in route.nexthops if self._alive(h)]
                if not hops or (oif is not None and not any(h.ifindex == oif for h in hops)):
                    continue
            elif oif is not None and route.family == 6:
                continue  # IPv6 reject routes sit on lo: a strict device match passes them by
            if best is None or (route.dst.prefixlen, -route.metric) > (best.dst.prefixlen, -best.metric):
                best = route
        return best

    def _answer(self, route: Route, oif: int | None) -> Answer:
        hops = [h for h in route.nexthops if self._alive(h) and (oif is None or h.ifindex == oif)] \
            or [h for h in route.nexthops if self._alive(h)]
        common = dict(prefix=str(route.dst), table=route.table, type=TYPE_NUMBERS.get(route.type, 1),
                      protocol=PROTOCOL_NUMBERS.get(route.protocol, 0), scope=route.scope,
                      metric=route.metric, prefsrc=route.prefsrc)
        if len(hops) > 1:
            return Answer(**common, multipath=tuple((h.ifindex, h.gateway) for h in hops))  # type: ignore[arg-type]
        return Answer(**common, oif=hops[0].ifindex, gateway=hops[0].gateway)  # type: ignore[arg-type]
