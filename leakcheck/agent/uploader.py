"""Delivers spooled reports to the collector, oldest first.

A report leaves the spool only after the collector acknowledged it: a 201
(stored) or 200 (already stored) whose JSON answer names that report's
`report_id`. Any other 2xx (a captive portal, a wrong URL) is not an
acknowledgement. Submissions are idempotent on report_id, so a retry after
a lost acknowledgement never doubles a report. Transient failures back off
exponentially with full jitter; 429 and 503 wait Retry-After, sanitised
(seconds or an HTTP date, bounded below and above). A report the collector
answers 500 for `max_attempts` times is quarantined (spool/quarantine/,
shown by `leakcheck status`) so that it cannot block the reports behind it.
TLS is verified against `collector.ca_file` or the system CA store.

The transport is the standard library's http.client over one keep-alive
connection, not requests: the agent's idle process holds the uploader, and
requests with urllib3 would be a third of its memory.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import math
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from leakcheck.agent.files import write_atomic
from leakcheck.agent.spool import Spool
from leakcheck.agent.state import now_text

log = logging.getLogger(__name__)
SYSTEM_CA = Path("/etc/ssl/certs/ca-certificates.crt")
PERMANENT = {400, 403, 404, 409, 413, 422}  # this report will never be accepted


@dataclass
class DrainResult:
    delivered: int = 0
    rejected: int = 0
    quarantined: int = 0
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
                 backoff: Backoff | None = None, max_retry_after_s: float = 3600.0,
                 min_retry_after_s: float = 1.0, max_attempts: int = 5, resource: str = "reports",
                 ack_key: str = "report_id"):
        parts = urllib.parse.urlsplit(url.rstrip("/"))
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        # reports (report_id) or flows (batch_id): the same delivery rules for both.
        self.path = parts.path + f"/api/v1/{resource}"
        self.endpoint = url.rstrip("/") + f"/api/v1/{resource}"
        self.ack_key = ack_key
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "User-Agent": "leakcheck-agent"}
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.max_retry_after_s = max_retry_after_s
        self.min_retry_after_s = min_retry_after_s
        self.max_attempts = max_attempts
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
                if result.delivered:  # the collector answers now: a good moment for its advisory table
                    self.refresh_advisories(spool.paths.root)
                return result
            entry = entries[0]
            outcome, delay = self._send(entry.path.read_bytes(), entry.report_id)
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
            # Only a 500 says "this report breaks the collector"; 502/503/504
            # say the collector (or its proxy) is down, which no report causes.
            if outcome == "collector error 500" and spool.failed(entry) >= self.max_attempts:
                log.error("collector failed on report %s %d times: quarantined in spool/quarantine",
                          entry.report_id, self.max_attempts)
                spool.quarantine(entry)
                self.backoff.reset()
                result.quarantined += 1
                continue
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

    def refresh_advisories(self, root: Path) -> str:
        """Fetch the collector's VPN client advisory table into `root`/advisories.json
        (where posture-updates looks, leakcheck/vpnclients.py), conditionally on the
        ETag of the copy we have. Only a table that parses is kept; any failure keeps
        the old copy and never touches report delivery. Returns what happened."""
        from leakcheck import advisories

        etag_path, table_path = root / ADVISORIES_ETAG, root / ADVISORIES
        headers = dict(self.headers)
        headers.pop("Content-Type", None)
        if table_path.is_file() and etag_path.is_file():
            headers["If-None-Match"] = etag_path.read_text(errors="replace").strip()[:200]
        try:
            conn = self._connection()
            conn.request("GET", self.path.rsplit("/", 1)[0] + "/advisories", headers=headers)
            response = conn.getresponse()
            body = response.read(advisories_max_bytes() + 1)
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return f"not fetched: {type(exc).__name__}"
        if response.status != 200:
            return f"not fetched: {response.status}"  # 304 current, 404 none served
        try:
            if len(body) > advisories_max_bytes():
                raise ValueError("too large")
            advisories.parse(json.loads(body), "collector")
        except ValueError as exc:
            log.warning("collector's advisory table not kept: %s", exc)
            return "refused: malformed"
        write_atomic(table_path, body, 0o644)
        write_atomic(etag_path, (response.getheader("ETag") or "").encode(), 0o644)
        return "updated"

    def _send(self, body: bytes, report_id: str) -> tuple[str, float | None]:
        try:
            code, retry_after, answer = self._post(body)
        except (OSError, http.client.HTTPException) as exc:
            return f"cannot reach collector: {type(exc).__name__}", None
        if code in (200, 201):
            if acknowledged(answer, report_id, self.ack_key):
                return "ok", None
            return f"answer {code} does not acknowledge the report (not a leakcheck collector?)", None
        if code == 429:
            return "rate limited (429)", self._retry_after(retry_after)
        if code == 401:
            return "unauthorized (401): token unknown or revoked; re-enroll", None
        if code in PERMANENT:
            return "rejected", None
        if code == 503 and retry_after is not None:
            return f"collector error {code}", self._retry_after(retry_after)
        return f"collector error {code}", None

    def _post(self, body: bytes) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body). A kept-alive connection the collector has
        closed meanwhile fails on first use: that one is retried once on a
        fresh connection (safe: submissions are idempotent on report_id)."""
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection()
            try:
                conn.request("POST", self.path, body=body, headers=self.headers)
                response = conn.getresponse()
                answer = response.read(64 * 1024)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1 and isinstance(exc, (ConnectionError, http.client.BadStatusLine)):
                    continue
                raise
            if response.will_close:
                self.close()
            return response.status, response.getheader("Retry-After"), answer
        raise AssertionError("unreachable")

    def _retry_after(self, header: str | None) -> float:
        seconds = retry_after_seconds(header)
        if seconds is None:
            seconds = self.backoff.next_delay()
        # Never a tight loop (0, negative), never a wait past the cap.
        return min(max(seconds, self.min_retry_after_s), self.max_retry_after_s)


ADVISORIES = "advisories.json"  # leakcheck.vpnclients.CACHED_TABLE
ADVISORIES_ETAG = "advisories.etag"


def advisories_max_bytes() -> int:
    from leakcheck.advisories import MAX_BYTES  # one bound for the collector and the agent
    return MAX_BYTES


def acknowledged(answer: bytes, report_id: str, key: str = "report_id") -> bool:
    """The collector's answer names the report (or flows batch) it stored (or already had)."""
    try:
        data = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get(key) == report_id


def retry_after_seconds(header: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: a number or an HTTP date (RFC 9110); None when
    absent or unusable (nan, inf, garbage), for the caller's backoff to decide."""
    if header is None:
        return None
    text = header.strip()[:100]
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment is None:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        seconds = (moment - (now or datetime.now(timezone.utc))).total_seconds()
    return seconds if math.isfinite(seconds) else None


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

