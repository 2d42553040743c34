"""The dispatcher thread: every poll interval, detect (if this replica holds
the lease), then deliver each sink's due events once per batch interval.

Batching: a sink is flushed at most once per `batch_interval`, and a flush
sends everything due in batches of up to `max_batch` events, so 1,000
devices starting to leak in the same second are one or two calls per sink,
not 1,000. A sink whose batch failed waits for its backoff before the next
try, and delivery keeps order per sink (oldest seq first).

Network I/O never happens inside a database transaction: the outbox rows
are read, the batch is sent, then a second transaction deletes them (or
pushes them back). A crash in between resends: at-least-once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from sqlalchemy.engine import Engine

from leakcheck.collector.alerts import events as ev
from leakcheck.collector.alerts.config import AlertConfig
from leakcheck.collector.alerts.sinks import SendError, Sender, sender
from leakcheck.collector.alerts.store import AlertStore

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, engine: Engine, config: AlertConfig, device_interval_s: float,
                 senders: list[Sender] | None = None):
        self.store = AlertStore(engine)
        self.config = config
        self.bounds = ev.Bounds(reconnect_s=config.reconnect_bound_s,
                                stale_after_s=config.stale_intervals * device_interval_s)
        self.senders = senders if senders is not None else [sender(s) for s in config.sinks]
        # Unique per process: several workers of one replica each compete for the lease.
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._next_flush = {s.sink: 0.0 for s in self.senders}
        self._next_prune = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
            try:
                self.store.release_lease(self.holder)
            except Exception:  # the lease then simply expires
                log.warning("could not release the alert lease", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception:  # a database hiccup must not end alerting; the next tick retries
                log.exception("alert dispatcher tick failed")
            self._stop.wait(max(0.0, self.config.poll_interval_s - (time.monotonic() - started)))

    def step(self) -> int | None:
        """One round: detect, then flush due sinks. Returns the events detected (None: not leader)."""
        made = self.store.tick(self.holder, self.config.lease_ttl_s, self.bounds, [s.sink for s in self.senders])
        if made is None:
            return None
        now = time.time()
        for snd in self.senders:
            if now >= self._next_flush[snd.sink]:
                self._flush(snd)
        if now >= self._next_prune:
            self._next_prune = now + 3600
            self.store.prune(self.config.keep_days * 86400)
        return made

    def _flush(self, snd: Sender) -> None:
        self._next_flush[snd.sink] = time.time() + self.config.batch_interval_s
        while not self._stop.is_set():
            # Re-check before each send: a replica that lost its lease (a long
            # stall) stops, leaving the outbox to the new holder.
            if not self.store.holds_lease(self.holder):
                return
            batch = self.store.due(snd.sink, self.config.max_batch)
            if not batch:
                return
            started = time.time()
            try:
                status = snd.send([d.event for d in batch])
            except SendError as exc:
                due = self.store.failed(snd.sink, batch, started, exc.status, str(exc), self.config.retry_max_s)
                log.warning("alert sink %s: %s (retry in %.0f s)", snd.sink, exc, due - time.time())
                return
            self.store.delivered(snd.sink, batch, started, status)
            if len(batch) < self.config.max_batch:
                return
