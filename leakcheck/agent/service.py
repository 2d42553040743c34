"""`leakcheck agent`: the long-running service.

Runs all probes every `agent.interval` plus a random `agent.jitter`, and
within about a second of a network change (netlink link/address/route/rule
notifications, debounced). Each check runs in a child process
(leakcheck.agent.worker) that records tunnel transitions in
tunnel-history.json, runs the probes, spools the report with its trigger
(`schedule` or `network-change`) and exits; this process then kicks the
uploader thread. So the service itself holds only the netlink socket, the
spool and a stdlib HTTP client: the engine's imports (pyroute2, psutil,
scapy) live and die with each check, and an idle agent stays small. The
main thread sleeps in select() on the netlink socket and a signal pipe:
nothing polls. SIGTERM/SIGINT stop it cleanly (a run in progress finishes).

With `[agent] watch` (and CAP_NET_ADMIN) the live watch runs beside this in
its own child (leakcheck.agent.flowwatch); its flows go through their own
spool and uploader thread, at once, never behind the reports.
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from leakcheck.agent.delivery import make_flow_uploader, make_uploader, open_flow_spool, open_spool
from leakcheck.agent.flowwatch import DEFAULT_SOURCE, FlowPipeline, write_off
from leakcheck.agent.netwatch import NetlinkWatcher
from leakcheck.agent.uploader import UploadWorker
from leakcheck.agent.worker import format_up
from leakcheck.config import Config, parse_duration

log = logging.getLogger("leakcheck.agent")
QUIET_S = 0.25  # debounce: the network must be quiet this long...
SETTLE_MAX_S = 0.75  # ...but a triggered run starts at most this long after the first change
RUN_TIMEOUT_S = 600.0  # a check that takes longer is killed (probes have their own time limits)
WORKER = (sys.executable, "-m", "leakcheck.agent.worker")
FLOWWATCH = (sys.executable, "-m", "leakcheck.agent.flowwatch")


class Agent:
    def __init__(self, config: Config, rng: random.Random | None = None, verbose: int = 0,
                 worker: Sequence[str] = WORKER, run_timeout_s: float = RUN_TIMEOUT_S,
                 watch_source: str = DEFAULT_SOURCE):
        self.config = config
        self.rng = rng or random.Random()
        self.verbose = verbose
        self.worker = list(worker)
        self.run_timeout_s = run_timeout_s
        self.interval_s = parse_duration(config.get("agent", "interval"))
        self.jitter_s = parse_duration(config.get("agent", "jitter"))
        self.on_change = bool(config.get("agent", "on_network_change"))
        self.watch = bool(config.get("agent", "watch"))
        self.watch_source = watch_source
        self.spool = open_spool(config)
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
        flows = self._start_watch()
        watcher = NetlinkWatcher()
        log.info("started: interval %s + jitter up to %s, network-change runs %s, spool %d report(s)",
                 self.config.get("agent", "interval"), self.config.get("agent", "jitter"),
                 "on" if self.on_change else "off", self.spool.depth())
        try:
            next_run = time.monotonic()  # first run at start (it also takes the first tunnel look)
            while True:
                timeout = max(0.0, next_run - time.monotonic())
                ready, _, _ = select.select([watcher, self._wake_r], [], [], timeout)
                if self._wake_r in ready:
                    log.info("stopping (signal)")
                    return 0
                if watcher in ready:
                    first_change = time.monotonic()
                    kinds = watcher.settle(QUIET_S, SETTLE_MAX_S)
                    if not kinds:
                        continue  # only captures toggling promiscuous mode (our own runs do)
                    if not self.on_change:
                        self._check("network-change", observe_only=True)  # tunnel history only
                        continue
                    log.info("network change (%s)", ", ".join(sorted(kinds)) or "unknown")
                    self._check("network-change", since=first_change)
                else:
                    self._check("schedule")
                worker.kick()
                next_run = time.monotonic() + self.interval_s + self.rng.uniform(0, self.jitter_s)
                # Changes made while probing (ours or the world's) are looked at once more.
        finally:
            if flows is not None:
                pipeline, flow_worker = flows
                pipeline.stop()
                pipeline.join(timeout=5)
                flow_worker.stop()
                flow_worker.join(timeout=5)
            worker.stop()
            worker.join(timeout=5)
            watcher.close()

    def _start_watch(self) -> tuple[FlowPipeline, UploadWorker] | None:
        """The live watch (leakcheck.agent.flowwatch) and its own spool and
        uploader, so a leak reaches the collector within seconds, not at the
        next scheduled run; flows never wait behind reports."""
        state_file = self.spool.paths.watch
        if not self.watch:
            write_off(state_file, "agent.watch = false")
            return None
        from leakcheck.privileges import network_privileged
        if not network_privileged():
            write_off(state_file, "not privileged: the watch needs CAP_NET_ADMIN (and CAP_NET_RAW)")
            log.warning("watch: off: this agent has no CAP_NET_ADMIN")
            return None
        flow_spool = open_flow_spool(self.config)
        flow_spool.clean()
        flow_worker = UploadWorker(flow_spool, lambda: make_flow_uploader(self.config))
        flow_worker.name = "flow-uploader"
        flow_worker.start()
        flow_worker.kick()
        argv = [*FLOWWATCH, "--source", self.watch_source, *["-v"] * self.verbose]
        if self.config.source:
            argv += ["--config", self.config.source]
        pipeline = FlowPipeline(argv, flow_spool, flow_worker.kick, state_file)
        pipeline.start()
        return pipeline, flow_worker

    def _check(self, trigger: str, since: float | None = None, observe_only: bool = False) -> None:
        """One check in a child process; waits for it (a signal meanwhile is
        acted on once it is done)."""
        started = time.monotonic()
        if observe_only:
            log.debug("tunnel look after a network change")
        elif since is not None:
            log.info("run: trigger=%s delay_ms=%d", trigger, int((started - since) * 1000))
        else:
            log.info("run: trigger=%s", trigger)
        argv = [*self.worker, "--trigger", trigger, *format_up(self.up), *["-v"] * self.verbose]
        if self.config.source:
            argv += ["--config", self.config.source]
        if observe_only:
            argv.append("--observe-only")
        result = self._spawn(argv)
        if result is None:
            return
        self.up = set(result.get("up", ()))
        if not observe_only:
            log.info("run: verdict=%s in %.1f s; spool depth %s", result.get("verdict"),
                     time.monotonic() - started, result.get("spool_depth"))

    def _spawn(self, argv: list[str]) -> dict[str, Any] | None:
        try:
            # stderr is inherited: the worker logs straight to the agent's journal.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        except OSError as exc:
            log.error("run failed: cannot start the worker: %s", exc)
            return None
        try:
            out, _ = proc.communicate(timeout=self.run_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            log.error("run failed: no result after %.0f s; worker killed", self.run_timeout_s)
            return None
        lines = out.decode("utf-8", "replace").strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            result = None
        if proc.returncode != 0 or not isinstance(result, dict):
            log.error("run failed: worker exit status %s", proc.returncode)
            return None
        return result

    # -- signals ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def wake(signum: int, _frame: object) -> None:
            os.write(self._wake_w, b"x")
        signal.signal(signal.SIGTERM, wake)
        signal.signal(signal.SIGINT, wake)
