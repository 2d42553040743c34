"""Address-space facts: what is public, and integer intervals for exact maps.

"Public" here is everything a host would reach through its default route:
all unicast space minus RFC 1918, CGNAT (100.64/10), loopback, link-local,
ULA, multicast and reserved blocks. Documentation ranges (RFC 5737/3849)
count as public on purpose: they stand for the internet in the lab.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Iterator, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

NON_PUBLIC_V4 = tuple(ipaddress.ip_network(p) for p in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4"))
# IPv6: only global unicast (2000::/3) is public; ULA, link-local, loopback,
# multicast and the rest are not.
PUBLIC_V6 = (ipaddress.ip_network("2000::/3"),)
# Space that is private but routable (a LAN, a corporate network): looked up
# and reported, never counted as a leak of the internet.
PRIVATE_ROUTABLE = tuple(ipaddress.ip_network(p) for p in (
    "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))

SPACE = {4: 1 << 32, 6: 1 << 128}


def is_public(addr: IPAddress) -> bool:
    if addr.version == 4:
        return not any(addr in net for net in NON_PUBLIC_V4) and addr != ipaddress.IPv4Address("255.255.255.255")
    if addr.ipv4_mapped is not None:
        return False
    return any(addr in net for net in PUBLIC_V6)


def is_private_routable(addr: IPAddress) -> bool:
    return any(addr in net for net in PRIVATE_ROUTABLE if net.version == addr.version)


def public_intervals(version: int) -> list[tuple[int, int]]:
    """Public space as half-open integer intervals [start, end)."""
    if version == 6:
        return [(int(n.network_address), int(n.broadcast_address) + 1) for n in PUBLIC_V6]
    return subtract([(0, SPACE[4] - 1)], [to_interval(n) for n in NON_PUBLIC_V4])


def public_size(version: int) -> int:
    return sum(end - start for start, end in public_intervals(version))


def to_interval(net: IPNetwork) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address) + 1


def subtract(base: list[tuple[int, int]], holes: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out = list(base)
    for hole_start, hole_end in holes:
        nxt = []
        for start, end in out:
            if hole_end <= start or hole_start >= end:
                nxt.append((start, end))
                continue
            if start < hole_start:
                nxt.append((start, hole_start))
            if hole_end < end:
                nxt.append((hole_end, end))
        out = nxt
    return out


def overlap(a: tuple[int, int], intervals: Iterable[tuple[int, int]]) -> int:
    return sum(max(0, min(a[1], e) - max(a[0], s)) for s, e in intervals)


def cidr_blocks(version: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Half-open [start, end) as the fewest CIDR blocks, as (network, prefixlen)
    integers (integer arithmetic: ipaddress is too slow for 20,000 ranges)."""
    bits = 32 if version == 4 else 128
    while start < end:
        size = start & -start if start else 1 << bits
        while size > end - start:
            size >>= 1
        yield start, bits - size.bit_length() + 1
        start += size


def cidr_text(version: int, network: int, prefixlen: int) -> str:
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return f"{cls(network)}/{prefixlen}"


def to_cidrs(version: int, start: int, end: int) -> Iterator[IPNetwork]:
    """Half-open [start, end) as the fewest CIDR blocks."""
    for network, prefixlen in cidr_blocks(version, start, end):
        yield ipaddress.ip_network(cidr_text(version, network, prefixlen))


def first_public_address(net: IPNetwork) -> IPAddress | None:
    """An address inside `net` that is public, preferring one near its start."""
    pieces = subtract([to_interval(net)], [to_interval(n) for n in _non_public(net.version)])
    if not pieces:
        return None
    start, end = pieces[0]
    value = start + 1 if end - start > 2 else start  # skip a network address when we can
    return ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)


def _non_public(version: int) -> list[IPNetwork]:
    if version == 4:
        return list(NON_PUBLIC_V4)
    return [ipaddress.ip_network("::/3"), ipaddress.ip_network("4000::/2"), ipaddress.ip_network("8000::/1")]
