"""What this process may do: effective capabilities, not the uid.

The agent runs as a dedicated user with only CAP_NET_ADMIN and CAP_NET_RAW
(systemd AmbientCapabilities), and root without capabilities is as
powerless as anyone: so probes ask for capabilities, never for uid 0.
"""

from __future__ import annotations

from pathlib import Path

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13


def effective_capabilities(status: Path = Path("/proc/self/status")) -> int:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return 0


def has(capability: int, mask: int | None = None) -> bool:
    return bool((effective_capabilities() if mask is None else mask) >> capability & 1)


def network_privileged() -> bool:
    """CAP_NET_ADMIN and CAP_NET_RAW: marks, captures, firewall changes."""
    mask = effective_capabilities()
    return has(CAP_NET_ADMIN, mask) and has(CAP_NET_RAW, mask)
