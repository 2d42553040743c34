"""Processes and live sockets through psutil (the macOS and Windows backends;
Linux reads sock_diag in leakcheck/linux/sockets.py)."""

from __future__ import annotations

import socket

from leakcheck.netstate import Activity, ProcessInfo, SocketInfo

STATES = {"ESTABLISHED": "established", "SYN_SENT": "syn-sent", "LISTEN": "listen", "NONE": "unconnected"}


def read_activity(notes: list[str]) -> Activity | None:
    import psutil

    limits: list[str] = []
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        notes.append("sockets: psutil.net_connections needs root/administrator here")
        return None
    processes: dict[int, ProcessInfo] = {}
    sockets = []
    for conn in conns:
        if conn.pid and conn.pid not in processes:
            processes[conn.pid] = _process(conn.pid, limits)
        local = conn.laddr
        remote = conn.raddr or None
        sockets.append(SocketInfo(
            protocol="tcp" if conn.type == socket.SOCK_STREAM else "udp",
            family=4 if conn.family == socket.AF_INET else 6, state=STATES.get(conn.status, conn.status.lower()),
            local=local.ip if local else "", local_port=local.port if local else 0,
            remote=remote.ip if remote else None, remote_port=remote.port if remote else None,
            uid=-1, inode=0, pids=(conn.pid,) if conn.pid else ()))
    complete = all(s.pids for s in sockets)
    if not complete:
        limits.append("some sockets' owning processes were not visible (not root/administrator)")
    return Activity(processes=tuple(processes.values()), sockets=tuple(sockets), socket_source="psutil",
                    complete=complete, limits=tuple(dict.fromkeys(limits)))


def _process(pid: int, limits: list[str]) -> ProcessInfo:
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            uids = getattr(proc, "uids", None)
            uid = uids().real if uids else -1
            try:
                exe = proc.exe()
            except (psutil.AccessDenied, OSError):
                exe = None
            return ProcessInfo(pid=pid, name=proc.name(), uid=uid, user=_user(proc), exe=exe)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        limits.append("some processes could not be read")
        return ProcessInfo(pid=pid, name="?", uid=-1)


def _user(proc) -> str | None:
    try:
        return proc.username()
    except Exception:  # psutil raises several kinds across platforms
        return None
