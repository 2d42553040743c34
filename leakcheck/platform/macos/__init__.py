"""The macOS backend: routing table (`netstat -rn`), the kernel's decision
per destination (`route -n get`: an RTM_GET on the PF_ROUTE socket),
interfaces and addresses (`ifconfig -a`), resolvers with their scopes and
supplemental domains (`scutil --dns`), the system's VPN services
(`scutil --nc list`), pf rules (`pfctl -sr`, root only), sockets and
processes (psutil). Every command goes through one Runner, so a recording
can stand in for the machine.

Verified only on recorded output (tests/unit/test_platform_macos.py): it
has never run on a real Mac.
"""

from __future__ import annotations

import errno
import os

from leakcheck.netstate import MAIN_TABLE, NetState
from leakcheck.platform.commands import CommandBackend, CommandFailed, NotRecorded, Runner
from leakcheck.platform.macos import parsers, state
from leakcheck.platform.table_lookup import PROTOCOL_NUMBERS, ROUTE_TYPE_NUMBERS, BatchedKernelLookup, TableLookup
from leakcheck.rtnl import Answer, Query

# More questions than this in one batch (the split probe's egress map) are
# answered from the routing table: one `route` process per question would
# take minutes.
KERNEL_BATCH_LIMIT = 64


def route_get_argv(query: Query) -> tuple[str, ...]:
    family = "-inet6" if query.dst.version == 6 else "-inet"
    return ("route", "-n", "get", family, str(query.dst))


class RouteGetLookup(BatchedKernelLookup):
    """The kernel's answer per destination (`route -n get`), the routing
    table's for bulk batches and for destinations a recording lacks."""

    KERNEL = "route -n get (PF_ROUTE RTM_GET)"
    TABLE = "the routing table (netstat -rn), longest prefix"

    def __init__(self, runner: Runner, netstate: NetState, limit: int = KERNEL_BATCH_LIMIT):
        super().__init__(runner, netstate, TableLookup(netstate), limit)

    def lookup(self, query: Query) -> Answer:
        try:
            text = self.runner.run(route_get_argv(query))
        except NotRecorded:
            return self.table.lookup(query)
        except CommandFailed as exc:
            if "not in table" in exc.output or "not in table" in str(exc):
                self.kernel_answers += 1
                return Answer(error=errno.ENETUNREACH)
            return self.table.lookup(query)
        self.kernel_answers += 1
        return self.answer(parsers.parse_route_get(text, query.dst.version))

    def answer(self, got: parsers.RouteGet) -> Answer:
        link = self.state.link(got.interface) if got.interface else None
        rtype = got.kind
        if rtype == "unicast" and got.interface and got.interface.startswith("lo"):
            rtype = "local"
        return Answer(prefix=str(got.destination), table=MAIN_TABLE, type=ROUTE_TYPE_NUMBERS[rtype],
                      protocol=PROTOCOL_NUMBERS["static" if "STATIC" in got.flags else "kernel"],
                      scope=0, oif=link.index if link else None, gateway=got.gateway)

    def close(self) -> None:
        pass


class MacBackend(CommandBackend):
    name = "macos"

    def read_state(self) -> NetState:
        return self._read_state(state.read)

    def route_lookup(self, netstate: NetState) -> RouteGetLookup:
        return RouteGetLookup(self.runner, netstate)

    def privileged(self) -> bool:
        if self.root is not None:
            return self.root
        return os.geteuid() == 0  # pfctl -sr and every process's sockets need root

    def packets_unavailable(self) -> str | None:
        return "test packets are not implemented on macOS yet (inference from routes and resolvers only)"

    def watch_kernel(self, sets):
        from leakcheck.watch.model import WatchUnavailable
        raise WatchUnavailable("the live flow watch is not supported yet on macOS (Linux only for now)")
