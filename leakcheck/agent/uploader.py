"""Delivers spooled reports to the collector, oldest first.

A report leaves the spool only after the collector acknowledged it (201
stored, or 200 already stored: submissions are idempotent on report_id, so
a retry after a lost acknowledgement never doubles a report). Transient
failures back off exponentially with full jitter; 429 waits Retry-After.
TLS is verified against `collector.ca_file` or the system CA store.

The transport is the standard library's http.client over one keep-alive
connection, not requests: the agent's idle process holds the uploader, and
requests with urllib3 would be a third of its memory.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from leakcheck.agent.spool import Spool
from leakcheck.agent.state import now_text

log = logging.getLogger(__name__)
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PERMANENT = {400, 403, 404, 409, 413, 422}  # this report will never be accepted


@dataclass
class DrainResult:
    delivered: int = 0
    rejected: int = 0
    remaining: int = 0
    error: str | None = None


@dataclass
class Backoff:
    base_s: float = 1.0
    cap_s: float = 300.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        # "Full jitter": a thousand agents that lost the collector together do
        # not all come back in the same second.
        delay = self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def verify_setting(ca_file: str) -> str | bool:
    if ca_file:
        return ca_file
    # requests would use its own bundle; the brief is the system store.
    return str(SYSTEM_CA) if SYSTEM_CA.exists() else True


def tls_context(ca_file: str):  # type: ignore[no-untyped-def]
    """Certificate and host name checked, against `ca_file` or the system store."""
    import ssl

    verify = verify_setting(ca_file)
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


class Uploader:
    def __init__(self, url: str, token: str, ca_file: str = "", timeout_s: float = 10.0,
                 backoff: Backoff | None = None, max_retry_after_s: float = 3600.0):
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = parts.path + "/api/v1/reports"
        self.endpoint = url.rstrip("/") + "/api/v1/reports"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "User-Agent": "leakcheck-agent"}
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.max_retry_after_s = max_retry_after_s
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s,
                                                         context=tls_context(self.ca_file))
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def drain(self, spool: Spool, deadline: float | None = None,
              wait: Callable[[float], bool] | None = None) -> DrainResult:
        """Send everything spooled, oldest first, until done, the deadline
        passes, or `wait(seconds)` returns True (asked to stop)."""
        wait = wait or _sleep
        result = DrainResult()
        while True:
            entries = spool.entries()
            if not entries:
                return result
            entry = entries[0]
            outcome, delay = self._send(entry.path.read_bytes())
            if outcome == "ok":
                spool.remove(entry)
                self.backoff.reset()
                result.delivered += 1
                spool.state.update(last_upload=now_text(), last_error=None)
                continue
            if outcome == "rejected":
                log.error("collector refused report %s for good: kept in spool/rejected", entry.report_id)
                spool.reject(entry)
                result.rejected += 1
                continue
            result.error = outcome
            spool.state.update(last_error=outcome, last_error_at=now_text())
            if outcome.startswith("unauthorized"):
                result.remaining = len(spool.entries())
                return result  # no retry helps until the device re-enrolls
            if delay is None:
                delay = self.backoff.next_delay()
            if deadline is not None and time.monotonic() + delay > deadline:
                result.remaining = len(spool.entries())
                return result
            log.info("upload: %s; retrying in %.1f s", outcome, delay)
            if wait(delay):
                result.remaining = len(spool.entries())
                return result

    def _send(self, body: bytes) -> tuple[str, float | None]:
        try:
            code, retry_after = self._post(body)
        except (OSError, http.client.HTTPException) as exc:
            return f"cannot reach collector: {type(exc).__name__}", None
        if code in (200, 201):
            return "ok", None
        if code == 429:
            return "rate limited (429)", self._retry_after(retry_after)
        if code == 401:
            return "unauthorized (401): token unknown or revoked; re-enroll", None
        if code in PERMANENT:
            return "rejected", None
        return f"collector error {code}", None

    def _post(self, body: bytes) -> tuple[int, str | None]:
        """(status, Retry-After). A kept-alive connection the collector has
        closed meanwhile fails on first use: that one is retried once on a
        fresh connection (safe: submissions are idempotent on report_id)."""
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=self.headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1 and isinstance(exc, (ConnectionError, http.client.BadStatusLine)):
                    continue
                raise
            if response.will_close:
                self.close()
            return response.status, response.getheader("Retry-After")
        raise AssertionError("unreachable")

    def _retry_after(self, header: str | None) -> float:
        try:
            seconds = float(header) if header is not None else self.backoff.next_delay()
        except ValueError:
            seconds = self.backoff.next_delay()
        return min(max(seconds, 0.0), self.max_retry_after_s)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


class UploadWorker(threading.Thread):
    """The agent's uploader: drains whenever kicked, backs off between tries,
    and stops promptly on shutdown (it waits on an Event, never sleeps blind)."""

    def __init__(self, spool: Spool, make_uploader: Callable[[], Uploader | None]):
        super().__init__(name="uploader", daemon=True)
        self.spool = spool
        self.make_uploader = make_uploader
        self._kick = threading.Event()
        self._stopping = threading.Event()

    def kick(self) -> None:
        self._kick.set()

    def stop(self) -> None:
        self._stopping.set()
        self._kick.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._kick.wait()
            self._kick.clear()
            if self._stopping.is_set():
                return
            uploader = self.make_uploader()
            if uploader is None:
                continue
            try:
                result = uploader.drain(self.spool, wait=self._stopping.wait)
                if result.delivered or result.error:
                    log.info("upload: %d delivered, %d left%s", result.delivered, result.remaining,
                             f", last error: {result.error}" if result.error else "")
                if result.error and result.error.startswith("unauthorized"):
                    # Retry later anyway: an operator may re-enroll meanwhile.
                    self._stopping.wait(300)
                    self._kick.set()
            except Exception:  # the agent must outlive any upload bug
                log.exception("uploader failed")
            finally:
                uploader.close()

