"""The platform seam for VPN client facts: Linux reads them with
leakcheck/linux/vpnclients.py (vici, OpenVPN configs and logs,
NetworkManager keyfiles, dpkg/rpm). Probes reach them only through
`ctx.clients` (leakcheck/vpnclients.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leakcheck.netstate import NetState
    from leakcheck.vpnclients import ClientFacts


def read_linux(state: "NetState") -> "ClientFacts":
    from leakcheck.linux.vpnclients import read
    return read(state)
