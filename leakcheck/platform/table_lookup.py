"""Route decisions from a routing table snapshot: longest prefix, then the
lowest metric (Windows adds the interface metric to the route's, macOS has
none and keeps the table's order).

The live macOS and Windows backends ask the kernel (`route -n get`,
`Find-NetRoute`) for each destination, but one process per question is
~10-100 ms: the split probe's tens of thousands of questions are answered
here instead, from the same table the kernel reads. Recorded states answer
here too for destinations the recording holds no kernel answer for.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import TYPE_CHECKING, Sequence

from leakcheck.netstate import MAIN_TABLE, NetState, Route
from leakcheck.rtnl import Answer, Query

if TYPE_CHECKING:
    from leakcheck.platform.commands import Runner

ROUTE_TYPE_NUMBERS = {"unicast": 1, "local": 2, "broadcast": 3, "multicast": 5, "blackhole": 6,
                      "unreachable": 7, "prohibit": 8}
PROTOCOL_NUMBERS = {"kernel": 2, "boot": 3, "static": 4, "ra": 9, "dhcp": 16}


def answer_from_route(route: Route, state: NetState) -> Answer:
    hop = route.nexthops[0] if route.nexthops else None
    oif = hop.ifindex if hop and hop.ifindex is not None else (
        state.link(hop.ifname).index if hop and hop.ifname and state.link(hop.ifname) else None)
    return Answer(prefix=str(route.dst), table=route.table, type=ROUTE_TYPE_NUMBERS.get(route.type, 1),
                  protocol=PROTOCOL_NUMBERS.get(route.protocol, 0), scope=route.scope, oif=oif,
                  gateway=hop.gateway if hop else None, metric=route.metric or None, prefsrc=route.prefsrc)


class TableLookup:
    """Longest-prefix match over `state.routes` (main table, usable links only)."""

    def __init__(self, state: NetState, interface_metrics: dict[tuple[str, int], int] | None = None):
        self.state = state
        self.interface_metrics = interface_metrics or {}
        self._by_family: dict[int, list[Route]] = {4: [], 6: []}
        for route in state.routes:
            if route.table != MAIN_TABLE or not self._usable(route):
                continue
            self._by_family[route.family].append(route)
        for routes in self._by_family.values():
            # stable sort: longest prefix first, then the lower total metric
            routes.sort(key=lambda r: (-r.dst.prefixlen, self._metric(r)))

    def _usable(self, route: Route) -> bool:
        if route.type != "unicast":
            return True  # reject/blackhole routes stop traffic whatever the link
        return all((link := self.state.link(name)) is None or link.usable for name in route.ifnames)

    def _metric(self, route: Route) -> int:
        names = route.ifnames
        iface = self.interface_metrics.get((names[0], route.family), 0) if names else 0
        return route.metric + iface

    def route_for(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Route | None:
        for route in self._by_family[dst.version]:
            if dst in route.dst:
                return route
        return None

    def lookup(self, query: Query) -> Answer:
        route = self.route_for(query.dst)
        if route is None:
            return Answer(error=errno.ENETUNREACH)
        return answer_from_route(route, self.state)

    def lookup_many(self, queries: Sequence[Query]) -> list[Answer]:
        return [self.lookup(q) for q in queries]

    def close(self) -> None:
        pass


class BatchedKernelLookup:
    """Ask the OS's own route decision one destination at a time (one tool
    run each), up to `limit` per batch; bigger batches, and destinations a
    recording lacks, are answered from the route table. `decided_by` names
    what answered the last batch, for the oracle's evidence. Subclasses give
    KERNEL, TABLE and `lookup` (which counts `kernel_answers`)."""

    KERNEL = "the kernel"
    TABLE = "the route table"

    def __init__(self, runner: "Runner", netstate: NetState, table: "TableLookup", limit: int):
        self.runner = runner
        self.state = netstate
        self.limit = limit
        self.table = table
        self.kernel_answers = 0  # answers that came from the OS tool (evidence for tests)
        self.decided_by = self.KERNEL

    def lookup(self, query: Query) -> Answer:  # every subclass answers
        raise NotImplementedError

    def lookup_many(self, queries: Sequence[Query]) -> list[Answer]:
        if len(queries) > self.limit:
            self.decided_by = self.TABLE
            return self.table.lookup_many(queries)
        before = self.kernel_answers
        answers = [self.lookup(q) for q in queries]
        asked = self.kernel_answers - before
        self.decided_by = (self.KERNEL if asked == len(queries) else self.TABLE if asked == 0
                           else f"{self.KERNEL}; where it gave no answer, {self.TABLE}")
        return answers
