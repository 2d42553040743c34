"""The Linux backend: the existing readers, wrapped by import, unchanged.

netlink dumps and /proc (leakcheck.linux), the batched RTM_GETROUTE socket
(leakcheck.rtnl), capabilities (leakcheck.privileges) and scapy capture
(leakcheck.active) stay where they are; this class only names them.
"""

from __future__ import annotations

from leakcheck.netstate import NetState
from leakcheck.platform.posture import PostureFacts
from leakcheck.rtnl import RouteLookup


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
