"""Raw packet capture (leakcheck/capture.py) and the capture window of
active checks (leakcheck/active.py), on this machine's loopback: real
sockets, real packets, no lab needed (root: CAP_NET_RAW)."""

from __future__ import annotations

import socket

from leakcheck import active, capture


def _send_udp(payload: bytes, ttl: int = 3) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        sock.sendto(payload, ("127.0.0.1", 9))
        return sock.getsockname()[1]


def test_captures_what_leaves_an_interface_once() -> None:
    with capture.Sniffers(["lo"]) as sniffers:
        port = _send_udp(b"leakcheck capture-test-1")
        packets = [p for p in sniffers.drain() if b"capture-test-1" in p.data]
    # loopback carries the datagram out and back in: only the outgoing copy is
    # kept, and the port-unreachable error that quotes it
    assert sorted(p.protocol for p in packets) == [1, 17]
    packet = next(p for p in packets if p.protocol == 17)
    assert (packet.iface, packet.version, packet.ttl, packet.dst) == ("lo", 4, 3, "127.0.0.1")
    assert packet.ports() == (port, 9) and not packet.is_tcp()
    assert packet.summary() == f"IPv4 UDP 127.0.0.1:{port} > 127.0.0.1:9"


def test_an_icmp_error_quoting_the_packet_is_not_taken_for_it() -> None:
    probe = active.Probe("udp", "127.0.0.1", 9, nonce="capture-test-4")
    with capture.Sniffers(["lo"]) as sniffers:
        _send_udp(b"leakcheck capture-test-4")
        packets = [p for p in sniffers.drain() if b"capture-test-4" in p.data]
    assert [p.protocol for p in packets if probe.matches(p, None)] == [17]
    assert any(p.icmp_type() == 3 for p in packets)  # the error was there to be refused


def test_nothing_is_captured_after_the_block() -> None:
    sniffers = capture.Sniffers(["lo"])
    with sniffers:
        pass
    _send_udp(b"leakcheck capture-test-2")
    assert sniffers.drain() == []


def test_an_ipv6_packet_is_decoded() -> None:
    with capture.Sniffers(["lo"]) as sniffers, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 2)
        sock.sendto(b"leakcheck capture-test-3", ("::1", 9))
        port = sock.getsockname()[1]
        packet = next(p for p in sniffers.drain() if b"capture-test-3" in p.data)
    assert (packet.version, packet.ttl, packet.dst, packet.ports()) == (6, 2, "::1", (port, 9))
    assert packet.summary() == f"IPv6 UDP [::1]:{port} > [::1]:9"


def test_window_ends_early_once_every_packet_is_seen() -> None:
    probes = [active.Probe("udp", "127.0.0.1", 33434), active.Probe("tcp", "127.0.0.1", 1)]
    observations = active.observe(probes, ["lo"], [])
    assert [o.outcome for o in observations] == ["clear", "clear"]
    assert observations[0].packet and "IPv4 UDP" in observations[0].packet and "(ttl/hlim 3) on lo" in observations[0].packet
    assert observations[1].clear_dst == "127.0.0.1"
    assert active.last_window_end == "all seen"


def test_window_runs_to_its_limit_when_a_packet_never_shows() -> None:
    # sent to loopback but watched on no interface that carries it: never seen
    observations = active.observe([active.Probe("udp", "127.0.0.1", 33434)], [], [])
    assert observations[0].outcome == "not-seen"
    assert active.last_window_end == "limit"
