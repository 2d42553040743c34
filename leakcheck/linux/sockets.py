"""Processes, logins and live sockets of this network namespace.

Sockets come from the kernel's socket diagnostics (NETLINK_SOCK_DIAG, what
`ss` uses): for every TCP and UDP socket its addresses, owner uid, inode,
the device it is bound to (SO_BINDTODEVICE) and, with CAP_NET_ADMIN, its
mark (SO_MARK). No other interface tells the bound device. Owning processes
are found by the socket inodes in /proc/PID/fd (root sees every process;
a user only their own), and described with psutil (name, exe, user).
When sock_diag is not available, psutil's connection table stands in
(without bound devices or marks).

Only processes of this network namespace count: a container's processes
use its own routing, not this host's.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from leakcheck.netstate import Activity, ProcessInfo, SocketInfo
from leakcheck.privileges import CAP_NET_ADMIN, has

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
INET_DIAG_MARK, INET_DIAG_CGROUP_ID = 15, 21

NLMSGHDR = struct.Struct("=IHHII")
REQ_HEAD = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans
SOCKID_PORTS = struct.Struct("!HH")
SOCKID_TAIL = struct.Struct("=III")  # if, cookie[2]
MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode
RTATTR = struct.Struct("=HH")
MSG_SIZE = MSG_HEAD.size + SOCKID_PORTS.size + 32 + SOCKID_TAIL.size + MSG_TAIL.size  # 72

TCP_STATES = {1: "established", 2: "syn-sent", 3: "syn-recv", 4: "fin-wait-1", 5: "fin-wait-2",
              6: "time-wait", 7: "close", 8: "close-wait", 9: "last-ack", 10: "listen", 11: "closing",
              12: "new-syn-recv"}
# Outgoing traffic only: listeners, half-open incoming and time-wait sockets send nothing of their own.
TCP_WANTED = (1, 2, 4, 5, 8, 9, 11)
PROTOCOLS = (("tcp", socket.IPPROTO_TCP), ("udp", socket.IPPROTO_UDP))
PROC = Path("/proc")
MAX_PROCESSES = 5000  # a bound for pathological hosts; a laptop has a few hundred


class DiagUnavailable(Exception):
    """The kernel does not answer socket diagnostics here."""


@dataclass(frozen=True)
class RawSocket:
    """One inet_diag answer, before owners are known."""

    protocol: str
    family: int
    state: int
    local: str
    local_port: int
    remote: str
    remote_port: int
    ifindex: int
    uid: int
    inode: int
    mark: int | None


# ---------------------------------------------------------------- sock_diag

def encode_request(family: int, protocol: int, states: int, seq: int) -> bytes:
    body = (REQ_HEAD.pack(family, protocol, 0, states) + SOCKID_PORTS.pack(0, 0) + bytes(32)
            + SOCKID_TAIL.pack(0, 0xFFFFFFFF, 0xFFFFFFFF))
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq,
                         0) + body


def decode_message(data: bytes, offset: int, end: int, protocol: str) -> RawSocket:
    family, state, _timer, _retrans = MSG_HEAD.unpack_from(data, offset)
    pos = offset + MSG_HEAD.size
    sport, dport = SOCKID_PORTS.unpack_from(data, pos)
    pos += SOCKID_PORTS.size
    size = 4 if family == socket.AF_INET else 16
    src, dst = data[pos:pos + size], data[pos + 16:pos + 16 + size]
    pos += 32
    ifindex, _c0, _c1 = SOCKID_TAIL.unpack_from(data, pos)
    pos += SOCKID_TAIL.size
    _expires, _rq, _wq, uid, inode = MSG_TAIL.unpack_from(data, pos)
    pos += MSG_TAIL.size
    mark = None
    while pos + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, pos)
        if length < RTATTR.size:
            break
        if kind == INET_DIAG_MARK and length >= RTATTR.size + 4:
            mark = struct.unpack_from("=I", data, pos + RTATTR.size)[0]
        pos += (length + 3) & ~3
    af = socket.AF_INET if family == socket.AF_INET else socket.AF_INET6
    return RawSocket(protocol=protocol, family=4 if family == socket.AF_INET else 6, state=state,
                     local=socket.inet_ntop(af, src), local_port=sport, remote=socket.inet_ntop(af, dst),
                     remote_port=dport, ifindex=ifindex, uid=uid, inode=inode, mark=mark)


def parse_dump(data: bytes, protocol: str, out: list[RawSocket]) -> bool:
    """Append the sockets in one netlink read; True once the dump is done."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size:
            return True
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, offset + NLMSGHDR.size)[0]
            if code:
                raise DiagUnavailable(f"sock_diag: {os.strerror(code)}")
            return True
        if mtype == SOCK_DIAG_BY_FAMILY and length >= NLMSGHDR.size + MSG_SIZE:
            out.append(decode_message(data, offset + NLMSGHDR.size, offset + length, protocol))
        offset += (length + 3) & ~3
    return False


