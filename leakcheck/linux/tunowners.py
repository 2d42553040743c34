"""Who holds each tun/tap/ppp device, and which VPN server it talks to.

WireGuard peers and IPsec policies name their outer endpoints; every other
interface tunnel (OpenVPN, openconnect, openfortivpn, strongSwan's
kernel-libipsec, pppd, any client) is a process holding the device, and the
server is whoever that process talks to outside the tunnel. No client is
named here:

1. **The holder.** A process with `/dev/net/tun` open whose fdinfo says
   `iff:\tNAME` (Linux >= 4.9 prints the attached interface there) holds
   tun/tap device NAME. A ppp unit belongs to the pppd whose pid is in
   /run/NAME.pid (pppd writes it), or to the only holder of /dev/ppp when
   there is one ppp link.
2. **Its sockets.** The TCP and UDP sockets of the holder (and, when it has
   none, of its parents: openfortivpn runs pppd as a child and keeps the TLS
   socket itself) that are not on a tunnel interface:
   - connected ones (TCP, connected UDP): the remote address is the server
     (method "socket");
   - unconnected UDP ones (OpenVPN and charon send with sendto, so the
     kernel keeps no peer): the conntrack flows from their local port,
     where the kernel tracks connections (method "conntrack");
   - a vici control socket (strongSwan's charon): the remote hosts of its
     IKE SAs, asked over it (leakcheck/linux/vici.py; method "vici").
3. **The client's own configuration** (`remote HOST` on its command line
   or in its config file) adds evidence, never decides: a configured
   address counts only when the kernel agrees, i.e. a host route to it
   leaves through a physical interface (as OpenVPN's redirect-gateway
   adds) (method "configuration+host-route"). Names are not resolved:
   leakcheck sends no DNS query of its own.

Reading other users' /proc/PID/fd needs root; without it, holders that are
not ours are not seen and the caller notes it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from leakcheck.netstate import Link, Route, SocketInfo, TunnelOwner

PROC = Path("/proc")
RUN_DIRS = (Path("/run"), Path("/var/run"))
TUN_DEVICE = "/dev/net/tun"
PPP_DEVICE = "/dev/ppp"
TUNNEL_LINK_KINDS = {"tun", "ppp"}  # tap devices are netlink kind "tun" too
MAX_PROCESSES = 5000  # the same bound as the socket reader's process scan
MAX_ANCESTORS = 3  # pppd <- openfortivpn <- a GUI wrapper at most
CONFIG_BYTES = 256 * 1024  # a client config larger than this is not read
IFF_LINE = re.compile(r"^iff:\s*(\S+)\s*$", re.MULTILINE)
CONNTRACK_FLOW = re.compile(r"\b(tcp|udp)\b.*?\bsrc=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")
CONNECTED_TCP = {"established", "syn-sent", "fin-wait-1", "fin-wait-2", "close-wait", "last-ack", "closing"}


# ---------------------------------------------------------------- parsing (unit-tested on recorded text)

def parse_fdinfo_iff(text: str) -> str | None:
    """The interface a /dev/net/tun file is attached to (fdinfo's `iff:` line)."""
    match = IFF_LINE.search(text)
    return match.group(1) if match else None


def parse_ppid(stat: str) -> int | None:
    """The parent pid from /proc/PID/stat (after the parenthesised command name)."""
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def parse_pidfile(text: str) -> int | None:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return int(first) if first.isdigit() else None


@dataclass(frozen=True)
class Flow:
    protocol: str
    src: str
    dst: str
    sport: int
    dport: int


def parse_conntrack(text: str) -> list[Flow]:
    """The original direction of each /proc/net/nf_conntrack entry."""
    flows = []
    for line in text.splitlines():
        match = CONNTRACK_FLOW.search(line)
        if match:
            proto, src, dst, sport, dport = match.groups()
            flows.append(Flow(proto, _canonical(src), _canonical(dst), int(sport), int(dport)))
    return flows


def configured_remotes(argv: Sequence[str], config_text: str = "") -> list[str]:
    """Hosts named by `--remote HOST` on the command line or `remote HOST` lines
    of the config file (in order, without duplicates)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--remote" and i + 1 < len(argv):
            out.append(argv[i + 1])
    for line in config_text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "remote":
            out.append(words[1])
    return list(dict.fromkeys(out))


def config_path(argv: Sequence[str]) -> str | None:
    """The config file of a client started as `prog --config FILE` or `prog FILE`
    (OpenVPN's single-argument form)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    if len(argv) == 2 and not argv[1].startswith("-"):
        return argv[1]
    return None


def _canonical(text: str) -> str:
    addr = ipaddress.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _literal_address(text: str) -> str | None:
    try:
        return _canonical(text.strip("[]"))
    except ValueError:
        return None


# ---------------------------------------------------------------- the /proc scan

@dataclass
class Holding:
    """What one process holds: tun interfaces, /dev/ppp, socket inodes."""

    pid: int
    tun_ifnames: list[str] = field(default_factory=list)
    ppp: bool = False
    inodes: set[int] = field(default_factory=set)


def _own_netns(root: Path) -> str | None:
    try:
        return os.readlink(root / "self" / "ns" / "net")
    except OSError:
        return None


def read_holding(pid: int, root: Path = PROC) -> Holding | None:
    """The fds of one process that matter here; None when they cannot be read."""
    base = root / str(pid)
    try:
        fds = os.listdir(base / "fd")
    except OSError:
        return None
    holding = Holding(pid)
    for fd in fds:
        try:
            target = os.readlink(base / "fd" / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            holding.inodes.add(int(target[8:-1]))
        elif target == TUN_DEVICE:
            try:
                name = parse_fdinfo_iff((base / "fdinfo" / fd).read_text())
            except OSError:
                name = None
            if name:
                holding.tun_ifnames.append(name)
        elif target == PPP_DEVICE:
            holding.ppp = True
    return holding


def scan(root: Path = PROC, pids: Iterable[int] | None = None) -> tuple[list[Holding], int]:
    """Processes of this network namespace holding a tun device or /dev/ppp,
    and how many processes could not be looked into. `pids` limits the scan
    to known candidates (the socket reader's /dev/net/tun holders)."""
    netns = _own_netns(root)
    found, hidden = [], 0
    names = [str(p) for p in pids] if pids is not None else os.listdir(root)
    for count, name in enumerate(names):
        if count >= MAX_PROCESSES:
            break
        if not name.isdigit():
            continue
        try:
            if netns and os.readlink(root / name / "ns" / "net") != netns:
                continue
        except OSError:
            hidden += 1
            continue
        holding = read_holding(int(name), root)
        if holding is None:
            hidden += 1
        elif holding.tun_ifnames or holding.ppp:
            found.append(holding)
    return found, hidden


def _ppp_owner(ifname: str, holders: list[Holding], ppp_links: int,
               run_dirs: Sequence[Path] = RUN_DIRS) -> Holding | None:
    for run in run_dirs:
        try:
            pid = parse_pidfile((run / f"{ifname}.pid").read_text())
        except OSError:
            continue
        match = next((h for h in holders if h.pid == pid and h.ppp), None)
        if match:
            return match
    candidates = [h for h in holders if h.ppp]
    return candidates[0] if ppp_links == 1 and len(candidates) == 1 else None


# ---------------------------------------------------------------- endpoints of one holder

@dataclass(frozen=True)
class Evidence:
    address: str
    how: str


def socket_endpoints(socks: Iterable[SocketInfo], tunnel_names: set[str],
                     tunnel_addresses: set[str]) -> list[Evidence]:
    """Remote ends of connected sockets outside the tunnel."""
    out = []
    for sock in socks:
        if sock.remote is None or not _outside(sock, tunnel_names, tunnel_addresses):
            continue
        if sock.protocol == "tcp" and sock.state not in CONNECTED_TCP:
            continue
        out.append(Evidence(sock.remote, f"socket: {sock.describe()} ({sock.state})"))
    return out


def conntrack_endpoints(socks: Iterable[SocketInfo], flows: Sequence[Flow], tunnel_names: set[str],
                        tunnel_addresses: set[str]) -> list[Evidence]:
    """Peers of unconnected UDP sockets, from the flows the kernel tracks from their port."""
    out = []
    for sock in socks:
        if sock.protocol != "udp" or sock.remote is not None or not _outside(sock, tunnel_names, tunnel_addresses):
            continue
        for flow in flows:
            local_side = flow.sport == sock.local_port and flow.src not in tunnel_addresses
            remote_side = flow.dport == sock.local_port and flow.dst not in tunnel_addresses
            peer = flow.dst if local_side else flow.src if remote_side else None
            if flow.protocol != "udp" or peer is None or _is_local_only(peer):
                continue
            out.append(Evidence(peer, f"conntrack: udp {flow.src}:{flow.sport} <-> {flow.dst}:{flow.dport} "
                                      f"on the socket of local port {sock.local_port}"))
    return out


def config_endpoints(remotes: Sequence[str], routes: Sequence[Route], tunnel_names: set[str]) -> list[Evidence]:
    """Configured addresses the kernel agrees with: a host route to each on a physical interface."""
    out = []
    for remote in remotes:
        address = _literal_address(remote)
        if address is None:
            continue
        addr = ipaddress.ip_address(address)
        for route in routes:
            if (route.type == "unicast" and route.dst.prefixlen == route.dst.max_prefixlen
                    and addr in route.dst and route.ifnames
                    and not any(n in tunnel_names for n in route.ifnames)):
                out.append(Evidence(address, f"configuration: remote {remote}, with the host route "
                                             f"{route.describe()}"))
                break
    return out


def vici_endpoints(pid: int, inodes: set[int], root: Path = PROC) -> list[Evidence]:
    """strongSwan's charon (kernel-libipsec holds ipsec0; its IKE/ESP sockets are
    unconnected): the remote hosts of its IKE SAs, asked on the vici socket it
    listens on. Nothing when the process has no such socket or it does not answer."""
    from leakcheck.linux import vici

    path = vici.control_socket(pid, inodes, root)
    if path is None:
        return []
    try:
        events = vici.list_sas(path)
    except vici.ViciError:
        return []
    return [Evidence(address, f"vici: IKE SA {name} ({state}) with remote-host {address}")
            for name, state, address in vici.peers_of(events)]


def _outside(sock: SocketInfo, tunnel_names: set[str], tunnel_addresses: set[str]) -> bool:
    """A socket that is not bound to, nor addressed from, a tunnel interface."""
    if sock.bound_device and sock.bound_device in tunnel_names:
        return False
    if sock.local in tunnel_addresses:
        return False
    return not (sock.remote and _is_local_only(sock.remote))


def _is_local_only(address: str) -> bool:
    addr = ipaddress.ip_address(address)
    return addr.is_loopback or addr.is_unspecified or addr.is_multicast


# ---------------------------------------------------------------- process facts

def _comm(pid: int, root: Path) -> str:
    try:
        return (root / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def _argv(pid: int, root: Path) -> list[str]:
    try:
        raw = (root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _config_text(pid: int, argv: Sequence[str], root: Path) -> str:
    path = config_path(argv)
    if not path:
        return ""
    base = root / str(pid) / "cwd"  # a relative path is the client's, not ours
    full = Path(path) if path.startswith("/") else base / path
    try:
        with open(full, "rb") as handle:
            return handle.read(CONFIG_BYTES).decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int, root: Path) -> int | None:
    try:
        return parse_ppid((root / str(pid) / "stat").read_text())
    except OSError:
        return None


# ---------------------------------------------------------------- assembling

def read(links: Sequence[Link], addresses: Iterable, routes: Sequence[Route],
         sockets: Sequence[SocketInfo] | None, notes: list[str], root: Path = PROC,
         conntrack_path: Path | None = None, run_dirs: Sequence[Path] = RUN_DIRS,
         tun_holders: Iterable[int] | None = None) -> tuple[TunnelOwner, ...]:
    """Owners of the tun/tap/ppp links and their servers. `sockets` are this
    namespace's sockets (the activity reader's); None reads them here.
    `tun_holders`: pids already known to hold /dev/net/tun (the activity
    reader's scan), so /proc is not walked twice; ignored when a ppp link
    needs its /dev/ppp holder found."""
    tunnels = [l for l in links if l.kind in TUNNEL_LINK_KINDS or l.name.startswith("ppp")]
    if not tunnels:
        return ()  # nothing to look for: no /proc scan at all
    ppp_links = sum(1 for l in tunnels if l.kind == "ppp" or l.name.startswith("ppp"))
    holders, hidden = scan(root, None if ppp_links else tun_holders)
    if hidden and os.geteuid() != 0:
        notes.append(f"tunnel owners: {hidden} processes not visible without root; a VPN client among "
                     "them is not seen (its server stays unknown)")
    if sockets is None:
        from leakcheck.linux import sockets as socket_reader
        sockets = socket_reader.build_sockets(socket_reader.dump(), {}, {l.index: l.name for l in links})
    by_inode = {s.inode: s for s in sockets if s.inode}
    tunnel_names = {l.name for l in tunnels}
    tunnel_addresses = {str(a.address) for a in addresses if a.ifname in tunnel_names}
    flows: list[Flow] | None = None
    owners = []
    for link in tunnels:
        holder = next((h for h in holders if link.name in h.tun_ifnames), None)
        if holder is None and (link.kind == "ppp" or link.name.startswith("ppp")):
            holder = _ppp_owner(link.name, holders, ppp_links, run_dirs)
        if holder is None:
            continue
        if flows is None:
            flows = _read_conntrack(conntrack_path or root / "net" / "nf_conntrack")
        evidence = _endpoints_of(holder, by_inode, flows, routes, tunnel_names, tunnel_addresses, root)
        owners.append(TunnelOwner(ifname=link.name, pid=holder.pid, name=_comm(holder.pid, root),
                                  endpoints=tuple(dict.fromkeys(e.address for e in evidence)),
                                  evidence=tuple(f"{e.address}: {e.how}" for e in evidence)))
    return tuple(owners)


def _endpoints_of(holder: Holding, by_inode: dict[int, SocketInfo], flows: list[Flow], routes: Sequence[Route],
                  tunnel_names: set[str], tunnel_addresses: set[str], root: Path) -> list[Evidence]:
    """The holder's servers; when it has no outer socket, its parents' (a client
    that runs pppd or a helper holding the device for it)."""
    pid: int | None = holder.pid
    current: Holding | None = holder
    remotes: list[str] = []
    for _ in range(MAX_ANCESTORS + 1):
        if current is None or pid is None or pid <= 1:
            break
        socks = [by_inode[i] for i in sorted(current.inodes) if i in by_inode]
        argv = _argv(pid, root)
        remotes += configured_remotes(argv, _config_text(pid, argv, root))
        found = socket_endpoints(socks, tunnel_names, tunnel_addresses)
        found += conntrack_endpoints(socks, flows, tunnel_names, tunnel_addresses)
        if not found:
            found = vici_endpoints(pid, current.inodes, root)
        if found:
            return found
        pid = _parent(pid, root)
        current = read_holding(pid, root) if pid and pid > 1 else None
    return config_endpoints(list(dict.fromkeys(remotes)), routes, tunnel_names)


def _read_conntrack(path: Path) -> list[Flow]:
    """The kernel's tracked flows (empty where conntrack does not run or is not
    readable): /proc/net/nf_conntrack, or ctnetlink where that file is not built in."""
    try:
        return parse_conntrack(path.read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return []
    from leakcheck.linux import conntrack
    try:
        return [Flow(f.protocol, _canonical(f.src), _canonical(f.dst), f.sport, f.dport) for f in conntrack.dump()]
    except (OSError, ValueError):
        return []


__all__ = ["read", "scan", "parse_fdinfo_iff", "parse_conntrack", "configured_remotes", "config_path",
           "socket_endpoints", "conntrack_endpoints", "vici_endpoints", "config_endpoints"]
