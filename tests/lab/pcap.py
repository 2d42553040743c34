"""Read the pcap files tcpdump writes, packet by packet, even while it writes.

Just enough decoding for lab assertions: link layer (Ethernet, raw IP from
a tun device, Linux cooked v1/v2), IPv4/IPv6 addresses, protocol, UDP/TCP
ports, ICMP type and the transport payload. A record cut short at the end
of a file still being written is left for the next read. For anything
deeper, `scapy.utils.rdpcap(path)` reads the same files.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = {12, 14, 101}
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_VLAN = {0x8100, 0x88A8}
PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 50: "ESP", 58: "ICMPv6"}
_IPV6_EXTENSIONS = {0, 43, 60}
_IPV6_FRAGMENT = 44


@dataclass(frozen=True)
class Packet:
    time: float
    ethertype: int | None
    version: int | None = None  # 4 or 6; None if not IP
    src: str | None = None
    dst: str | None = None
    proto: int | None = None  # 17 UDP, 6 TCP, 1 ICMP, 58 ICMPv6, 50 ESP, ...
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    payload: bytes = b""  # transport payload (UDP/TCP data, ICMP body, ...)
    frame: bytes = b""

    @property
    def is_udp(self) -> bool:
        return self.proto == 17

    @property
    def is_neighbor_discovery(self) -> bool:
        """ICMPv6 router/neighbour solicitation/advertisement, redirect (types 133-137)."""
        return self.proto == 58 and self.icmp_type is not None and 133 <= self.icmp_type <= 137

    @property
    def is_link_control(self) -> bool:
        """Link housekeeping a host sends by itself: IPv6 ND and MLD, IGMP."""
        if self.proto == 2:
            return True
        return self.proto == 58 and self.icmp_type in (130, 131, 132, 133, 134, 135, 136, 137, 143)

    def is_to(self, host: str, port: int | None = None, proto: int = 17) -> bool:
        return (self.proto == proto and self.dst is not None and _same(self.dst, host)
                and (port is None or self.dport == port))

    def __str__(self) -> str:
        if self.version is None:
            return f"ethertype 0x{(self.ethertype or 0):04x} len {len(self.frame)}"
        name = PROTO_NAMES.get(self.proto or -1, f"proto {self.proto}")
        if self.sport is not None:
            src = f"[{self.src}]:{self.sport}" if self.version == 6 else f"{self.src}:{self.sport}"
            dst = f"[{self.dst}]:{self.dport}" if self.version == 6 else f"{self.dst}:{self.dport}"
        else:
            src, dst = self.src, self.dst
        extra = f" type {self.icmp_type}" if self.icmp_type is not None else ""
        return f"{name} {src} > {dst}{extra} len {len(self.payload)}"


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a == b


def read(path: str | Path) -> list[Packet]:
    """Every complete packet in `path` (a pcap file, possibly still growing)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file (pcapng is not supported)")
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    packets = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        if offset + 16 + incl > len(data):
            break  # still being written
        frame = data[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        stamp = sec + frac / (1e9 if nanos else 1e6)
        packets.append(decode(frame, linktype, stamp))
    return packets


def decode(frame: bytes, linktype: int, stamp: float = 0.0) -> Packet:
    ethertype: int | None
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return Packet(stamp, None, frame=frame)
        ethertype = struct.unpack("!H", frame[12:14])[0]
        offset = 14
        while ethertype in ETH_P_VLAN and len(frame) >= offset + 4:
            ethertype = struct.unpack("!H", frame[offset + 2:offset + 4])[0]
            offset += 4
        body = frame[offset:]
    elif linktype in LINKTYPE_RAW:
        body = frame
        version = frame[0] >> 4 if frame else 0
        ethertype = ETH_P_IP if version == 4 else ETH_P_IPV6 if version == 6 else None
    elif linktype == LINKTYPE_LINUX_SLL:
        ethertype = struct.unpack("!H", frame[14:16])[0] if len(frame) >= 16 else None
        body = frame[16:]
    elif linktype == LINKTYPE_LINUX_SLL2:
        ethertype = struct.unpack("!H", frame[0:2])[0] if len(frame) >= 20 else None
        body = frame[20:]
    else:
        return Packet(stamp, None, frame=frame)
    if ethertype == ETH_P_IP:
        return _ipv4(body, stamp, frame)
    if ethertype == ETH_P_IPV6:
        return _ipv6(body, stamp, frame)
    return Packet(stamp, ethertype, frame=frame)


def _ipv4(body: bytes, stamp: float, frame: bytes) -> Packet:
    if len(body) < 20 or body[0] >> 4 != 4:
        return Packet(stamp, ETH_P_IP, frame=frame)
    ihl = (body[0] & 0x0F) * 4
    total = struct.unpack("!H", body[2:4])[0]
    fragment_offset = struct.unpack("!H", body[6:8])[0] & 0x1FFF
    proto = body[9]
    src = str(ipaddress.IPv4Address(body[12:16]))
    dst = str(ipaddress.IPv4Address(body[16:20]))
    transport = body[ihl:total] if total >= ihl else body[ihl:]
    if fragment_offset:
        return Packet(stamp, ETH_P_IP, 4, src, dst, proto, payload=transport, frame=frame)
    return _transport(stamp, ETH_P_IP, 4, src, dst, proto, transport, frame)


def _ipv6(body: bytes, stamp: float, frame: bytes) -> Packet:
    if len(body) < 40 or body[0] >> 4 != 6:
        return Packet(stamp, ETH_P_IPV6, frame=frame)
    next_header = body[6]
    src = str(ipaddress.IPv6Address(body[8:24]))
    dst = str(ipaddress.IPv6Address(body[24:40]))
    offset = 40
    while next_header in _IPV6_EXTENSIONS or next_header == _IPV6_FRAGMENT:
        if len(body) < offset + 8:
            return Packet(stamp, ETH_P_IPV6, 6, src, dst, next_header, frame=frame)
        if next_header == _IPV6_FRAGMENT:
            fragment_offset = struct.unpack("!H", body[offset + 2:offset + 4])[0] >> 3
            inner = body[offset]
            offset += 8
            if fragment_offset:
                return Packet(stamp, ETH_P_IPV6, 6, src, dst, inner, payload=body[offset:], frame=frame)
            next_header = inner
        else:
            inner = body[offset]
            offset += (body[offset + 1] + 1) * 8
            next_header = inner
    return _transport(stamp, ETH_P_IPV6, 6, src, dst, next_header, body[offset:], frame)


def _transport(stamp: float, ethertype: int, version: int, src: str, dst: str, proto: int,
               data: bytes, frame: bytes) -> Packet:
    if proto == 17 and len(data) >= 8:
        sport, dport = struct.unpack("!HH", data[:4])
        return Packet(stamp, ethertype, version, src, dst, proto, sport, dport, payload=data[8:], frame=frame)
    if proto == 6 and len(data) >= 20:
        sport, dport = struct.unpack("!HH", data[:4])
        header = (data[12] >> 4) * 4
        return Packet(stamp, ethertype, version, src, dst, proto, sport, dport, payload=data[header:],
                      frame=frame)
    if proto in (1, 58) and len(data) >= 4:
        return Packet(stamp, ethertype, version, src, dst, proto, icmp_type=data[0], payload=data[4:],
                      frame=frame)
    return Packet(stamp, ethertype, version, src, dst, proto, payload=data, frame=frame)