def dump() -> list[RawSocket]:
    """Every TCP and UDP socket of this network namespace (IPv4 and IPv6)."""
    out: list[RawSocket] = []
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    except OSError as exc:
        raise DiagUnavailable(f"sock_diag: {exc}") from exc
    with sock:
        sock.settimeout(2.0)
        seq = 0
        for name, proto in PROTOCOLS:
            states = sum(1 << s for s in TCP_WANTED) if name == "tcp" else 0xFFFFFFFF
            for family in (socket.AF_INET, socket.AF_INET6):
                seq += 1
                try:
                    sock.send(encode_request(family, proto, states, seq))
                    while not parse_dump(sock.recv(1 << 16), name, out):
                        pass
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP) and name == "udp":
                        continue  # udp_diag not loaded: TCP is still seen
                    raise DiagUnavailable(f"sock_diag: {exc}") from exc
    return out


# ---------------------------------------------------------------- processes

def _own_netns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return None


def _pids(root: Path = PROC) -> Iterator[int]:
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        if name.isdigit():
            yield int(name)


@dataclass
class _ProcScan:
    inodes: dict[int, list[int]]  # socket inode -> pids
    pids: list[int]  # processes of this network namespace
    tun: set[int]  # pids holding /dev/net/tun
    hidden: int  # processes whose fds could not be read


