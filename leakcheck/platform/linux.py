"""The Linux backend: the existing readers, wrapped by import, unchanged.

netlink dumps and /proc (leakcheck.linux), the batched RTM_GETROUTE socket
(leakcheck.rtnl), capabilities (leakcheck.privileges) and scapy capture
(leakcheck.active) stay where they are; this class only names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakcheck.netstate import NetState
from leakcheck.platform.posture import PostureFacts
from leakcheck.rtnl import RouteLookup
from leakcheck.watch.model import WatchSets

if TYPE_CHECKING:
    from leakcheck.platform import KernelWatch


class LinuxBackend:
    name = "linux"

    def read_state(self) -> NetState:
        from leakcheck.linux import read_state
        return read_state()

    def route_lookup(self, state: NetState) -> RouteLookup:
        return RouteLookup()

    def privileged(self) -> bool:
        from leakcheck.privileges import network_privileged
        return network_privileged()

    def posture_facts(self) -> "PostureFacts":
        from leakcheck.platform.posture import read
        return read("/")

    def packets_unavailable(self) -> str | None:
        return None  # ProbeContext asks leakcheck.active.available() itself, as before

    def watch_kernel(self, sets: WatchSets) -> KernelWatch:
        from leakcheck.privileges import CAP_NET_ADMIN, has
        from leakcheck.watch.model import WatchUnavailable
        if not has(CAP_NET_ADMIN):
            raise WatchUnavailable("watching flows needs CAP_NET_ADMIN (run as root or in the agent's unit): "
                                   "nothing watched")
        from leakcheck.linux.nftwatch import KernelWatch as NftWatch
        return NftWatch(sets)
