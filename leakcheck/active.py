"""Active evidence: send a uniquely marked packet through the normal socket
API and watch which interface it leaves by.

Because the packet is sent like an application's (routing, policy rules,
xfrm and the firewall all apply), an observation beats any inference. Each
packet carries a nonce, and a small TTL / hop limit so that a leaked canary
is seen on the local link but never travels far beyond it.

Capture reads raw packet sockets on every interface (leakcheck.capture,
imported only when an active check actually runs), closed on every path.
The capture window ends as soon as every packet is accounted for. Without
CAP_NET_RAW, `ActiveUnavailable`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from leakcheck.capture import Packet, Sniffers

log = logging.getLogger(__name__)

ICMP_ECHO, ICMPV6_ECHO = 8, 128
DEFAULT_TTL = 3  # a few hops: past the local gateway, never across the internet
SETTLE_S = 0.2  # longest wait for packets after the last sender finished
SEND_WAIT_S = 0.3  # longest wait for the senders (a DNS lookup may block for seconds)
GRACE_S = 0.02  # after every packet is accounted for: copies on other interfaces, parallel DNS queries
POLL_S = 0.005
READY_TIMEOUT_S = 1.0
last_window_end = ""  # how the latest capture window ended ("all seen" or "limit"), for tests and -v


class ActiveUnavailable(Exception):
    """Active checks cannot run here (not root, no capture support)."""


@dataclass(frozen=True)
class Probe:
    """One packet to send. kind: udp | dns | tcp | icmp."""

    kind: str
    dst: str
    port: int = 0
    uid: int | None = None
    mark: int | None = None
    ttl: int = DEFAULT_TTL
    qname: str | None = None  # dns: the unique name asked through the system resolver
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    def matches(self, packet: Packet, local_port: int | None) -> bool:
        """Is this captured packet ours? By nonce, or for a TCP SYN by ports
        (known once the sender has connected); and by kind and destination,
        so that an ICMP error quoting the packet is not taken for it."""
        if self.kind == "dns":
            ports = packet.ports() or ()
            return (53 in ports or 853 in ports) and self.nonce.encode() in packet.data
        if packet.dst is None or ipaddress.ip_address(packet.dst) != ipaddress.ip_address(self.dst):
            return False
        if self.kind == "tcp":
            return local_port is not None and packet.is_tcp() and packet.ports() == (local_port, self.port or 443)
        if self.kind == "icmp":
            return packet.icmp_type() in (ICMP_ECHO, ICMPV6_ECHO) and self.nonce.encode() in packet.data
        return packet.protocol == socket.IPPROTO_UDP and self.nonce.encode() in packet.data


@dataclass
class Observation:
    probe: Probe
    clear_on: list[str] = field(default_factory=list)  # non-tunnel interfaces it left by in clear
    tunnel_on: list[str] = field(default_factory=list)  # tunnel interfaces it was seen on
    packet: str | None = None  # one-line summary of the first clear packet
    send_error: str | None = None
    local_port: int | None = None  # tcp: the source port the kernel chose
    clear_dst: str | None = None  # destination address of the first clear packet

    @property
    def outcome(self) -> str:
        if self.clear_on:
            return "clear"
        if self.tunnel_on:
            return "tunnel"
        if self.send_error:
            return "not-sent"
        return "not-seen"  # blocked, held back by IPsec policy, or encapsulated

    def evidence(self) -> dict[str, object]:
        out: dict[str, object] = {"method": "active", "packet_kind": self.probe.kind,
                                  "destination": self.probe.dst, "outcome": self.outcome,
                                  "ttl": self.probe.ttl}
        if self.probe.port:
            out["port"] = self.probe.port
        if self.probe.qname:
            out["query_name"] = self.probe.qname
        if self.clear_on:
            out["seen_in_clear_on"] = list(self.clear_on)
            out["sent_to"] = self.clear_dst
        if self.tunnel_on:
            out["seen_on_tunnel"] = list(self.tunnel_on)
        if self.packet:
            out["packet"] = self.packet
        if self.send_error:
            out["send_error"] = self.send_error
        return out


def available() -> str | None:
    """Why active checks cannot run here, or None."""
    from leakcheck.privileges import CAP_NET_RAW, has
    if not has(CAP_NET_RAW):
        return "no CAP_NET_RAW (packet capture needs root or that capability)"
    return None


def observe(probes: Sequence[Probe], interfaces: Iterable[str], tunnel_interfaces: Iterable[str],
            dns_zone: str = "") -> list[Observation]:
    """Send every probe while sniffing `interfaces` (+ tunnels); one capture window.

    The window closes as soon as every packet is accounted for (seen, or
    refused by the kernel at send) and GRACE_S has passed for copies on other
    interfaces; at the latest SETTLE_S after the senders finished or
    SEND_WAIT_S ran out, as it always did."""
    reason = available()
    if reason:
        raise ActiveUnavailable(reason)
    tunnels = set(tunnel_interfaces)
    ifaces = sorted(set(interfaces) | tunnels)
    observations = [Observation(p) for p in probes]
    from leakcheck.capture import Sniffers

    window = _Window(observations, tunnels)
    # The senders' sockets stay open until the window closes: a live watch
    # (leakcheck.watch) looks a suspect packet's socket up to learn its process, and
    # must find it to know the packet is leakcheck's own test, not a leaking app's.
    held: list[socket.socket] = []
    try:
        with Sniffers(ifaces) as sniffers:
            window.run([_send(obs, held) for obs in observations], sniffers)
            window.take(sniffers.drain())  # the last ones, queued since the last look
    finally:
        for sock in held:
            sock.close()
    global last_window_end
    last_window_end = window.ended
    return observations


class _Window:
    """Matches sniffed packets to observations while the senders run, and
    decides when nothing more is to be learnt."""

    def __init__(self, observations: list[Observation], tunnels: set[str]):
        self.observations = observations
        self.tunnels = tunnels
        self.packets: list[Packet] = []
        self.scanned = [0] * len(observations)  # packets already matched against each observation
        self.seen: set[int] = set()  # observations with a matching packet
        self.ended = ""  # why the window closed: "all seen" or "limit"

    def run(self, senders: list[threading.Thread], sniffers: Sniffers) -> None:
        send_deadline = time.monotonic() + SEND_WAIT_S
        senders_done: float | None = None
        accounted_at: float | None = None
        while True:
            now = time.monotonic()
            self.take(sniffers.drain())
            if senders_done is None and not any(t.is_alive() for t in senders):
                senders_done = now
            if senders_done is not None and accounted_at is None and self.accounted():
                accounted_at = now
            if accounted_at is not None and now >= accounted_at + GRACE_S:
                self.ended = "all seen"
                return
            if now >= min(senders_done or send_deadline, send_deadline) + SETTLE_S:
                self.ended = "limit"  # the longest window, as before
                return
            time.sleep(POLL_S)

    def accounted(self) -> bool:
        """Every packet is seen or was refused at send. (Called once the
        senders finished: a DNS lookup's queries, maybe several to several
        servers at once, were all sent before its answer came.)"""
        return all(obs.send_error is not None or index in self.seen
                   for index, obs in enumerate(self.observations))

    def take(self, packets: list[Packet]) -> None:
        self.packets.extend(packets)
        for index, obs in enumerate(self.observations):
            if obs.probe.kind == "tcp" and obs.local_port is None:
                continue  # its SYN is recognised by the source port, known once the sender connected
            for packet in self.packets[self.scanned[index]:]:
                if obs.probe.matches(packet, obs.local_port):
                    self.seen.add(index)
                    _record(obs, packet, packet.iface in self.tunnels)
            self.scanned[index] = len(self.packets)


def _record(obs: Observation, packet: Packet, on_tunnel: bool) -> None:
    target = obs.tunnel_on if on_tunnel else obs.clear_on
    if packet.iface not in target:
        target.append(packet.iface)
    if not on_tunnel and obs.packet is None:
        obs.packet = f"{packet.summary()} (ttl/hlim {packet.ttl}) on {packet.iface}"
        obs.clear_dst = packet.dst


def _send(obs: Observation, held: list[socket.socket]) -> threading.Thread:
    thread = threading.Thread(target=_send_now, args=(obs, held), daemon=True)
    thread.start()
    return thread


def _send_now(obs: Observation, held: list[socket.socket]) -> None:
    probe = obs.probe
    try:
        if probe.uid is not None:
            _send_as_user(probe, held)
        else:
            obs.local_port = send_packet(probe, held=held)
    except OSError as exc:
        obs.send_error = f"{type(exc).__name__}: {exc.strerror or exc}"
    except Exception as exc:  # a send failure is an observation, not a crash
        obs.send_error = f"{type(exc).__name__}: {exc}"


def _send_as_user(probe: Probe, held: list[socket.socket]) -> None:
    """Send as the probe's uid without forking (this runs in a sender thread while the
    sniffers' threads run: a fork there copies their locks mid-use). The socket is
    created while this thread's filesystem uid is the user's: Linux takes a socket's
    owner (what `uidrange` policy rules and the firewall's `skuid` match) from the
    creating thread's fsuid, and setfsuid changes only the calling thread."""
    send_packet(probe, owner=probe.uid, held=held)


@contextlib.contextmanager
def _fsuid(uid: int) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    previous = libc.setfsuid(uid)
    try:
        if libc.setfsuid(-1) != uid:  # setfsuid reports the current fsuid; -1 changes nothing
            raise OSError(f"cannot act as uid {uid} (setfsuid needs CAP_SETUID)")
        yield
    finally:
        libc.setfsuid(previous)


def send_packet(probe: Probe, owner: int | None = None, held: list[socket.socket] | None = None) -> int | None:
    """Send one probe packet (from a socket owned by uid `owner` when given); returns
    the local port for TCP (to match the SYN). With `held`, the socket is left open
    and appended there for the caller to close."""
    payload = b"leakcheck " + probe.nonce.encode()
    if probe.kind == "dns":
        _resolve(probe)
        return None
    family = socket.AF_INET6 if ipaddress.ip_address(probe.dst).version == 6 else socket.AF_INET
    with (_fsuid(owner) if owner is not None else contextlib.nullcontext()):
        sock = _new_socket(probe.kind, family)
    if held is not None:
        held.append(sock)  # list.append is atomic: sender threads share the list
    with sock if held is None else contextlib.nullcontext(sock):
        _prepare(sock, family, probe)
        if probe.kind == "udp":
            sock.sendto(payload, (probe.dst, probe.port or 33434))
        elif probe.kind == "tcp":
            sock.setblocking(False)
            try:
                sock.connect((probe.dst, probe.port or 443))
            except (BlockingIOError, InterruptedError):
                pass
            port = sock.getsockname()[1]
            time.sleep(0.05)  # let the SYN go before the socket closes
            return port
        else:
            icmp_type = ICMPV6_ECHO if family == socket.AF_INET6 else ICMP_ECHO
            header = struct.pack("!BBHHH", icmp_type, 0, 0, os.getpid() & 0xFFFF, 1)
            message = header + payload
            if family == socket.AF_INET:
                message = header[:2] + struct.pack("!H", _checksum(message)) + header[4:] + payload
            sock.sendto(message, (probe.dst, 0))
    return None


def _new_socket(kind: str, family: int) -> socket.socket:
    if kind == "udp":
        return socket.socket(family, socket.SOCK_DGRAM)
    if kind == "tcp":
        return socket.socket(family, socket.SOCK_STREAM)
    if kind == "icmp":
        proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
        return socket.socket(family, socket.SOCK_RAW, proto)
    raise ValueError(f"unknown packet kind {kind}")


def _prepare(sock: socket.socket, family: int, probe: Probe) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, probe.ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, probe.ttl)
    if probe.mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, probe.mark)


