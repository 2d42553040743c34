"""Who sent a flow: the socket of a 5-tuple (sock_diag) and its process.

One sock_diag dump per protocol and family per batch of logged packets
(leakcheck/linux/sockets.py's reader) is matched in Python: connected
sockets by both ends, unconnected UDP sockets by their local port and
address (or wildcard). The socket's inode leads to the process through
/proc/PID/fd; the inode -> pid map is cached and a miss rescans only the
processes of the uid NFLOG named, so a flood of suspect flows from one app
does not walk every process each time. pid/command/exe/cgroup come from
/proc (no psutil: the watcher stays small).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Iterable

from leakcheck.linux import sockets
from leakcheck.watch.model import Owner

PROC = Path("/proc")


def _canonical(text: str) -> str:
    addr = ipaddress.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def match_socket(raw: Iterable[sockets.RawSocket], proto: str, src: str, sport: int, dst: str,
                 dport: int) -> sockets.RawSocket | None:
    """The socket that sent src:sport -> dst:dport: a connected one first, then an
    unconnected one on that local port (bound to src or to the wildcard)."""
    loose = None
    for s in raw:
        if s.protocol != proto or s.local_port != sport:
            continue
        local, remote = _canonical(s.local), _canonical(s.remote)
        if remote == dst and s.remote_port == dport and local in (src, "0.0.0.0", "::"):
            return s
        if s.remote_port == 0 and local in (src, "0.0.0.0", "::") and loose is None:
            loose = s
    return loose


def dump_for(protocols: set[str], families: set[int]) -> list[sockets.RawSocket]:
    """sock_diag answers for only the protocols/families asked (all states)."""
    out: list[sockets.RawSocket] = []
    wanted = [(name, number) for name, number in sockets.PROTOCOLS if name in protocols]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, sockets.NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(1.0)
        seq = 0
        for name, number in wanted:
            for family in families:
                seq += 1
                try:
                    sock.send(sockets.encode_request(family, number, 0xFFFFFFFF, seq))
                    while not sockets.parse_dump(sock.recv(1 << 16), name, out):
                        pass
                except (OSError, sockets.DiagUnavailable):
                    continue  # udp_diag missing: TCP flows are still attributed
    return out


class OwnerLookup:
    def __init__(self, root: Path = PROC) -> None:
        self.root = root
        self._inodes: dict[int, int] = {}  # socket inode -> pid (cache, refreshed on a miss)

    def pid_of(self, inode: int, uid: int | None) -> int | None:
        if not inode:
            return None
        pid = self._inodes.get(inode)
        if pid is not None and (self.root / str(pid)).exists():
            return pid
        self._scan(uid)
        return self._inodes.get(inode)

    def _scan(self, uid: int | None) -> None:
        try:
            names = os.listdir(self.root)
        except OSError:
            return
        for name in names:
            if not name.isdigit():
                continue
            base = self.root / name
            if uid is not None:
                try:
                    if os.stat(base).st_uid != uid:
                        continue  # a socket's file belongs to its process's uid: skip the others
                except OSError:
                    continue
            try:
                fds = os.listdir(base / "fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(base / "fd" / fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    self._inodes[int(target[8:-1])] = int(name)

    def describe(self, pid: int | None, uid: int | None = None) -> Owner:
        if pid is None:
            return Owner(uid=uid)
        base = self.root / str(pid)
        try:
            command = (base / "comm").read_text().strip() or None
        except OSError:
            command = None
        try:
            exe = os.readlink(base / "exe")
        except OSError:
            exe = None
        return Owner(pid=pid, command=command, exe=exe, cgroup=read_cgroup(base / "cgroup"), uid=uid)


def read_cgroup(path: Path) -> str | None:
    """The cgroup v2 path (the systemd unit or scope is its last part)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("0::"):
                return line[3:] or "/"
    except OSError:
        pass
    return None
