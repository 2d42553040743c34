"""Background upkeep of the collector's storage, one thread per replica.

Every `maintenance_interval_s` (and once at start): on PostgreSQL, day
partitions of the report tables are created a few days ahead (so a report
never waits for DDL and retention can drop whole days); with a retention
setting, rows older than it are deleted in small batches
(Store.purge_before). Replicas may all run it: partition changes take an
advisory lock, and a batch delete that finds nothing deletes nothing.
A failure is logged and retried next time; it never stops ingest.
"""

from __future__ import annotations

import logging
import threading
import time

from leakcheck.collector.store import Store

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, store: Store, retention_days: int, interval_s: float):
        self.store = store
        self.retention_days = retention_days
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="collector-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        made = self.store.ensure_partitions(now)
        if made:
            log.info("created partitions %s", ", ".join(made))
        if self.retention_days <= 0:
            return 0
        deleted = self.store.purge_before(now - self.retention_days * 86400)
        if deleted:
            log.info("retention: deleted %d rows older than %d days", deleted, self.retention_days)
        return deleted

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the next round tries again; ingest goes on
                log.warning("storage maintenance failed: %s", exc)
            self._stop.wait(self.interval_s)
