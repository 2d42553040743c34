"""Delivers spooled reports to the collector, oldest first.

A report leaves the spool only after the collector acknowledged it (201
stored, or 200 already stored: submissions are idempotent on report_id, so
a retry after a lost acknowledgement never doubles a report). Transient
failures back off exponentially with full jitter; 429 waits Retry-After.
TLS is verified against `collector.ca_file` or the system CA store.
"""

from __future__ import annotations

import logging
import random
import threading
import time
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


class Uploader:
    def __init__(self, url: str, token: str, ca_file: str = "", timeout_s: float = 10.0,
                 backoff: Backoff | None = None, max_retry_after_s: float = 3600.0):
        import requests  # only the code that uploads pays for importing requests

        self.endpoint = url.rstrip("/") + "/api/v1/reports"
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/json"})
        self.session.verify = verify_setting(ca_file)
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.max_retry_after_s = max_retry_after_s
        self._requests = requests

    def close(self) -> None:
        self.session.close()

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
            response = self.session.post(self.endpoint, data=body, timeout=self.timeout_s)
        except self._requests.RequestException as exc:
            return f"cannot reach collector: {type(exc).__name__}", None
        code = response.status_code
        if code in (200, 201):
            return "ok", None
        if code == 429:
            return "rate limited (429)", self._retry_after(response.headers.get("Retry-After"))
        if code == 401:
            return "unauthorized (401): token unknown or revoked; re-enroll", None
        if code in PERMANENT:
            return "rejected", None
        return f"collector error {code}", None

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

