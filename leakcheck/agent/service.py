"""`leakcheck agent`: the long-running service.

Runs all probes every `agent.interval` plus a random `agent.jitter`, and
within about a second of a network change (netlink link/address/route/rule
notifications, debounced). Each report records its trigger (`schedule` or
`network-change`), is spooled, then handed to the uploader thread. Tunnel
up/down transitions go to tunnel-history.json (see leakcheck.agent). The
main thread sleeps in select() on the netlink socket and a signal pipe:
nothing polls. SIGTERM/SIGINT stop it cleanly (a run in progress finishes).
"""

from __future__ import annotations

import logging
import os
import random
import select
import signal
import time
from typing import Callable

from leakcheck.agent.delivery import make_uploader, open_spool, spool_report
from leakcheck.agent.netwatch import NetlinkWatcher
from leakcheck.agent.state import TunnelHistory
from leakcheck.agent.uploader import UploadWorker
from leakcheck.config import Config, parse_duration
from leakcheck.report import Report

log = logging.getLogger("leakcheck.agent")
QUIET_S = 0.25  # debounce: the network must be quiet this long...
SETTLE_MAX_S = 0.75  # ...but a triggered run starts at most this long after the first change

RunFn = Callable[[Config, str], Report]
StateFn = Callable[[Config], tuple[str, set[str]]]


def run_engine(config: Config, trigger: str) -> Report:
    from leakcheck import engine
    return engine.run(config, engine.RunOptions(trigger=trigger))


def tunnel_now(config: Config) -> tuple[str, set[str]]:
    """(state, interfaces that are up) straight from the kernel."""
    from leakcheck import engine, tunnel
    found = tunnel.detect(engine.read_state(), config)
    return found.state, set(found.interfaces) if found.up else set()


class Agent:
    def __init__(self, config: Config, run: RunFn = run_engine, tunnel_state: StateFn = tunnel_now,
                 rng: random.Random | None = None):
        self.config = config
        self.run_fn = run
        self.tunnel_state = tunnel_state
        self.rng = rng or random.Random()
        self.interval_s = parse_duration(config.get("agent", "interval"))
        self.jitter_s = parse_duration(config.get("agent", "jitter"))
        self.on_change = bool(config.get("agent", "on_network_change"))
        self.spool = open_spool(config)
        self.history = TunnelHistory(self.spool.paths)
        self.up: set[str] | None = None  # tunnel interfaces up at the last look
        self._wake_r, self._wake_w = os.pipe()

    # -- the loop --------------------------------------------------------------------

    def serve(self) -> int:
        self._install_signals()
        cleaned = self.spool.clean()
        if cleaned:
            log.info("spool: removed %d incomplete file(s) left by a crash", cleaned)
        worker = UploadWorker(self.spool, lambda: make_uploader(self.config))
        worker.start()
        worker.kick()  # deliver whatever an earlier life left in the spool
        watcher = NetlinkWatcher()
        log.info("started: interval %s + jitter up to %s, network-change runs %s, spool %d report(s)",
                 self.config.get("agent", "interval"), self.config.get("agent", "jitter"),
                 "on" if self.on_change else "off", self.spool.depth())
        try:
            self._observe_tunnel(None)
            next_run = time.monotonic()  # first run at start
            while True:
                timeout = max(0.0, next_run - time.monotonic())
                ready, _, _ = select.select([watcher, self._wake_r], [], [], timeout)
                if self._wake_r in ready:
                    log.info("stopping (signal)")
                    return 0
                if watcher in ready:
                    first_change = time.monotonic()
                    kinds = watcher.settle(QUIET_S, SETTLE_MAX_S)
                    self._observe_tunnel(None)
                    if not self.on_change:
                        continue
                    log.info("network change (%s)", ", ".join(sorted(kinds)) or "unknown")
                    self._run("network-change", worker, since=first_change)
                else:
                    self._run("schedule", worker)
                next_run = time.monotonic() + self.interval_s + self.rng.uniform(0, self.jitter_s)
                # Changes made while probing (ours or the world's) are looked at once more.
        finally:
            worker.stop()
            worker.join(timeout=5)
            watcher.close()

    def _run(self, trigger: str, worker: UploadWorker, since: float | None = None) -> None:
        started = time.monotonic()
        if since is not None:
            log.info("run: trigger=%s delay_ms=%d", trigger, int((started - since) * 1000))
        else:
            log.info("run: trigger=%s", trigger)
        try:
            report = self.run_fn(self.config, trigger)
        except Exception:  # a broken run must not end the service
            log.exception("run failed")
            return
        self._observe_tunnel(report)
        spool_report(report, self.spool)
        log.info("run: verdict=%s in %.1f s; spool depth %d", report.verdict.value,
                 time.monotonic() - started, self.spool.depth())
        worker.kick()

    # -- tunnel history ------------------------------------------------------------------

    def _observe_tunnel(self, report: Report | None) -> None:
        try:
            if report is not None:
                state = report.tunnel.state
                up = set(report.tunnel.interfaces) if state == "up" else set()
            else:
                state, up = self.tunnel_state(self.config)
        except Exception:
            log.exception("cannot read tunnel state")
            return
        known_down = self.history.open_outages()
        previous = self.up if self.up is not None else set()
        for name in sorted(previous - up):
            if name not in known_down:
                log.warning("tunnel %s went down", name)
                self.history.went_down(name)
        for name in sorted(up & known_down):
            log.info("tunnel %s is back up", name)
            self.history.came_up(name)
        self.up = up

    # -- signals ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def wake(signum: int, _frame: object) -> None:
            os.write(self._wake_w, b"x")
        signal.signal(signal.SIGTERM, wake)
        signal.signal(signal.SIGINT, wake)
