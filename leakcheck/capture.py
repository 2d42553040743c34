"""Packet capture on raw AF_PACKET sockets: one per interface, outgoing
packets only, read without a thread.

Each socket is a SOCK_DGRAM packet socket bound to one interface, so every
packet starts at its IP header whatever the link type (Ethernet, a tun
device, WireGuard). A four-instruction classic BPF program drops what the
interface receives in the kernel: leakcheck asks which interface a packet
*leaves* by, and a busy download must not fill the queue. Packets wait in
the socket's queue, stamped by the kernel, until `drain()` reads them, so
nothing sniffed is lost to a late reader, and starting a capture costs a few
system calls (no capture library to import: scapy took longer to load than
the rest of a run). Imported only by leakcheck.active when a check runs.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SNAPLEN = 2048  # headers and leakcheck's small payloads; the rest of a large packet is not copied
RCVBUF = 4 << 20  # room for a busy uplink during one capture window

# ld pkttype (ancillary data); jeq PACKET_OUTGOING ? accept SNAPLEN : drop
BPF_OUTGOING_ONLY = (
    (0x30, 0, 0, 0xFFFFF004),  # BPF_LD|BPF_B|BPF_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE
    (0x15, 0, 1, PACKET_OUTGOING),  # BPF_JMP|BPF_JEQ|BPF_K
    (0x06, 0, 0, SNAPLEN),  # BPF_RET|BPF_K: accept, truncated
    (0x06, 0, 0, 0),  # BPF_RET|BPF_K: drop
)
L4_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6"}


@dataclass(frozen=True)
class Packet:
    """One outgoing packet as it left an interface, from its IP header on."""

    iface: str
    data: bytes

    @property
    def version(self) -> int:
        return self.data[0] >> 4 if self.data else 0

    def _l4(self) -> tuple[int, int] | None:
        """(protocol, offset of the transport header); IPv6 extension headers are not followed."""
        if self.version == 4 and len(self.data) >= 20:
            return self.data[9], (self.data[0] & 0x0F) * 4
        if self.version == 6 and len(self.data) >= 40:
            return self.data[6], 40
        return None

    @property
    def ttl(self) -> int | None:
        """IPv4 TTL or IPv6 hop limit."""
        if self.version == 4 and len(self.data) >= 20:
            return self.data[8]
        if self.version == 6 and len(self.data) >= 40:
            return self.data[7]
        return None

    @property
    def src(self) -> str | None:
        return self._address(12, 8)

    @property
    def dst(self) -> str | None:
        return self._address(16, 24)

    def _address(self, v4_offset: int, v6_offset: int) -> str | None:
        if self.version == 4 and len(self.data) >= 20:
            return socket.inet_ntop(socket.AF_INET, self.data[v4_offset:v4_offset + 4])
        if self.version == 6 and len(self.data) >= 40:
            return socket.inet_ntop(socket.AF_INET6, self.data[v6_offset:v6_offset + 16])
        return None

    def ports(self) -> tuple[int, int] | None:
        """(source, destination) port of a TCP or UDP packet."""
        l4 = self._l4()
        if l4 is None or l4[0] not in (6, 17) or len(self.data) < l4[1] + 4:
            return None
        return struct.unpack_from("!HH", self.data, l4[1])  # type: ignore[return-value]

    @property
    def protocol(self) -> int | None:
        """The transport protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)."""
        l4 = self._l4()
        return l4[0] if l4 else None

    def icmp_type(self) -> int | None:
        l4 = self._l4()
        if l4 is None or l4[0] not in (1, 58) or len(self.data) <= l4[1]:
            return None
        return self.data[l4[1]]

    def is_tcp(self) -> bool:
        return self.protocol == 6

    def summary(self) -> str:
        """One line for evidence, e.g. "IPv4 UDP 100.64.0.2:40000 > 198.51.100.1:33434"."""
        l4 = self._l4()
        if l4 is None:
            return f"{len(self.data)} bytes, not IP"
        proto = L4_NAMES.get(l4[0], f"proto {l4[0]}")
        ports = self.ports()
        src, dst = self.src or "?", self.dst or "?"
        if ports:
            src, dst = _hostport(src, ports[0]), _hostport(dst, ports[1])
        return f"IPv{self.version} {proto} {src} > {dst}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Sniffers:
    """Context manager: capture what leaves `ifaces` until the block ends.
    `drain()` hands over the packets captured since the last call."""

    def __init__(self, ifaces: list[str]):
        self.ifaces = ifaces
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> "Sniffers":
        try:
            for iface in self.ifaces:
                self._sockets.append(_open(iface))
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def drain(self) -> list[Packet]:
        packets = []
        for sock in self._sockets:
            while True:
                try:
                    data, address = sock.recvfrom(SNAPLEN)
                except (BlockingIOError, InterruptedError):
                    break
                if address[2] == PACKET_OUTGOING and address[1] in (ETH_P_IP, ETH_P_IPV6):
                    packets.append(Packet(address[0], data))
        return packets

    def _close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def _open(iface: str) -> socket.socket:
    # protocol 0: nothing is queued until bind() names the interface, after the filter is in place
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    try:
        _attach_filter(sock)
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):  # FORCE passes rmem_max with CAP_NET_ADMIN
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RCVBUF)
                break
            except OSError:
                continue
        sock.bind((iface, ETH_P_ALL))  # CPython converts to network order itself
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _attach_filter(sock: socket.socket) -> None:
    program = b"".join(struct.pack("=HBBI", *insn) for insn in BPF_OUTGOING_ONLY)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("@HP", len(BPF_OUTGOING_ONLY), ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
