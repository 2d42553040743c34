"""The live leak watch: every real flow that leaves outside the tunnel, as it
happens, with its process.

API (for the agent, in a thread; for `leakcheck watch`):

    watch = Watch(config, on_flow=callback)      # callback(record: FlowRecord, first: bool)
    watch.start()                                # WatchUnavailable (one line) if it cannot run
    watch.watching, watch.cannot                 # what it watches and what it cannot, in words
    watch.run(stop_event, duration=None)         # blocks until stop_event is set or duration passes
    watch.records()                              # current records (deduplicated, with counts)
    watch.own_packets                            # flows left out because leakcheck itself sent them

leakcheck's own traffic is left out: a flow whose process is `own_root`
(default: this process) or one of its descendants. The agent's watch child
passes the agent's pid, so the checks it runs (whose active probes send test
packets that do leave outside the tunnel when the tunnel leaks) and its
uploads are not reported as leaking applications. Only a process the agent
itself started can be in that tree, so nothing else can hide in it.

`run()` calls `start()` itself if needed, and always removes the kernel
filter when it returns. `on_flow` is called in the watch's thread: with
first=True when a (process, destination, port, protocol) is seen for the
first time, with first=False when a later packet raised its count (at most
once per record per `update_every` seconds). `record.to_dict()` is the
finding (leakcheck/watch/model.py).

How: the platform's kernel filter (Backend.watch_kernel; on Linux an owned
nftables table logging through NFLOG, leakcheck/linux/nftwatch.py) hands
over only the first packet of new connections leaving a physical interface
for a public destination that is not the tunnel, the VPN server or an
allowed exception. Its sets are rebuilt from the network state whenever
netlink announces a change (leakcheck/agent/netwatch.py); at start and each
time the tunnel comes up, tracked connections opened outside it are
reported too (`watch.flow-predates-tunnel`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import threading
import time
from typing import Callable

from leakcheck.addrspace import NON_PUBLIC_V4, _non_public
from leakcheck.config import Config
from leakcheck.watch.model import (DNS_OUTSIDE, FLOW_OUTSIDE, FLOW_PREDATES, FlowRecord, FlowTable, SuspectFlow,
                                   WatchSets, WatchUnavailable, collapse)

log = logging.getLogger(__name__)

OnFlow = Callable[[FlowRecord, bool], None]


class Watch:
    def __init__(self, config: Config, on_flow: OnFlow | None = None, backend=None,
                 update_every: float = 10.0, own_root: int | None = None) -> None:
        self.config = config
        self.own_root = own_root if own_root is not None else os.getpid()
        self.own_packets = 0
        self._own_cache: dict[tuple[int, float], bool] = {}
        self.on_flow = on_flow or (lambda record, first: None)
        self.backend = backend
        self.update_every = update_every
        self.table = FlowTable()
        self.watching: list[str] = []
        self.cannot: list[str] = []
        self.lost_reads = 0
        self.kernel = None
        self.sets = WatchSets()
        self.tunnel_up = False
        self._local: dict[str, str] = {}
        self._emitted: dict[tuple, float] = {}
        self._netwatch = None
        self._servers: set[str] = set()
        self._tunnel_links: frozenset = frozenset()

    # ------------------------------------------------------------ set-up

    def start(self) -> None:
        from leakcheck import platform
        if self.backend is None:
            self.backend = platform.select()
        state, tunnel = self._read()
        self.sets = self._sets(state, tunnel)
        self.kernel = self.backend.watch_kernel(self.sets)
        self.cannot.extend(self.kernel.limits)
        try:
            from leakcheck.agent.netwatch import NetlinkWatcher
            self._netwatch = NetlinkWatcher()
        except (OSError, AttributeError) as exc:  # AttributeError: no AF_NETLINK on this platform
            self.cannot.append(f"network changes are not followed ({exc}): the filter keeps today's sets")
        self.tunnel_up = tunnel.up
        self.watching = [self._describe(tunnel)]
        rate = getattr(self.kernel, "rate", None)
        if rate:
            self.cannot.append(f"at most {rate} suspect packets per second reach leakcheck (a kernel limit that "
                               f"keeps a flood cheap): beyond it, new flows in that second are not seen")
        if tunnel.up:  # with no tunnel up, every new flow is logged as it opens; nothing predates it yet
            self._sweep()

    def _read(self):
        from leakcheck import tunnel as tunnel_mod
        state = self.backend.read_state()
        found = tunnel_mod.detect(state, self.config)
        self._local = {str(a.address): a.ifname for a in state.addresses
                       if a.ifname != "lo" and not found.is_tunnel_interface(a.ifname)}
        self._state, self._tunnel = state, found
        self._tunnel_links = frozenset((l.name, l.index) for l in state.links if found.is_tunnel_interface(l.name))
        return state, found

    def _sets(self, state, tunnel) -> WatchSets:
        from leakcheck.tunnel import vpn_endpoints

        direct = [str(n) for n in (*NON_PUBLIC_V4, *_non_public(6))]
        # the local networks of every non-tunnel interface: LAN traffic is not a leak of the internet
        direct += [str(ipaddress.ip_interface(f"{a.address}/{a.prefixlen}").network) for a in state.addresses
                   if a.ifname != "lo" and not tunnel.is_tunnel_interface(a.ifname)]
        # VPN servers stay known after their tunnel goes: a reconnecting client sends its
        # first packets to the server before its interface (and its state) exist again
        self._servers |= vpn_endpoints(state)
        direct += [f"{ep}/{32 if ':' not in ep else 128}" for ep in self._servers]
        direct += [str(n) for n in self.config.get("policy", "allowed_direct")]
        self.endpoints = sorted(self._servers)
        return WatchSets(tunnels=tuple(tunnel.interfaces), direct4=collapse(direct, 4), direct6=collapse(direct, 6))

    def _describe(self, tunnel) -> str:
        where = ", ".join(tunnel.interfaces) or ("IPsec policies" if tunnel.policy_ipsec else "none")
        servers = ", ".join(self.endpoints) or "none found"
        return (f"new connections leaving a physical interface outside the tunnel (tunnel {tunnel.state}: "
                f"{where}; VPN servers: {servers}); allowed exceptions: "
                f"{', '.join(map(str, self.config.get('policy', 'allowed_direct'))) or 'none'}")

    def refresh(self) -> None:
        """Rebuild the filter's sets from the network state; sweep when the tunnel came up."""
        was_up, was = self.tunnel_up, self._tunnel_links
        state, tunnel = self._read()
        self.sets = self._sets(state, tunnel)
        self.kernel.apply(self.sets)
        self.tunnel_up = tunnel.up
        # A tunnel that went and came back between two reads is a new one (its
        # interface index changed): its predecessors' connections survive it too.
        if tunnel.up and (not was_up or self._tunnel_links != was):
            self._sweep()

    def _sweep(self) -> None:
        try:
            flows = self.kernel.established_outside(self._local, self.sets)
        except WatchUnavailable as exc:
            if str(exc) not in self.cannot:
                self.cannot.append(f"connections opened before the tunnel are not seen: {exc}")
            return
        self._handle(flows, time.time())

    # ------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, duration: float | None = None) -> None:
        if self.kernel is None:
            self.start()
        end = time.monotonic() + duration if duration is not None else None
        try:
            while not stop.is_set():
                left = 0.5 if end is None else min(0.5, end - time.monotonic())
                if left <= 0:
                    return
                waiting = [self.kernel] + ([self._netwatch] if self._netwatch else [])
                ready, _, _ = select.select(waiting, [], [], left)
                if self.kernel in ready:
                    flows, lost = self.kernel.read()
                    self.lost_reads += lost
                    self._handle(flows, time.time())
                if self._netwatch is not None and self._netwatch in ready:
                    if self._netwatch.settle(0.2, 1.0):
                        try:
                            self.refresh()
                        except Exception as exc:  # a bad read keeps the last sets: the watch goes on
                            log.warning("rebuilding the watch filter: %s", exc)
        finally:
            self.close()

    def _handle(self, flows: list[SuspectFlow], now: float) -> None:
        for flow in flows:
            if self._is_own(flow.owner.pid):
                self.own_packets += 1
                continue
            record, first = self.table.observe(to_record(flow, now))
            if first:
                self._emitted[record.table_key] = now
                self.on_flow(record, True)
            elif now - self._emitted.get(record.table_key, 0) >= self.update_every:
                self._emitted[record.table_key] = now
                self.on_flow(record, False)

    def _is_own(self, pid: int | None) -> bool:
        """Is `pid` leakcheck's own: own_root or a descendant of it. Cached per
        process (pid and start time), so a pid recycled by another program after a
        check's worker exited is looked at afresh, never trusted from the cache."""
        if pid is None:
            return False
        if pid == self.own_root:
            return True
        key = process_key(pid)
        if key is None:
            return False
        if key not in self._own_cache:
            if len(self._own_cache) > 4096:
                self._own_cache.clear()
            self._own_cache[key] = self.own_root in ancestors(pid)
        return self._own_cache[key]

    def records(self) -> list[FlowRecord]:
        return list(self.table.records.values())

    def close(self) -> None:
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.close()
        netwatch, self._netwatch = self._netwatch, None
        if netwatch is not None:
            netwatch.close()


def process_key(pid: int) -> tuple[int, float] | None:
    """(pid, start time): one process, even after its pid is reused; None when gone."""
    import psutil
    try:
        return pid, psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def ancestors(pid: int) -> list[int]:
    """The pids above `pid` up to init; empty when it is gone or unreadable."""
    import psutil
    try:
        return [parent.pid for parent in psutil.Process(pid).parents()]
    except (psutil.Error, OSError):
        return []


def to_record(flow: SuspectFlow, now: float) -> FlowRecord:
    if flow.predates_tunnel:
        finding = FLOW_PREDATES
    elif flow.dns_name is not None:
        finding = DNS_OUTSIDE
    else:
        finding = FLOW_OUTSIDE
    owner = flow.owner
    return FlowRecord(id=finding, proto=flow.proto, src=flow.src, sport=flow.sport, dst=flow.dst, dport=flow.dport,
                      interface=flow.interface, uid=flow.uid, gid=flow.gid, pid=owner.pid, command=owner.command,
                      exe=owner.exe, cgroup=owner.cgroup, dns_name=flow.dns_name, first_seen=now, last_seen=now,
                      forwarded=flow.forwarded)
