"""Every SQL statement of the collector. Routes call these functions only.

Written for many stateless replicas over one PostgreSQL: every write is a
single transaction whose effects are idempotent on `report_id` (a
submission locks its device's row before it looks the id up, so of two
replicas storing the same report the second finds it and stores nothing),
and counters are updated in place by the database. Submissions are stored
in batches, one transaction each (see submit_batch and
leakcheck.collector.ingest), with hand-written SQL: that path is hot. A
report that repeats its device's state is stored as a heartbeat, not in
full (issue 13: changes, not repeats).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
import re
from typing import Any, Iterator, Sequence, get_args

from sqlalchemy import case, func, or_, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from leakcheck.collector import security
from leakcheck.collector.contract import EnrollIn, ReportIn, Verdict, parse_time
from leakcheck.collector.schema import (clone_events, current_findings, daily_verdicts, devices,
                                        findings, health, reports, sessions, tokens)


# How far into the future a report may claim to have started (clock skew
# between agent and collector). Beyond it the report is stored as starting
# now, its device is flagged (clock_skew_s), and it cannot pin the device's
# latest state: the next honest report replaces it.
CLOCK_SKEW_S = 300.0
# A report's verdicts (the contract's closed set).
VERDICTS: tuple[str, ...] = get_args(Verdict)


class CloneSuspected(Exception):
    """A second installation claims a device id that another one holds."""


@dataclass(frozen=True)
class Principal:
    kind: str  # device | analyst | admin
    device_id: str | None
    token_id: int | None = None  # who, for the audit log
    label: str = ""


@dataclass(frozen=True)
class Pending:
    """One submission waiting to be stored: the validated report, the JSON
    stored for it, and the hash of the token it came with."""
    report: ReportIn
    body: str
    token_hash: str


@dataclass(frozen=True)
class Outcome:
    status: int  # 201 stored, 200 already stored, 401, 403, 409, 429
    detail: str
    metric: str  # the outcome counted in /metrics
    retry_after: int | None = None


def _insert(conn: Connection, table):  # type: ignore[no-untyped-def]
    """INSERT with ON CONFLICT support for whichever database this is."""
    return (postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table))


def _epoch(text: str) -> float:
    return parse_time(text).timestamp()


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._writer = engine.execution_options(immediate=True)
        self._statements: dict[str, str] | None = None

    # -- tokens and enrollment ---------------------------------------------------

    def create_token(self, kind: str, device_id: str | None = None, label: str = "",
                     conn: Connection | None = None) -> str:
        token = security.new_token(kind)
        row = dict(token_hash=security.token_hash(token), kind=kind, device_id=device_id,
                   label=label, created_at=time.time(), revoked_at=None)
        if conn is not None:
            conn.execute(tokens.insert().values(**row))
        else:
            with self._writer.begin() as c:
                c.execute(tokens.insert().values(**row))
        return token

    def revoke_token(self, token: str) -> bool:
        with self._writer.begin() as conn:
            result = conn.execute(update(tokens).where(
                tokens.c.token_hash == security.token_hash(token), tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time()))
            return result.rowcount > 0

    def list_tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        """Every token's id, kind, label, device and dates; never a value or hash."""
        query = select(tokens.c.id, tokens.c.kind, tokens.c.label, tokens.c.device_id, tokens.c.created_at,
                       tokens.c.revoked_at).order_by(tokens.c.id)
        if not include_revoked:
            query = query.where(tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping, created_at=_iso(r.created_at), revoked_at=_iso(r.revoked_at)) for r in rows]

    def revoke_tokens(self, token_id: int | None = None, label: str | None = None) -> int:
        """Revoke by id, or every live token with this label; ends their web sessions."""
        cond = tokens.c.id == token_id if token_id is not None else tokens.c.label == label
        with self._writer.begin() as conn:
            ids = conn.execute(select(tokens.c.id).where(cond, tokens.c.revoked_at.is_(None))).scalars().all()
            if ids:
                conn.execute(update(tokens).where(tokens.c.id.in_(ids)).values(revoked_at=time.time()))
                conn.execute(sessions.delete().where(sessions.c.token_id.in_(ids)))
            return len(ids)

    def create_session(self, token: str, lifetime_s: float) -> str | None:
        """A web session for a live analyst token; the cookie carries its id."""
        now = time.time()
        with self._writer.begin() as conn:
            token_id = conn.execute(select(tokens.c.id).where(
                tokens.c.token_hash == security.token_hash(token), tokens.c.kind.in_(("analyst", "admin")),
                tokens.c.revoked_at.is_(None))).scalar()
            if token_id is None:
                return None
            conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            session = security.new_session()
            conn.execute(sessions.insert().values(session_hash=security.token_hash(session), token_id=token_id,
                                                  created_at=now, expires_at=now + lifetime_s))
        return session

    def subject_session(self, label: str, kind: str, lifetime_s: float) -> str:
        """A web session for a user signed in elsewhere (OIDC): tied to the
        live token row of this label and role, made if missing (its value
        is thrown away: only the session can use it). A changed role
        revokes the old row, and so the old role's sessions."""
        now = time.time()
        with self._writer.begin() as conn:
            token_id = conn.execute(select(tokens.c.id).where(
                tokens.c.label == label, tokens.c.kind == kind, tokens.c.device_id.is_(None),
                tokens.c.revoked_at.is_(None))).scalar()
            if token_id is None:
                old = conn.execute(select(tokens.c.id).where(tokens.c.label == label,
                                                             tokens.c.revoked_at.is_(None))).scalars().all()
                if old:
                    conn.execute(update(tokens).where(tokens.c.id.in_(old)).values(revoked_at=now))
                    conn.execute(sessions.delete().where(sessions.c.token_id.in_(old)))
                self.create_token(kind, None, label, conn=conn)
                token_id = conn.execute(select(tokens.c.id).where(
                    tokens.c.label == label, tokens.c.kind == kind, tokens.c.revoked_at.is_(None))).scalar()
            session = security.new_session()
            conn.execute(sessions.insert().values(session_hash=security.token_hash(session), token_id=token_id,
                                                  created_at=now, expires_at=now + lifetime_s))
        return session

    def session_principal(self, session: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens.c.kind, tokens.c.device_id, tokens.c.id, tokens.c.label).join(
                sessions, sessions.c.token_id == tokens.c.id).where(
                sessions.c.session_hash == security.token_hash(session), sessions.c.expires_at > time.time(),
                tokens.c.revoked_at.is_(None))).first()
        return Principal(row.kind, row.device_id, row.id, row.label) if row else None

    def end_session(self, session: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.session_hash == security.token_hash(session)))

    def check_writable(self) -> None:
        """Raises unless a write commits (a full disk, a read-only database)."""
        with self._writer.begin() as conn:
            conn.execute(update(health).where(health.c.id == 1).values(checked_at=time.time()))

    def revoke_device(self, device_id: str) -> int:
        with self._writer.begin() as conn:
            result = conn.execute(update(tokens).where(
                tokens.c.device_id == device_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time()))
            return result.rowcount

    def authenticate(self, token: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens.c.kind, tokens.c.device_id, tokens.c.id, tokens.c.label).where(
                tokens.c.token_hash == security.token_hash(token),
                tokens.c.revoked_at.is_(None))).first()
        return Principal(row.kind, row.device_id, row.id, row.label) if row else None

    def enroll(self, request: EnrollIn, clone_grace_s: float, current_token: str | None = None) -> str:
        """A device token for this installation. A new device id enrolls with
        the fleet secret alone. An existing one needs more, so that nobody
        holding the secret can take over a quiet device: the device's current
        token (the agent sends it when it re-enrolls), or an admin's approval
        (`leakcheck collector token revoke-device DEVICE` revokes its tokens,
        which frees the id). Refusals are recorded for the fleet views."""
        now = time.time()
        dev = request.device
        with self._writer.begin() as conn:
            existing = conn.execute(select(devices.c.instance, devices.c.last_seen)
                                    .where(devices.c.device_id == dev.id).with_for_update()).first()
            if existing is None:
                conn.execute(_insert(conn, devices).values(
                    device_id=dev.id, hostname=dev.hostname, os=dev.os, os_version=dev.os_version,
                    instance=request.instance, enrolled_at=now, rl_window=0, rl_count=0)
                    .on_conflict_do_nothing())
            else:
                live = conn.execute(select(tokens.c.token_hash).where(
                    tokens.c.device_id == dev.id, tokens.c.kind == "device", tokens.c.revoked_at.is_(None))
                ).scalars().all()
                holds_token = current_token is not None and security.token_hash(current_token) in live
                if live and not holds_token:
                    clone = existing.instance != request.instance and _recent(existing.last_seen, now,
                                                                               clone_grace_s)
                    raise _CloneDetected("clone" if clone else "unapproved")
                conn.execute(update(devices).where(devices.c.device_id == dev.id).values(
                    hostname=dev.hostname, os=dev.os, os_version=dev.os_version,
                    instance=request.instance))
            conn.execute(update(tokens).where(tokens.c.device_id == dev.id,
                                              tokens.c.revoked_at.is_(None)).values(revoked_at=now))
            return self.create_token("device", dev.id, dev.hostname, conn=conn)

    def enroll_or_clone(self, request: EnrollIn, clone_grace_s: float, current_token: str | None = None) -> str:
        try:
            return self.enroll(request, clone_grace_s, current_token)
        except _CloneDetected as refused:
            # Nothing of the enrollment is stored, but the attempt is evidence.
            with self._writer.begin() as conn:
                dev = request.device
                conn.execute(clone_events.insert().values(device_id=dev.id, hostname=dev.hostname,
                                                          instance=request.instance, seen_at=time.time(),
                                                          reason=str(refused)))
            raise CloneSuspected(str(refused)) from None

    # -- submissions --------------------------------------------------------------

    def writer_connection(self) -> Connection:
        """A connection for a long-lived writer (leakcheck.collector.ingest):
        kept across batches, so no pool checkout and no liveness ping each time."""
        return self._writer.connect()

    def submit_batch(self, items: Sequence[Pending], limit: int, window_s: int,
                     conn: Connection | None = None, daily_bytes: int = 16 << 20) -> list[Outcome]:
        """Store a batch of submissions in one transaction (group commit: one
        BEGIN/COMMIT, and on PostgreSQL a handful of pipelined round trips,
        however many reports). Each gets its own outcome, as if submitted alone:

        - the batch's device rows are locked and read (SELECT ... FOR UPDATE
          in device_id order, so two replicas' batches lock in the same order:
          no deadlock; SQLite's writer already holds the database), and the
          batch's tokens looked up: a report needs a live device token of its
          own device (else 401 unknown/revoked, 403 analyst token or another
          device's report);
        - 429 when over the rate limit (the count stays: a flood is still a
          flood), or when the device's stored bytes for the UTC day would pass
          `daily_bytes` (its storage budget; Retry-After: the next UTC day);
        - a report_id already stored answers 200 (409 if another device's);
        - a new report is a heartbeat if it repeats the state of its device's
          latest report and is newer, else a full row (see _classify);
        - then ONE update per device (counters, and the latest state if a
          report of the batch is newer: decided here, under the lock), the
          rows, current findings, and the per-day counters (summed per batch,
          written last, in a fixed order); on PostgreSQL in one pipeline.
          One row version per device and batch, not two per report: every
          report updates its device, and at 100,000 devices those versions
          are what the fleet summary has to scan past.
        """
        now = time.time()
        window = int(now // window_s)
        day = int(now // 86400)
        order = sorted(range(len(items)), key=lambda i: (items[i].report.device.id, items[i].report.report_id))
        outcomes: list[Outcome | None] = [None] * len(items)
        if conn is None:
            with self._writer.connect() as own:
                return self.submit_batch(items, limit, window_s, own, daily_bytes)
        with conn.begin():
            sql = self._sql(conn)
            cur = conn.connection.cursor()
            try:
                devs = _locked_devices(cur, sql, sorted({items[i].report.device.id for i in order}))
                holders = _token_holders(cur, sql, sorted({items[i].token_hash for i in order}))
                allowed = []
                for i in order:
                    report, dev = items[i].report, devs.get(items[i].report.device.id)
                    refused = _refusal(holders.get(items[i].token_hash), report.device.id, dev is not None)
                    if refused is not None:
                        outcomes[i] = refused
                        continue
                    count, spent = dev.count(window, day, len(items[i].body.encode("utf-8")), now)
                    if count > limit:
                        outcomes[i] = Outcome(429, "too many reports from this device", "rate_limited",
                                              retry_after=max(1, math.ceil((window + 1) * window_s - now)))
                    elif spent > daily_bytes:
                        outcomes[i] = Outcome(429, "this device's storage budget for today is spent",
                                              "over_budget", retry_after=max(1, math.ceil((day + 1) * 86400 - now)))
                    else:
                        allowed.append(i)
                rows = {i: _report_row(items[i].report, items[i].body, now) for i in allowed}
                fresh = self._classify(cur, sql, items, rows, allowed, devs, outcomes)
                self._store_details(cur, sql, [(items[i].report, rows[i], kind) for i, kind in fresh], devs)
            finally:
                cur.close()
        return [o if o is not None else Outcome(500, "not processed", "error") for o in outcomes]

    def _classify(self, cur: Any, sql: dict[str, str], items: Sequence[Pending], rows: dict[int, dict[str, Any]],
                  allowed: list[int], devs: dict[str, "_Device"],
                  outcomes: list[Outcome | None]) -> list[tuple[int, str]]:
        """Which allowed submissions are new, and whether each is a full
        report or a heartbeat (it repeats the state of its device's latest
        report and is newer than it). Already stored ids answer 200 (409 if
        stored for another device). This batch holds the lock on each of its
        device rows, so no other transaction stores a report of these
        devices until this one commits: looking an id up is as safe as a
        unique key (which a partitioned table cannot have on report_id alone)."""
        owners = _stored_owners(cur, sql, [items[i].report.report_id for i in allowed])
        fresh: list[tuple[int, str]] = []
        # A device's reports in time order, so each is compared with the one before it.
        for i in sorted(allowed, key=lambda i: (items[i].report.device.id, rows[i]["started_at"],
                                                items[i].report.report_id)):
            report, row = items[i].report, rows[i]
            owner = owners.get(report.report_id)
            if owner is not None:
                outcomes[i] = (Outcome(200, "", "duplicate") if owner == report.device.id else
                               Outcome(409, "this report_id is stored for another device", "rejected_foreign_report"))
                continue
            owners[report.report_id] = report.device.id  # the same id twice in one batch
            row["state_hash"] = state_hash(report)
            kind = devs[report.device.id].take(report, row)
            outcomes[i] = Outcome(201, "", "stored")
            fresh.append((i, kind))
        return fresh

    def _store_details(self, cur: Any, sql: dict[str, str], stored: list[tuple[ReportIn, dict[str, Any], str]],
                       devs: dict[str, "_Device"]) -> None:
        """Full reports: the report row, findings, latest state, current
        findings (upserted: a finding keeps its first_seen while it lasts).
        Heartbeats: a slim row, the device's latest fields and counter, and
        last_seen of its current findings. Both: the per-day counters. None
        of these needs another's result (what is the device's latest or its
        state's report is decided in SQL, in this order)."""
        full = [(r, row) for r, row, kind in stored if kind == "full"]
        beats = [(r, row) for r, row, kind in stored if kind == "heartbeat"]
        findings_rows, current_rows, per_day = [], [], {}
        for r, row in full:
            findings_rows += [dict(report_id=r.report_id, device_id=r.device.id, probe=p.probe, finding_id=f.id,
                                   severity=f.severity, summary=f.summary, started_at=row["started_at"])
                              for p in r.probes for f in p.findings]
            seen = {f.id: p.probe for p in r.probes for f in p.findings}
            current_rows += [dict(device_id=r.device.id, report_id=r.report_id, finding_id=fid, probe=probe,
                                  started_at=row["started_at"]) for fid, probe in seen.items()]
        for r, row, _ in stored:
            key = (datetime.fromtimestamp(row["started_at"], timezone.utc).date().isoformat(), r.verdict)
            per_day[key] = per_day.get(key, 0) + 1
        with _pipeline(cur):
            _each(cur, sql["insert_report"], [{c: row[c] for c in _REPORT_COLUMNS} for _, row in full])
            _each(cur, sql["insert_heartbeat"], [dict(report_id=r.report_id, device_id=r.device.id,
                                                      started_at=row["started_at"]) for r, row in beats])
            _each(cur, sql["insert_finding"], findings_rows)
            # Devices in id order (the order they were locked in).
            updates = [devs[d].params() for d in sorted(devs) if devs[d].last_seen is not None]
            _each(cur, sql["device"], [u for u in updates if u.get("report_id") is None])
            _each(cur, sql["device_latest"], [u for u in updates if u.get("report_id") is not None
                                              and "spool_depth" not in u])
            _each(cur, sql["device_health"], [u for u in updates if "spool_depth" in u])
            _each(cur, sql["upsert_current"], current_rows)
            _each(cur, sql["clear_current"], [dict(device_id=r.device.id, report_id=r.report_id,
                                                   started_at=row["started_at"]) for r, row in full])
            _each(cur, sql["beat_current"], [dict(device_id=r.device.id, report_id=r.report_id,
                                                  started_at=row["started_at"])
                                             for r, row in beats if any(p.findings for p in r.probes)])
            _each(cur, sql["count_day"], [dict(day=d, verdict=v, n=n) for (d, v), n in sorted(per_day.items())])

    def _sql(self, conn: Connection) -> dict[str, str]:
        if self._statements is None:
            dialect = conn.dialect.name
            self._statements = {name: (text[dialect] if isinstance(text, dict) else _paramstyle(text, dialect))
                                for name, text in SUBMIT_SQL.items()}
        return self._statements

    # -- partitions and retention ----------------------------------------------------

    def ensure_partitions(self, now: float, days_ahead: int = 3) -> list[str]:
        """PostgreSQL: day partitions of reports and heartbeats from today to
        `days_ahead` days on, so that reports land in a day table retention
        can drop whole. Rows of such a day already in the DEFAULT partition
        (a database just migrated) move into it. Returns the tables made;
        nothing to do on SQLite."""
        if self.engine.dialect.name != "postgresql":
            return []
        made: list[str] = []
        wanted = {table: {_partition_name(table, int(now // 86400) + k): int(now // 86400) + k
                          for k in range(days_ahead + 1)} for table in PARTITIONED}
        with self.engine.connect() as conn:
            existing = set(conn.exec_driver_sql(_PARTITIONS_SQL).scalars())
        for table, days in wanted.items():
            if set(days) <= existing:
                continue  # the usual case: no DDL, no lock
            with self._writer.begin() as conn:
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7345002)")  # replicas start together
                # The parent first, as every query locks it before its partitions: no deadlock.
                conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                existing = set(conn.exec_driver_sql(_PARTITIONS_SQL).scalars())
                for name, day in days.items():
                    if name in existing:
                        continue
                    lo, hi = day * 86400, (day + 1) * 86400
                    conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
                    conn.exec_driver_sql(f"WITH moved AS (DELETE FROM {table}_default WHERE started_at >= {lo} "
                                         f"AND started_at < {hi} RETURNING *) INSERT INTO {name} SELECT * FROM moved")
                    conn.exec_driver_sql(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
                    made.append(name)
        return made

    def purge_before(self, cutoff: float, batch: int = 2000) -> int:
        """Retention: delete report rows that started before `cutoff`, `batch`
        rows per transaction (short locks; ingest goes on between them).
        The report that began each device's current state is kept, with its
        findings, however old: it is the evidence behind what the fleet views
        show now. On PostgreSQL a day partition wholly before the cutoff is
        dropped instead (kept rows move to DEFAULT first). Returns rows deleted."""
        deleted = self._drop_partitions(cutoff) if self.engine.dialect.name == "postgresql" else 0
        keep = "SELECT state_report_id FROM devices WHERE state_report_id IS NOT NULL"
        statements = [
            f"DELETE FROM findings WHERE id IN (SELECT id FROM findings WHERE started_at < :cutoff "
            f"AND report_id NOT IN ({keep}) LIMIT :n)",
            f"DELETE FROM reports WHERE report_id IN (SELECT report_id FROM reports WHERE started_at < :cutoff "
            f"AND report_id NOT IN ({keep}) LIMIT :n)",
            "DELETE FROM heartbeats WHERE report_id IN (SELECT report_id FROM heartbeats WHERE started_at < :cutoff "
            "LIMIT :n)",
        ]
        for statement in statements:
            while True:
                with self._writer.begin() as conn:
                    count = conn.execute(sql_text(statement), dict(cutoff=cutoff, n=batch)).rowcount
                deleted += max(count, 0)
                if count < batch:
                    break
        return deleted

    def _drop_partitions(self, cutoff: float) -> int:
        dropped = 0
        with self._writer.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7345002)")
            for table in PARTITIONED:
                conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                parts = conn.exec_driver_sql(
                    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass", (table,)).all()
                for name, bound in parts:
                    found = re.search(r"TO \('?([0-9.e+-]+)'?\)", bound or "")
                    if not found or float(found.group(1)) > cutoff:
                        continue  # DEFAULT, or not wholly before the cutoff
                    conn.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {name}")
                    if table == "reports":
                        conn.exec_driver_sql(f"INSERT INTO reports SELECT * FROM {name} WHERE report_id IN "
                                             "(SELECT state_report_id FROM devices)")
                    dropped += conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar() or 0
                    conn.exec_driver_sql(f"DROP TABLE {name}")
        return dropped

    # -- reading ------------------------------------------------------------------

    def devices(self, now: float, interval_s: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(devices).order_by(devices.c.hostname, devices.c.device_id)).all()
        return [_device_view(r._mapping, now, interval_s) for r in rows]

    def device(self, device_id: str, now: float, interval_s: int, history: int = 50) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(devices).where(devices.c.device_id == device_id)).first()
            if row is None:
                return None
            past = conn.execute(select(reports.c.report_id, reports.c.started_at, reports.c.trigger,
                                       reports.c.verdict, reports.c.tunnel_state, reports.c.reconnect_s)
                                .where(reports.c.device_id == device_id)
                                .order_by(reports.c.started_at.desc()).limit(history)).all()
            current = conn.execute(select(current_findings.c.finding_id, current_findings.c.probe,
                                          current_findings.c.first_seen, current_findings.c.last_seen)
                                   .where(current_findings.c.device_id == device_id)
                                   .order_by(current_findings.c.finding_id)).all()
            refused = conn.execute(select(clone_events).where(clone_events.c.device_id == device_id)
                                   .order_by(clone_events.c.seen_at.desc()).limit(20)).all()
        view = _device_view(row._mapping, now, interval_s)
        view["current_findings"] = [dict(finding_id=c.finding_id, probe=c.probe, first_seen=_iso(c.first_seen),
                                         last_seen=_iso(c.last_seen)) for c in current]
        view["refused_enrollments"] = [dict(seen_at=_iso(e.seen_at), hostname=e.hostname, instance=e.instance,
                                            reason=e.reason) for e in refused]
        view["history"] = [dict(report_id=p.report_id, started_at=_iso(p.started_at), trigger=p.trigger,
                                verdict=p.verdict, tunnel_state=p.tunnel_state,
                                reconnect_s=p.reconnect_s) for p in past]
        return view

    def latest_report(self, device_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            # The full report that began the device's current state (later
            # reports repeating it are heartbeats, stored without a body).
            body = conn.execute(select(reports.c.body).join(
                devices, func.coalesce(devices.c.state_report_id, devices.c.last_report_id) == reports.c.report_id)
                .where(devices.c.device_id == device_id)).scalar()
        return json.loads(body) if body else None

    def findings(self, probe: str | None, finding_id: str | None, since: float | None,
                 until: float | None, device_id: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        conds = []
        for column, value in ((findings.c.probe, probe), (findings.c.finding_id, finding_id),
                              (findings.c.device_id, device_id)):
            if value is not None:
                conds.append(column == value)
        if since is not None:
            conds.append(findings.c.started_at >= since)
        if until is not None:
            conds.append(findings.c.started_at < until)
        query = (select(findings.c.report_id, findings.c.device_id, findings.c.probe,
                        findings.c.finding_id, findings.c.severity, findings.c.summary,
                        findings.c.started_at)
                 .where(*conds).order_by(findings.c.started_at.desc(), findings.c.id.desc())
                 .limit(limit).offset(offset))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [dict(r._mapping, started_at=_iso(r.started_at)) for r in rows]

    def summary(self, now: float, interval_s: int, days: int) -> dict[str, Any]:
        stale_before = now - 2 * interval_s
        with self.engine.connect() as conn:
            # Verdicts are a closed set (the contract's): devices per verdict and
            # stale devices come from one pass over devices without grouping; the
            # per-OS counts from the (os) index alone.
            is_stale = or_(devices.c.last_started_at.is_(None), devices.c.last_started_at < stale_before)
            counted = conn.execute(select(
                func.count(), func.sum(case((is_stale, 1), else_=0)),
                func.sum(case((devices.c.last_verdict.is_(None), 1), else_=0)),
                *(func.sum(case((devices.c.last_verdict == v, 1), else_=0)) for v in VERDICTS))).one()
            per_verdict = [(v, n) for v, n in zip((None, *VERDICTS), counted[2:]) if n]
            stale = counted[1]
            per_os = conn.execute(select(devices.c.os, func.count()).group_by(devices.c.os)).all()
            per_finding = conn.execute(select(current_findings.c.finding_id, current_findings.c.probe,
                                              func.count()).group_by(current_findings.c.finding_id,
                                                                     current_findings.c.probe)
                                       .order_by(func.count().desc())).all()
            first_day = datetime.fromtimestamp(now - days * 86400, timezone.utc).date().isoformat()
            trend = conn.execute(select(daily_verdicts.c.day, daily_verdicts.c.verdict,
                                        daily_verdicts.c.reports)
                                 .where(daily_verdicts.c.day >= first_day)
                                 .order_by(daily_verdicts.c.day)).all()
            slowest = conn.execute(select(devices.c.device_id, devices.c.hostname, devices.c.reconnect_s)
                                   .where(devices.c.reconnect_s.is_not(None))
                                   .order_by(devices.c.reconnect_s.desc()).limit(10)).all()
            clones = conn.execute(select(func.count()).select_from(clone_events)).scalar()
        by_day: dict[str, dict[str, int]] = {}
        for day, verdict, count in trend:
            by_day.setdefault(day, {})[verdict] = int(count)
        return {
            "devices": int(counted[0]),
            "stale_devices": int(stale or 0),
            "devices_per_verdict": {(v or "none"): int(n) for v, n in per_verdict},
            "devices_per_finding": [dict(finding_id=f, probe=p, devices=int(n)) for f, p, n in per_finding],
            "devices_per_os": {o: int(n) for o, n in per_os},
            "trend": [dict(day=d, **counts) for d, counts in by_day.items()],
            "slowest_reconnects": [dict(device_id=d, hostname=h, reconnect_s=s) for d, h, s in slowest],
            "clone_events": int(clones or 0),
        }

    def export(self, since: float | None, until: float | None) -> Iterator[dict[str, Any]]:
        conds = []
        if since is not None:
            conds.append(reports.c.started_at >= since)
        if until is not None:
            conds.append(reports.c.started_at < until)
        query = (select(reports.c.report_id, reports.c.device_id, reports.c.started_at,
                        reports.c.finished_at, reports.c.trigger, reports.c.verdict,
                        reports.c.tunnel_state, reports.c.tunnel_kind, reports.c.agent_version,
                        reports.c.reconnect_s)
                 .where(*conds).order_by(reports.c.started_at))
        with self.engine.connect() as conn:
            for row in conn.execution_options(stream_results=True, yield_per=1000).execute(query):
                yield dict(row._mapping, started_at=_iso(row.started_at),
                           finished_at=_iso(row.finished_at))

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                "devices": int(conn.execute(select(func.count()).select_from(devices)).scalar() or 0),
                "reports": int(conn.execute(select(func.coalesce(func.sum(daily_verdicts.c.reports), 0)))
                               .scalar() or 0),
                "findings_current": int(conn.execute(select(func.count()).select_from(current_findings))
                                        .scalar() or 0),
            }

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(select(1))


class _CloneDetected(Exception):
    pass


def _recent(last_seen: float | None, now: float, grace_s: float) -> bool:
    return last_seen is not None and now - last_seen < grace_s


def reconnect_seconds(report: ReportIn) -> float | None:
    """The slowest tunnel recovery the reconnect probe measured, if any:
    numeric `reconnect_s` or `outage_s` in its findings' evidence."""
    values = [float(f.evidence[key]) for p in report.probes if p.probe == "reconnect"
              for f in p.findings for key in ("reconnect_s", "outage_s")
              if isinstance(f.evidence.get(key), (int, float)) and not isinstance(f.evidence.get(key), bool)
              and math.isfinite(float(f.evidence[key]))]
    return max(values) if values else None


def _report_row(report: ReportIn, body: str, now: float) -> dict[str, Any]:
    claimed = _epoch(report.started_at)
    skewed = claimed > now + CLOCK_SKEW_S  # a wrong clock (or a forged date): stored as received
    return dict(report_id=report.report_id, device_id=report.device.id, received_at=now,
                started_at=now if skewed else claimed,
                finished_at=now if skewed else min(_epoch(report.finished_at), now + CLOCK_SKEW_S),
                clock_skew_s=claimed - now if skewed else None,
                trigger=report.trigger, verdict=report.verdict, tunnel_state=report.tunnel.state,
                tunnel_kind=report.tunnel.kind, agent_version=report.agent_version,
                reconnect_s=reconnect_seconds(report), body=body)


def _device_view(row: Any, now: float, interval_s: int) -> dict[str, Any]:
    last = row["last_started_at"]
    return {
        "device_id": row["device_id"], "hostname": row["hostname"], "os": row["os"],
        "os_version": row["os_version"], "enrolled_at": _iso(row["enrolled_at"]),
        "last_seen": _iso(row["last_seen"]), "last_report_at": _iso(last),
        "last_report_id": row["last_report_id"], "verdict": row["last_verdict"],
        "trigger": row["last_trigger"], "tunnel_state": row["tunnel_state"],
        "tunnel_kind": row["tunnel_kind"], "agent_version": row["agent_version"],
        "reconnect_s": row["reconnect_s"],
        # Reports since the one that began the current state that repeated it.
        "heartbeats": row["heartbeats"], "state_report_id": row["state_report_id"],
        # Set when its latest report claimed a start this far in the future.
        "clock_skew_s": row["clock_skew_s"],
        # A device that has not reported for twice its interval is stale.
        "stale": last is None or now - last > 2 * interval_s,
        "agent": {"spool_depth": row["spool_depth"], "dropped": row["dropped"],
                  "last_upload": row["last_upload"], "last_error": row["last_error"]},
    }


# The submission path's statements, written once by hand: it is the hot path,
# and building SQLAlchemy constructs per report cost more than the database
# work. Named parameters (:name); _paramstyle adapts them for psycopg.
_REPORT_COLUMNS = ("report_id", "device_id", "received_at", "started_at", "finished_at", "trigger", "verdict",
                   "tunnel_state", "tunnel_kind", "agent_version", "reconnect_s", "body")
_LATEST = ("last_report_id = :report_id, last_started_at = :started_at, last_verdict = :verdict, "
           "last_trigger = :trigger, tunnel_state = :tunnel_state, tunnel_kind = :tunnel_kind, "
           "agent_version = :agent_version, hostname = :hostname, os = :os, os_version = :os_version, "
           "reconnect_s = :reconnect_s, clock_skew_s = :clock_skew_s")
_HEALTH = "spool_depth = :spool_depth, dropped = :dropped, last_upload = :last_upload, last_error = :last_error"
_STATE = "state_hash = :state_hash, state_report_id = :state_report_id, heartbeats = :heartbeats"
_COUNTERS = ("rl_window = :rl_window, rl_count = :rl_count, budget_day = :budget_day, "
             "budget_bytes = :budget_bytes, last_seen = :last_seen")
_IS_LATEST = "EXISTS (SELECT 1 FROM devices WHERE device_id = :device_id AND last_report_id = :report_id)"
_IS_STATE = "EXISTS (SELECT 1 FROM devices WHERE device_id = :device_id AND state_report_id = :report_id)"
SUBMIT_SQL: dict[str, Any] = {
    # The batch's devices, locked in id order (PostgreSQL; SQLite's writer holds the database).
    "lock_devices": {"sqlite": "SELECT device_id, rl_window, rl_count, budget_day, budget_bytes, state_hash, "
                               "state_report_id, heartbeats, last_started_at FROM devices WHERE device_id IN ({marks}) "
                               "ORDER BY device_id",
                     "postgresql": "SELECT device_id, rl_window, rl_count, budget_day, budget_bytes, state_hash, "
                                   "state_report_id, heartbeats, last_started_at FROM devices "
                                   "WHERE device_id = ANY(%(ids)s) ORDER BY device_id FOR UPDATE"},
    "token_holders": {"sqlite": "SELECT token_hash, kind, device_id FROM tokens WHERE revoked_at IS NULL "
                                "AND token_hash IN ({marks})",
                      "postgresql": "SELECT token_hash, kind, device_id FROM tokens WHERE revoked_at IS NULL "
                                    "AND token_hash = ANY(%(ids)s)"},
    "insert_report": ("INSERT INTO reports (" + ", ".join(f'"{c}"' for c in _REPORT_COLUMNS) + ") VALUES ("
                      + ", ".join(f":{c}" for c in _REPORT_COLUMNS) + ")"),
    "insert_heartbeat": "INSERT INTO heartbeats (report_id, device_id, started_at) VALUES (:report_id, :device_id, "
                        ":started_at)",
    "insert_finding": ("INSERT INTO findings (report_id, device_id, probe, finding_id, severity, summary, "
                       "started_at) VALUES (:report_id, :device_id, :probe, :finding_id, :severity, :summary, "
                       ":started_at)"),
    # One update per device and batch: its counters, and its latest report if the batch had a newer one.
    "device": f"UPDATE devices SET {_COUNTERS} WHERE device_id = :device_id",
    "device_latest": f"UPDATE devices SET {_COUNTERS}, {_LATEST}, {_STATE} WHERE device_id = :device_id",
    "device_health": f"UPDATE devices SET {_COUNTERS}, {_LATEST}, {_STATE}, {_HEALTH} WHERE device_id = :device_id",
    # Run after the device updates: only the report that began the device's
    # current state matches. A finding it repeats keeps its first_seen.
    "upsert_current": ("INSERT INTO current_findings (device_id, finding_id, probe, first_seen, last_seen) "
                       "SELECT CAST(:device_id AS VARCHAR), CAST(:finding_id AS VARCHAR), CAST(:probe AS VARCHAR), "
                       f":started_at, :started_at WHERE {_IS_STATE} "
                       "ON CONFLICT (device_id, finding_id) DO UPDATE SET probe = excluded.probe, "
                       "last_seen = excluded.last_seen"),
    # ... and the findings that report no longer has (not seen at its time) go.
    "clear_current": ("DELETE FROM current_findings WHERE device_id = :device_id AND "
                      f"(last_seen IS NULL OR last_seen < :started_at) AND {_IS_STATE}"),
    "beat_current": ("UPDATE current_findings SET last_seen = :started_at WHERE device_id = :device_id "
                     f"AND {_IS_LATEST}"),
    "count_day": ("INSERT INTO daily_verdicts (day, verdict, reports) VALUES (:day, :verdict, :n) "
                  "ON CONFLICT (day, verdict) DO UPDATE SET reports = daily_verdicts.reports + excluded.reports"),
    # Which of these ids are stored already, and for which device (reports or heartbeats).
    "owners": {"sqlite": "SELECT report_id, device_id FROM reports WHERE report_id IN ({marks}) UNION ALL "
                         "SELECT report_id, device_id FROM heartbeats WHERE report_id IN ({marks})",
               "postgresql": "SELECT report_id, device_id FROM reports WHERE report_id = ANY(%(ids)s) UNION ALL "
                             "SELECT CAST(report_id AS VARCHAR), device_id FROM heartbeats "
                             "WHERE report_id = ANY(CAST(%(ids)s AS UUID[]))"},
}

# Evidence keys that hold measurements (durations, times), not state: a report
# differing only in these repeats its device's state (their newest values
# still reach the device row, e.g. reconnect_s).
VOLATILE_EVIDENCE = ("_s", "_ms", "_at")


def state_hash(report: ReportIn) -> str:
    """What a device's state is, for change detection: verdict, tunnel,
    each probe's status, and each finding's id, severity and evidence
    (less VOLATILE_EVIDENCE keys). Summaries and guidance are the agent's
    wording, not the device's state."""
    probes = sorted(json.dumps([p.probe, p.status, sorted(
        json.dumps([f.id, f.severity, {k: v for k, v in f.evidence.items() if not k.endswith(VOLATILE_EVIDENCE)}],
                   sort_keys=True, default=str) for f in p.findings)]) for p in report.probes)
    doc = [report.verdict, report.tunnel.state, report.tunnel.kind, sorted(report.tunnel.interfaces), probes]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


class _Device:
    """A device row locked by the batch: its counters and latest state as
    read, changed in memory by each of the batch's reports in turn, and
    written back once (params)."""

    def __init__(self, row: Any):
        (self.device_id, self.rl_window, self.rl_count, self.budget_day, self.budget_bytes, self.state_hash,
         self.state_report_id, self.heartbeats, self.latest_started) = row
        self.last_seen: float | None = None
        self.latest: tuple[ReportIn, dict[str, Any]] | None = None  # a newer report from this batch

    def count(self, window: int, day: int, size: int, now: float) -> tuple[int, int]:
        """Count one submission against the rate limit and the day's budget."""
        self.rl_count = self.rl_count + 1 if self.rl_window == window else 1
        self.rl_window = window
        self.budget_bytes = self.budget_bytes + size if self.budget_day == day else size
        self.budget_day = day
        self.last_seen = now
        return self.rl_count, self.budget_bytes

    def take(self, report: ReportIn, row: dict[str, Any]) -> str:
        """A new report (in time order): 'heartbeat' if scheduled, newer than
        the latest and of the same state, else 'full'; a newer one becomes
        the latest."""
        if self.latest_started is not None and row["started_at"] <= self.latest_started:
            return "full"  # late (spooled): kept whole, the device's state stays
        # Only scheduled runs repeat: a run a network change or a person set
        # off is kept whole, as the evidence of what that change did.
        beat = report.trigger == "schedule" and self.state_hash == row["state_hash"]
        self.latest, self.latest_started = (report, row), row["started_at"]
        if beat:
            self.heartbeats += 1
        else:
            self.state_hash, self.state_report_id, self.heartbeats = row["state_hash"], report.report_id, 0
        return "heartbeat" if beat else "full"

    def params(self) -> dict[str, Any]:
        out = dict(device_id=self.device_id, rl_window=self.rl_window, rl_count=self.rl_count,
                   budget_day=self.budget_day, budget_bytes=self.budget_bytes, last_seen=self.last_seen)
        if self.latest is not None:
            out.update(_latest_params(*self.latest), state_hash=self.state_hash,
                       state_report_id=self.state_report_id, heartbeats=self.heartbeats)
        return out


def _locked_devices(cur: Any, sql: dict[str, str], ids: list[str]) -> dict[str, _Device]:
    return {row[0]: _Device(row) for row in _select_in(cur, sql["lock_devices"], ids)}


def _token_holders(cur: Any, sql: dict[str, str], hashes: list[str]) -> dict[str, tuple[str, str | None]]:
    return {h: (kind, device) for h, kind, device in _select_in(cur, sql["token_holders"], hashes)}


def _refusal(holder: tuple[str, str | None] | None, device_id: str, enrolled: bool) -> Outcome | None:
    """None if a live device token of this very device came with the report."""
    if holder is None:
        return Outcome(401, "unknown or revoked token", "rejected_token")
    if holder[0] != "device":
        return Outcome(403, "only a device token can submit reports", "rejected_token")
    if holder[1] != device_id:
        return Outcome(403, "a device token can only submit its own device's reports", "rejected_foreign_device")
    if not enrolled:
        return Outcome(401, "unknown or revoked token", "rejected_token")
    return None


def _select_in(cur: Any, statement: str, values: list[str]) -> list[Any]:
    if not values:
        return []
    if cur.__class__.__module__.startswith("psycopg"):
        cur.execute(statement, dict(ids=values))
    else:
        cur.execute(statement.format(marks=", ".join("?" * len(values))), values)
    return cur.fetchall()


def _stored_owners(cur: Any, sql: dict[str, str], ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    if cur.__class__.__module__.startswith("psycopg"):
        cur.execute(sql["owners"], dict(ids=ids))
    else:
        cur.execute(sql["owners"].format(marks=", ".join("?" * len(ids))), ids + ids)
    return {rid: device for rid, device in cur.fetchall()}


# PostgreSQL tables partitioned by day of started_at (migrations.py, step 6).
PARTITIONED = ("reports", "heartbeats")
_PARTITIONS_SQL = "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"


def _partition_name(table: str, day: int) -> str:
    return f"{table}_d" + datetime.fromtimestamp(day * 86400, timezone.utc).strftime("%Y%m%d")


def _paramstyle(sql: str, dialect: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", sql) if dialect == "postgresql" else sql


def _many(cur: Any, sql: str, rows: list[dict[str, Any]]) -> list[Any]:
    """Run `sql` once per row; the first result row of each (None if none).
    psycopg pipelines them into one round trip; sqlite3 runs in-process."""
    if not rows:
        return []
    if cur.__class__.__module__.startswith("psycopg"):
        cur.executemany(sql, rows, returning=True)
        out = []
        while True:
            out.append(cur.fetchone())
            if not cur.nextset():
                break
        return out
    results = []
    for row in rows:
        cur.execute(sql, row)
        results.append(cur.fetchone())
    return results


def _each(cur: Any, sql: str, rows: list[dict[str, Any]]) -> None:
    if rows:
        cur.executemany(sql, rows)


def _pipeline(cur: Any) -> Any:
    """psycopg: queue what follows and wait once; sqlite3: nothing to batch."""
    if cur.__class__.__module__.startswith("psycopg"):
        return cur.connection.pipeline()
    return contextlib.nullcontext()


def _latest_params(report: ReportIn, row: dict[str, Any]) -> dict[str, Any]:
    params = dict(report_id=report.report_id, started_at=row["started_at"], verdict=report.verdict,
                  trigger=report.trigger, tunnel_state=report.tunnel.state, tunnel_kind=report.tunnel.kind,
                  agent_version=report.agent_version, hostname=report.device.hostname, os=report.device.os,
                  os_version=report.device.os_version, reconnect_s=row["reconnect_s"], device_id=report.device.id,
                  clock_skew_s=row["clock_skew_s"], state_hash=row.get("state_hash"))
    if report.agent is not None:
        params.update(spool_depth=report.agent.spool_depth, dropped=report.agent.dropped,
                      last_upload=report.agent.last_upload, last_error=report.agent.last_error)
    return params