def _resolve(probe: Probe) -> None:
    """Ask the system resolver (libc, so resolv.conf and NSS apply) for a
    unique name; only where the query leaves matters, not the answer."""
    try:
        socket.getaddrinfo(probe.qname or "", None)
    except (socket.gaierror, UnicodeError):
        pass


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


# Without canaries.dns_zone the unique name goes under a top-level label that is not
# delegated. Not under a special-use name (RFC 6761): systemd-resolved answers
# `.invalid` and `.alt` itself and unbound serves `.test`/`.invalid` as local zones, so
# the query would never leave the machine and a DNS leak would go unseen.
DEFAULT_DNS_ZONE = "leakcheck-probe"


def unique_name(zone: str) -> tuple[str, str]:
    """(nonce, name): a name nobody has asked before, under `zone` if set."""
    nonce = secrets.token_hex(8)
    return nonce, f"lc-{nonce}.{zone or DEFAULT_DNS_ZONE}"


FIREWALL_ERRORS = ("PermissionError", "Operation not permitted", "Permission denied")


def blocked_by_firewall(obs: Observation) -> bool:
    """The kernel refused to send it (an OUTPUT drop/reject: a kill switch)."""
    return obs.outcome == "not-sent" and any(e in (obs.send_error or "") for e in FIREWALL_ERRORS)


def confirm(inferred_leak: bool, obs: Observation | None) -> tuple[bool, str]:
    """Combine inference with an observation: (leaks, method). An observed
    clear packet is a leak whatever the routes say; a send the firewall
    refused is not; otherwise the inference stands."""
    if obs is None:
        return inferred_leak, "inferred"
    if obs.outcome == "clear":
        return True, "observed"
    if blocked_by_firewall(obs):
        return False, "observed"
    return inferred_leak, "inferred"
