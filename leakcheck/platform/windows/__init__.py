"""The Windows backend: the kernel's route decision per destination
(`Find-NetRoute`, which asks GetBestRoute2), routes and interface metrics
(`Get-NetRoute`, `Get-NetIPInterface`), addresses (`Get-NetIPAddress`),
resolvers and NRPT rules (`Get-DnsClientServerAddress`,
`Get-DnsClientNrptPolicy`), the built-in VPN client's profiles
(`Get-VpnConnection -AllUserConnection`), sockets and processes (psutil),
all as JSON through one Runner. WFP filters are not read: a WFP kill
switch is not seen, and the state says so.

Verified only on recorded output (tests/unit/test_platform_windows.py): it
has never run on a real Windows machine.
"""

from __future__ import annotations

import errno

from leakcheck.netstate import MAIN_TABLE, NetState
from leakcheck.platform.commands import CommandBackend, CommandFailed, NotRecorded, Runner
from leakcheck.platform.table_lookup import PROTOCOL_NUMBERS, ROUTE_TYPE_NUMBERS, BatchedKernelLookup, TableLookup
from leakcheck.platform.windows import parsers, state
from leakcheck.rtnl import Answer, Query

KERNEL_BATCH_LIMIT = 32  # each Find-NetRoute is a PowerShell pipeline (~0.1 s)


def find_net_route_argv(query: Query) -> tuple[str, ...]:
    return state.powershell(f"Find-NetRoute -RemoteIPAddress '{query.dst}' | "
                            "Select-Object IPAddress,DestinationPrefix,NextHop,InterfaceIndex,InterfaceAlias,"
                            "RouteMetric,Protocol,AddressFamily | ConvertTo-Json -Depth 2")


def interface_metrics(text_objects: list[dict]) -> dict[tuple[str, int], int]:
    return {(i.alias, i.family): i.metric for i in parsers.ip_interfaces(text_objects) if i.family}


class FindNetRouteLookup(BatchedKernelLookup):
    """Windows' own choice per destination (Find-NetRoute); bulk batches and
    destinations a recording lacks are answered from the route table with
    Windows' rule (longest prefix, then route + interface metric)."""

    KERNEL = "Find-NetRoute (GetBestRoute2)"
    TABLE = "the route table (Get-NetRoute), longest prefix then route + interface metric"

    def __init__(self, runner: Runner, netstate: NetState, metrics: dict[tuple[str, int], int],
                 limit: int = KERNEL_BATCH_LIMIT):
        super().__init__(runner, netstate, TableLookup(netstate, metrics), limit)

    def lookup(self, query: Query) -> Answer:
        try:
            found = parsers.find_net_route(parsers.parse_objects(self.runner.run(find_net_route_argv(query))))
        except NotRecorded:
            return self.table.lookup(query)
        except (CommandFailed, ValueError):
            self.kernel_answers += 1
            return Answer(error=errno.ENETUNREACH)  # Find-NetRoute fails when no route exists
        self.kernel_answers += 1
        route = found.route
        link = self.state.link(route.ifindex)
        rtype = "local" if link is not None and link.kind == "loopback" else "unicast"
        return Answer(prefix=str(route.prefix), table=MAIN_TABLE, type=ROUTE_TYPE_NUMBERS[rtype],
                      protocol=PROTOCOL_NUMBERS["static" if route.protocol == "NetMgmt" else "kernel"],
                      scope=0, oif=route.ifindex, gateway=route.next_hop, metric=route.metric or None,
                      prefsrc=found.source)

    def close(self) -> None:
        pass


class WindowsBackend(CommandBackend):
    name = "windows"

    def read_state(self) -> NetState:
        return self._read_state(state.read)

    def route_lookup(self, netstate: NetState) -> FindNetRouteLookup:
        try:
            metrics = interface_metrics(parsers.parse_objects(self.runner.run(state.NET_IP_INTERFACE)))
        except CommandFailed:
            metrics = {}
        return FindNetRouteLookup(self.runner, netstate, metrics)

    def privileged(self) -> bool:
        if self.root is not None:
            return self.root
        import ctypes
        try:
            return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            return False

    def packets_unavailable(self) -> str | None:
        return "test packets are not implemented on Windows yet (inference from routes and resolvers only)"

    def watch_kernel(self, sets):
        from leakcheck.watch.model import WatchUnavailable
        raise WatchUnavailable("the live flow watch is not supported yet on Windows (Linux only for now)")
