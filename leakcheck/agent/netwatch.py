"""Waiting for network changes: a netlink socket subscribed to link, address,
route and rule notifications. The agent blocks on it (select), so an idle
agent costs nothing; only message headers are read (and a link message's
change mask, to ignore packet captures switching promiscuous mode).

pyroute2 does the state dumps of a run; for this wait a bare stdlib
AF_NETLINK socket is enough and keeps the idle agent small.
"""

from __future__ import annotations

import select
import socket
import struct
import time

# linux/rtnetlink.h multicast group bits (RTMGRP_*).
GROUPS = {
    "link": 0x1, "ipv4-address": 0x10, "ipv4-route": 0x40, "ipv4-rule": 0x80,
    "ipv6-address": 0x100, "ipv6-route": 0x400,
}
IPV6_RULE_GROUP = 19  # RTNLGRP_IPV6_RULE has no legacy bit: joined by membership
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
KINDS = {16: "link", 17: "link", 20: "address", 21: "address", 24: "route", 25: "route",
         32: "rule", 33: "rule"}
HEADER = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BBHiII")  # family, pad, type, index, flags, change
RTM_NEWLINK = 16
# A packet capture (ours included: every active run captures) toggles these
# on the interfaces it listens on; the kernel announces each toggle as an
# RTM_NEWLINK whose change mask holds only these bits. Not a network change:
# counting it would make every run trigger the next one.
IFF_PROMISC, IFF_ALLMULTI = 0x100, 0x200
NOISE = IFF_PROMISC | IFF_ALLMULTI


class NetlinkWatcher:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        # A burst (a roam re-adds many routes) must not overflow the queue.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((0, sum(GROUPS.values())))
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, IPV6_RULE_GROUP)
        except OSError:
            pass  # no IPv6: there are no IPv6 rules to watch either
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self) -> set[str]:
        """Kinds of the changes waiting on the socket (without blocking);
        empty if there were only capture mode toggles. A queue overflow
        (ENOBUFS) counts as 'something changed'."""
        kinds: set[str] = set()
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return kinds
            except OSError:
                kinds.add("overflow")
                continue
            offset = 0
            while offset + HEADER.size <= len(data):
                length, kind, _flags, _seq, _pid = HEADER.unpack_from(data, offset)
                if kind in KINDS and not _capture_noise(data, offset, length, kind):
                    kinds.add(KINDS[kind])
                if length < HEADER.size:
                    break
                offset += (length + 3) & ~3

    def settle(self, quiet_s: float, max_s: float) -> set[str]:
        """Debounce: after a first change, gather until the network has been
        quiet for `quiet_s`, but never wait longer than `max_s` in all (a
        Wi-Fi roam is one run, not a storm of them)."""
        kinds = self.read()
        end = time.monotonic() + max_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return kinds
            ready, _, _ = select.select([self.sock], [], [], min(quiet_s, left))
            if not ready:
                return kinds
            kinds |= self.read()


def _capture_noise(data: bytes, offset: int, length: int, kind: int) -> bool:
    """A link message that only says promiscuous/all-multicast mode changed."""
    if kind != RTM_NEWLINK or length < HEADER.size + IFINFO.size:
        return False
    change = IFINFO.unpack_from(data, offset + HEADER.size)[5]
    return change != 0 and not change & ~NOISE
