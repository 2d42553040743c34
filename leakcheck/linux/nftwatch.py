"""The kernel side of the live leak watch on Linux: an nftables table of
leakcheck's own that hands userspace only the suspects.

Its output and forward chains look at the first packet of each new
connection (`ct state new`) and return at once for everything that is not a
suspect: loopback, the tunnel interfaces, destinations that are not public
or are local networks, the VPN servers' outer addresses (so the VPN
client's own packets never reach us), the allowed managed exceptions, and
packets an IPsec policy will transform. What is left leaves a physical
interface for the internet outside the tunnel: it is logged through NFLOG
(group `GROUP` or the next free one, first `SNAPLEN` bytes, a per-second
limit shared by both chains) and read by leakcheck/linux/nflog.py. Table
and group are per watcher (`leakcheck_watch_<pid>`), so the agent's watch
and a helpdesk `leakcheck watch` run side by side. Tunnel traffic costs a few rule evaluations in
the kernel and nothing in userspace.

The table has the owner flag (made through libnftables inside this
process, as leakcheck/linux/nftcut.py does for the reconnect cut): the
kernel deletes it when the watcher's netlink socket closes, on exit or
SIGKILL. It only logs (every rule is `return` or `log`), so even a table
left by a kernel without the owner flag drops nothing; the next watch
deletes the tables of watchers that are gone. No route, rule, sysctl or other table is touched.

Sets are replaced in one transaction (`flush set` + `add element`) when the
network changes, so no packet sees a half-built filter.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
from typing import Sequence

from leakcheck.disrupt import CutError
from leakcheck.linux import conntrack, nftcut
from leakcheck.linux.flowowner import OwnerLookup, dump_for, match_socket
from leakcheck.linux.nflog import SNAPLEN, LoggedPacket, NflogSocket
# The error is the watch's (leakcheck.watch.model): the engine catches it without a platform import.
from leakcheck.watch.model import Owner, SuspectFlow, WatchSets, WatchUnavailable

log = logging.getLogger(__name__)

TABLE_PREFIX = "leakcheck_watch_"  # inet family; + the watcher's pid: the agent and a helpdesk watch coexist
GROUP = 0x4C43  # first NFLOG group tried ("LC"): leakcheck's own, away from the common 0..10
GROUPS_TRIED = 16  # a group binds to one socket only: each concurrent watcher takes the next free one
PREFIX_OUT, PREFIX_FWD = "leakcheck-out", "leakcheck-fwd"
DEFAULT_RATE = 100  # logged packets per second, both chains together
IPS_SEEN_REPLY = 0x2


def _elements(items: Sequence[str], quote: bool = False) -> str:
    return ", ".join(f'"{i}"' if quote else i for i in items)


def leftover_pids(listing: str) -> list[int]:
    """Pids in the names of watch tables in `nft list tables` output."""
    out = []
    for line in listing.splitlines():
        name = line.split()[-1] if line.strip() else ""
        if name.startswith(TABLE_PREFIX) and name[len(TABLE_PREFIX):].isdigit():
            out.append(int(name[len(TABLE_PREFIX):]))
    return out


def table_name(pid: int | None = None) -> str:
    return f"{TABLE_PREFIX}{os.getpid() if pid is None else pid}"


def set_commands(sets: WatchSets, table: str | None = None) -> str:
    table = table or table_name()
    lines = [f"flush set inet {table} {name}" for name in ("tunnels", "direct4", "direct6")]
    for name, items, quote in (("tunnels", sets.tunnels, True), ("direct4", sets.direct4, False),
                               ("direct6", sets.direct6, False)):
        if items:
            lines.append(f"add element inet {table} {name} {{ {_elements(items, quote)} }}")
    return "\n".join(lines) + "\n"


def _chain(name: str, hook: str, prefix: str, group: int, ipsec: bool) -> list[str]:
    rules = [
        f"    chain {name} {{",
        # after conntrack and routing (the output interface is known), before nothing we change
        f"        type filter hook {hook} priority filter + 10; policy accept;",
        "        ct state != new return",
        '        oifname "lo" return',
        "        oifname @tunnels return",
        "        meta nfproto ipv4 ip daddr @direct4 return",
        "        meta nfproto ipv6 ip6 daddr @direct6 return",
    ]
    if ipsec:
        rules.append("        rt ipsec exists return")  # policy-based IPsec: it leaves as ESP
    rules += [f'        limit name "suspects" log prefix "{prefix}" group {group} snaplen {SNAPLEN}', "    }"]
    return rules


def ruleset(sets: WatchSets, owner: bool, group: int = GROUP, rate: int = DEFAULT_RATE,
            ipsec: bool = True, table: str | None = None) -> str:
    table = table or table_name()
    lines = [f"table inet {table} {{"]
    if owner:
        lines.append("    flags owner")
    lines += [
        f"    limit suspects {{ rate {rate}/second burst {rate} packets }}",
        "    set tunnels { type ifname; }",
        "    set direct4 { type ipv4_addr; flags interval; }",
        "    set direct6 { type ipv6_addr; flags interval; }",
    ]
    lines += _chain("output", "output", PREFIX_OUT, group, ipsec)
    lines += _chain("forward", "forward", PREFIX_FWD, group, ipsec)
    lines.append("}")
    return "\n".join(lines) + "\n" + set_commands(sets, table)


class KernelWatch:
    """The Linux watch capability: the table, the NFLOG reader, the owner
    lookup and the conntrack sweep. WatchUnavailable if it cannot start."""

    def __init__(self, sets: WatchSets, group: int = GROUP, rate: int = DEFAULT_RATE) -> None:
        self.group, self.rate = group, rate
        self.table = table_name()
        self.owner_flag = False
        self.limits: list[str] = []  # what is watched less well than it could be
        self._lookup = OwnerLookup()
        self._names: dict[int, str] = {}
        try:
            self._backend = nftcut.open_backend()
        except CutError as exc:
            raise WatchUnavailable(f"no nftables ({exc})") from None
        try:
            self._nflog = self._bind(group)
        except OSError as exc:
            self._backend.close()
            raise WatchUnavailable(f"cannot read NFLOG group {group} ({exc})") from None
        try:
            self._install(sets)
        except BaseException:
            self.close()
            raise

    def _bind(self, first: int) -> NflogSocket:
        last: OSError | None = None
        for group in range(first, first + GROUPS_TRIED):
            try:
                sock = NflogSocket(group)
            except OSError as exc:
                # a group bound by another socket (the agent, a helpdesk watch) answers EPERM
                if exc.errno not in (errno.EPERM, errno.EBUSY):
                    raise
                last = exc
                continue
            self.group = group
            return sock
        raise OSError(last.errno if last else errno.EBUSY,
                      f"NFLOG groups {first}..{first + GROUPS_TRIED - 1} all refused ({last})")

    def _install(self, sets: WatchSets) -> None:
        self._remove_leftover()
        owner = self._backend.owner_capable
        attempts = [(owner, True), (False, True), (False, False)] if owner else [(False, True), (False, False)]
        last = ""
        for owner_flag, ipsec in attempts:
            try:
                self._backend.run(ruleset(sets, owner_flag, self.group, self.rate, ipsec, self.table))
            except CutError as exc:
                last = str(exc)
                continue
            self.owner_flag = owner_flag
            if not owner_flag:
                self.limits.append("the nftables table has no owner flag here: it stays if leakcheck is "
                                   "killed (it only logs; the next watch removes it)")
            if not ipsec:
                self.limits.append("nftables cannot match IPsec routes (rt ipsec): policy-based IPsec "
                                   "traffic may be reported")
            return
        raise WatchUnavailable(f"cannot install the nftables watch table ({last})")

    def _remove_leftover(self) -> None:
        """Delete watch tables of watchers that are gone (only a kernel without the
        owner flag leaves them); tables of live watchers are theirs."""
        try:
            listing = self._backend.run("list tables inet\n")
        except CutError as exc:
            raise WatchUnavailable(f"nftables: {exc}") from None
        for pid in leftover_pids(listing):
            if not os.path.exists(f"/proc/{pid}"):
                try:
                    self._backend.run(f"delete table inet {table_name(pid)}\n")
                except CutError as exc:  # owned by a live process after all: leave it
                    log.debug("leftover watch table %s: %s", pid, exc)

    def apply(self, sets: WatchSets) -> None:
        """Replace the sets (one transaction)."""
        self._backend.run(set_commands(sets, self.table))

    def fileno(self) -> int:
        return self._nflog.fileno()

    def wait(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._nflog], [], [], timeout)
        return bool(ready)

    def read(self) -> tuple[list[SuspectFlow], int]:
        """The suspect flows logged since the last read, with their owners, and
        how many netlink reads overflowed."""
        packets, lost = self._nflog.read()
        return self.attribute(packets), lost

    def attribute(self, packets: list[LoggedPacket]) -> list[SuspectFlow]:
        if not packets:
            return []
        local = [p for p in packets if not p.prefix.startswith(PREFIX_FWD)]
        raw = []
        if local:  # one dump for the whole batch
            raw = dump_for({p.proto for p in local} & {"tcp", "udp"},
                           {socket.AF_INET6 if ":" in p.src else socket.AF_INET for p in local})
        out = []
        for p in packets:
            forwarded = p.prefix.startswith(PREFIX_FWD)
            owner = Owner()
            if not forwarded and p.proto in ("tcp", "udp"):
                found = match_socket(raw, p.proto, p.src, p.sport, p.dst, p.dport)
                if found is not None:
                    uid = p.uid if p.uid is not None else found.uid
                    owner = self._lookup.describe(self._lookup.pid_of(found.inode, uid), found.uid)
            out.append(SuspectFlow(proto=p.proto, src=p.src, sport=p.sport, dst=p.dst, dport=p.dport,
                                   interface=self._ifname(p.outdev), uid=p.uid if p.uid is not None else owner.uid,
                                   gid=p.gid, owner=owner, dns_name=p.dns_name, forwarded=forwarded))
        return out

    def _ifname(self, index: int | None) -> str | None:
        if not index:
            return None
        name = self._names.get(index)
        if name is None:
            try:
                name = self._names[index] = socket.if_indextoname(index)
            except OSError:
                return str(index)
        return name

    def established_outside(self, local_addresses: dict[str, str], sets: WatchSets) -> list[SuspectFlow]:
        """Tracked flows that answered (established) from an address of a
        physical interface to a destination the filter would log, whose socket
        still exists: connections opened outside the tunnel and still alive. `local_addresses` maps each
        physical interface address to its interface."""
        try:
            flows = conntrack.dump()
        except OSError as exc:
            raise WatchUnavailable(f"no conntrack ({exc})") from None
        direct = [ipaddress.ip_network(p) for p in (*sets.direct4, *sets.direct6)]
        picked = []
        for flow in flows:
            if flow.status is not None and not flow.status & IPS_SEEN_REPLY:
                continue
            interface = local_addresses.get(flow.src)
            if interface is None:
                continue
            dst = ipaddress.ip_address(flow.dst)
            if any(dst in net for net in direct if net.version == dst.version):
                continue
            picked.append(flow)
        if not picked:
            return []
        raw = dump_for({f.protocol for f in picked}, {socket.AF_INET6 if ":" in f.src else socket.AF_INET
                                                      for f in picked})
        out = []
        for flow in picked:
            found = match_socket(raw, flow.protocol, flow.src, flow.sport, flow.dst, flow.dport)
            if found is None or not found.inode:
                # no live socket (closed, time-wait, a UDP entry waiting out its timeout):
                # the connection did not survive, whatever conntrack still remembers
                continue
            owner = self._lookup.describe(self._lookup.pid_of(found.inode, None), found.uid)
            out.append(SuspectFlow(proto=flow.protocol, src=flow.src, sport=flow.sport, dst=flow.dst,
                                   dport=flow.dport, interface=local_addresses[flow.src], uid=owner.uid,
                                   gid=None, owner=owner, predates_tunnel=True))
        return out

    def close(self) -> None:
        """Delete the table and close both sockets (idempotent)."""
        backend, self._backend = getattr(self, "_backend", None), None
        if backend is not None:
            try:
                backend.run(f"delete table inet {self.table}\n")
            except CutError as exc:
                log.debug("deleting the watch table: %s", exc)  # the socket close removes an owned table
            backend.close()
        nflog, self._nflog = getattr(self, "_nflog", None), None
        if nflog is not None:
            nflog.close()
