"""Group commit for report submissions.

Each replica (worker process) has writer threads (one on SQLite, which
takes one writer at a time anyway; two on PostgreSQL, so that one batch is
built while another waits for its commit), each with its own connection. A
submission is validated in the event loop, queued here, and its request
waits for the outcome; a writer takes everything queued (up to
`max_batch`) and stores it in one transaction (Store.submit_batch). Nothing is acknowledged before
its transaction committed, so an agent deletes a spooled report only once
it is durable. An idle collector stores each report alone, at once; under
load the batches grow by themselves, and a commit (an fsync on
PostgreSQL) is paid per batch instead of per report.

If a batch fails as a whole (say a PostgreSQL deadlock with another
replica), each of its submissions is retried alone, so one bad report
cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from leakcheck.collector.store import Outcome, Pending, Store

log = logging.getLogger(__name__)
_STOP = object()


class Ingest:
    def __init__(self, store: Store, limit: int, window_s: int, max_batch: int = 128,
                 writers: int | None = None, daily_bytes: int = 16 << 20):
        self.store = store
        self.daily_bytes = daily_bytes
        self.limit = limit
        self.window_s = window_s
        self.max_batch = max_batch
        self.writers = writers or (1 if store.engine.dialect.name == "sqlite" else 2)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    async def submit(self, pending: Pending) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._ensure_started()
        self._queue.put((pending, loop, future))
        return await future

    def close(self) -> None:
        with self._start_lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            thread.join(timeout=10)

    def _ensure_started(self) -> None:
        if not self._threads:
            with self._start_lock:
                if not self._threads:
                    self._threads = [threading.Thread(target=self._run, name=f"ingest-writer-{n}", daemon=True)
                                     for n in range(self.writers)]
                    for thread in self._threads:
                        thread.start()

    def _run(self) -> None:
        writer = _Writer(self.store, self.daily_bytes)
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stopping = True
                        break
                    batch.append(item)
                try:
                    results = writer.write([p for p, _, _ in batch], self.limit, self.window_s)
                except BaseException as exc:  # never leave a request waiting forever
                    results = [exc] * len(batch)
                for (_, loop, future), result in zip(batch, results):
                    try:
                        loop.call_soon_threadsafe(_resolve, future, result)
                    except RuntimeError:
                        pass  # that request's event loop is gone (shutdown); the report is stored anyway
        finally:
            writer.close()


class _Writer:
    """One writer's connection, opened on first use and again after a failure."""

    def __init__(self, store: Store, daily_bytes: int):
        self.store = store
        self.daily_bytes = daily_bytes
        self.conn: Any = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _submit(self, batch: list[Pending], limit: int, window_s: int) -> list[Outcome]:
        if self.conn is None:
            self.conn = self.store.writer_connection()
        try:
            return self.store.submit_batch(batch, limit, window_s, self.conn, self.daily_bytes)
        except Exception:
            self.close()  # a dropped connection must not poison the next batch
            raise

    def write(self, batch: list[Pending], limit: int, window_s: int) -> list[Outcome | BaseException]:
        try:
            return list(self._submit(batch, limit, window_s))
        except Exception as exc:
            if len(batch) == 1:
                log.error("storing a report failed: %s", exc)
                return [exc]
            log.warning("a batch of %d reports failed (%s); storing each alone", len(batch), type(exc).__name__)
        results: list[Outcome | BaseException] = []
        for pending in batch:
            try:
                results.append(self._submit([pending], limit, window_s)[0])
            except Exception as exc:
                log.error("storing a report failed: %s", exc)
                results.append(exc)
        return results


def _resolve(future: asyncio.Future, result: Outcome | BaseException) -> None:
    if future.done():
        return  # the client went away; its report may be stored all the same (idempotent)
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
