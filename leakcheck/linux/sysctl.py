"""Forwarding and IPv6 sysctls, read from /proc/sys (per network namespace)."""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc/sys/net")
GLOBAL_KEYS = ("ipv4/ip_forward", "ipv6/conf/all/forwarding", "ipv6/conf/all/disable_ipv6",
               "ipv6/conf/default/disable_ipv6")
PER_LINK_KEYS = ("disable_ipv6", "accept_ra", "forwarding")


def read(ifnames: list[str], root: Path = PROC) -> dict[str, str]:
    """Keys as dotted sysctl names: net.ipv4.ip_forward, net.ipv6.conf.eth0.accept_ra."""
    values: dict[str, str] = {}
    wanted = list(GLOBAL_KEYS) + [f"ipv6/conf/{name}/{key}" for name in ifnames for key in PER_LINK_KEYS]
    for rel in wanted:
        try:
            values["net." + rel.replace("/", ".")] = (root / rel).read_text().strip()
        except OSError:
            continue  # interface without IPv6, or IPv6 disabled in the kernel
    return values