def scan_processes(root: Path = PROC, netns: str | None = None) -> _ProcScan:
    """Socket inodes and /dev/net/tun holders of the processes in our network namespace."""
    netns = netns if netns is not None else _own_netns()
    privileged = os.geteuid() == 0  # reading other processes' /proc entries: root, not capabilities
    scan = _ProcScan(inodes={}, pids=[], tun=set(), hidden=0)
    for count, pid in enumerate(_pids(root)):
        if count >= MAX_PROCESSES:
            break
        base = root / str(pid)
        try:
            theirs = os.readlink(base / "ns" / "net")
        except OSError:
            # not ours to read: without root count it (it may share our namespace);
            # root is refused only for processes outside this sandbox
            if privileged:
                continue
            theirs = None
        if netns and theirs and theirs != netns:
            continue
        try:
            fds = os.listdir(base / "fd")
        except PermissionError:
            scan.hidden += 1
            scan.pids.append(pid)
            continue
        except OSError:
            continue  # exited meanwhile
        scan.pids.append(pid)
        for fd in fds:
            try:
                target = os.readlink(base / "fd" / fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                scan.inodes.setdefault(int(target[8:-1]), []).append(pid)
            elif target == "/dev/net/tun":
                scan.tun.add(pid)
    return scan


def describe_processes(pids: Iterable[int], tun: set[int]) -> list[ProcessInfo]:
    import psutil  # only here: the perapp probe needs process names, nothing else does

    out = []
    for pid in sorted(set(pids)):
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                name = proc.name()
                uid = proc.uids().effective
                try:
                    exe = proc.exe() or None
                except (psutil.AccessDenied, psutil.ZombieProcess, OSError):
                    exe = None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        out.append(ProcessInfo(pid=pid, name=name, uid=uid, user=user_name(uid), exe=exe,
                               cgroup=_cgroup(pid), tunnel_client=pid in tun))
    return out


def _cgroup(pid: int) -> str | None:
    try:
        for line in (PROC / str(pid) / "cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:] or "/"
    except OSError:
        pass
    return None


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def logins() -> list[tuple[str, int]]:
    """(user, uid) of every login session (utmp)."""
    try:
        import psutil
        names = sorted({u.name for u in psutil.users()})
    except Exception:  # utmp missing or unreadable: no logins to add
        return []
    out = []
    for name in names:
        try:
            out.append((name, pwd.getpwnam(name).pw_uid))
        except KeyError:
            continue
    return out


# ---------------------------------------------------------------- assembling

def _address(text: str, family: int) -> tuple[str, int]:
    """Canonical text and family; IPv4-mapped IPv6 becomes IPv4."""
    addr = ipaddress.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped), 4
    return str(addr), family


def build_sockets(raw: Iterable[RawSocket], inodes: dict[int, list[int]],
                  ifnames: dict[int, str]) -> list[SocketInfo]:
    out = []
    for s in raw:
        local, family = _address(s.local, s.family)
        remote, _ = _address(s.remote, s.family)
        connected = s.remote_port != 0 and not ipaddress.ip_address(remote).is_unspecified
        if s.protocol == "udp":
            state = "connected" if connected else "unconnected"
        else:
            state = TCP_STATES.get(s.state, str(s.state))
        out.append(SocketInfo(protocol=s.protocol, family=family, state=state, local=local,
                              local_port=s.local_port, remote=remote if connected else None,
                              remote_port=s.remote_port if connected else None, uid=s.uid, inode=s.inode,
                              bound_device=ifnames.get(s.ifindex, str(s.ifindex)) if s.ifindex else None,
                              mark=s.mark, pids=tuple(sorted(set(inodes.get(s.inode, ()))))))
    return out


def _psutil_sockets(ifnames: dict[int, str]) -> list[SocketInfo]:
    """Fallback without sock_diag: psutil's table (no bound device, no mark)."""
    import psutil

    out = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM) or conn.status == "LISTEN":
            continue
        family = 4 if conn.family == socket.AF_INET else 6
        local, family = _address(conn.laddr.ip, family) if conn.laddr else ("0.0.0.0", family)
        remote = _address(conn.raddr.ip, family)[0] if conn.raddr else None
        protocol = "tcp" if conn.type == socket.SOCK_STREAM else "udp"
        state = ("connected" if remote else "unconnected") if protocol == "udp" else conn.status.lower()
        out.append(SocketInfo(protocol=protocol, family=family, state=state, local=local,
                              local_port=conn.laddr.port if conn.laddr else 0, remote=remote,
                              remote_port=conn.raddr.port if conn.raddr else None, uid=-1, inode=0,
                              pids=(conn.pid,) if conn.pid else ()))
    return out


def read(notes: list[str], ifnames: dict[int, str]) -> Activity:
    """Processes of this namespace, their sockets, and login sessions."""
    limits: list[str] = []
    privileged = has(CAP_NET_ADMIN)  # SO_MARK in sock_diag answers: the agent unit has it without root
    scan = scan_processes()
    try:
        sockets = build_sockets(dump(), scan.inodes, ifnames)
        source = "sock_diag"
        if not privileged:
            limits.append("socket marks (SO_MARK) need CAP_NET_ADMIN: not read")
    except DiagUnavailable as exc:
        limits.append(f"{exc}; psutil's connection table used (no bound devices, no marks)")
        try:
            sockets = _psutil_sockets(ifnames)
            source = "psutil"
        except Exception as inner:  # psutil missing or refused: no sockets at all
            limits.append(f"psutil: {inner}")
            sockets, source = [], ""
    if scan.hidden:
        limits.append(f"{scan.hidden} processes of other users are not visible without root "
                      f"(their sockets show an owner uid but no process)")
    owners = {pid for s in sockets for pid in s.pids}
    try:
        processes = describe_processes(set(scan.pids) | owners, scan.tun)
    except ImportError as exc:
        limits.append(f"psutil not installed ({exc}): processes are not named")
        processes = []
    notes.extend(f"activity: {text}" for text in limits)
    return Activity(processes=tuple(processes), sockets=tuple(sockets), logins=tuple(logins()),
                    socket_source=source, complete=privileged and not scan.hidden and source == "sock_diag",
                    limits=tuple(limits))
