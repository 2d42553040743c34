"""What the agent's netlink wait counts as a network change (recorded-style
messages, no namespace needed)."""

from __future__ import annotations

import socket
import struct

from leakcheck.agent.netwatch import HEADER, IFINFO, NetlinkWatcher


def message(kind: int, change: int = 0, flags: int = 0x11043) -> bytes:
    body = IFINFO.pack(socket.AF_UNSPEC, 0, 1, 2, flags, change) if kind in (16, 17) else b"\0" * 12
    return HEADER.pack(HEADER.size + len(body), kind, 0, 0, 0) + body


class FakeSocket:
    def __init__(self, *datagrams: bytes):
        self.datagrams = list(datagrams)

    def recv(self, _size: int) -> bytes:
        if not self.datagrams:
            raise BlockingIOError
        return self.datagrams.pop(0)


def kinds_of(*datagrams: bytes) -> set[str]:
    watcher = NetlinkWatcher.__new__(NetlinkWatcher)
    watcher.sock = FakeSocket(*datagrams)
    return watcher.read()


def test_capture_toggling_promiscuous_mode_is_not_a_change():
    # What scapy's sniff does to eth0 and wg0 during every active run.
    assert kinds_of(message(16, change=0x100), message(16, change=0x100 | 0x200)) == set()


def test_real_link_changes_count():
    assert kinds_of(message(16, change=0x1)) == {"link"}  # IFF_UP
    assert kinds_of(message(16, change=0x100 | 0x1)) == {"link"}  # promisc and up together
    assert kinds_of(message(16, change=0)) == {"link"}  # operstate / carrier notices
    assert kinds_of(message(16, change=0xFFFFFFFF)) == {"link"}  # a new link
    assert kinds_of(message(17, change=0x100)) == {"link"}  # a removed link


def test_routes_addresses_rules_and_several_messages_per_datagram():
    datagram = message(16, change=0x100) + message(24) + message(20) + message(32)
    assert kinds_of(datagram) == {"route", "address", "rule"}
    assert kinds_of(struct.pack("=IHHII", 16, 3, 0, 0, 0)) == set()  # NLMSG_DONE: nothing
