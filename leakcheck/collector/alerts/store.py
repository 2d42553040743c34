"""The alert dispatcher's SQL: lease, incremental poll, events, outbox, delivery log.

Only reads ingest's tables (devices, reports, clone_events); writes only the
alert_* tables (schema.py, migration step 4).

The poll reads devices whose `last_seen` is later than the cursor minus
OVERLAP_S. `last_seen` is stamped by the replica that stored a report, with
its clock, when its batch began; the batch commits a little later, so a
cursor taken from committed rows could pass a row still in flight.
Re-reading a window behind the cursor catches it, and re-reading is
harmless: a device whose latest report was already examined produces
nothing (alert_state.report_id). clone_events are re-read the same way
(ids behind the cursor) and recognised by their derived event ids.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from leakcheck.collector.alerts import events as ev
from leakcheck.collector.schema import (alert_deliveries, alert_events, alert_lease, alert_outbox,
                                        alert_state, clone_events, devices, reports)

OVERLAP_S = 30.0
CLONE_OVERLAP = 100
STALE_CHECK_S = 5.0
_CHUNK = 500


@dataclass(frozen=True)
class Due:
    """An outbox row ready to send: the event it carries and its attempts so far."""
    outbox_id: int
    seq: int
    attempts: int
    event: dict[str, Any]


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _insert(conn: Connection, table):  # type: ignore[no-untyped-def]
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


class AlertStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._writer = engine.execution_options(immediate=True)

    # -- detection -----------------------------------------------------------------

    def tick(self, holder: str, ttl_s: float, bounds: ev.Bounds, sinks: Sequence[str],
             now: float | None = None) -> int | None:
        """One detection round in one transaction; None if another replica holds the lease.
        Returns the number of events written."""
        now = time.time() if now is None else now
        quiet = self._quiet(holder, ttl_s, now)
        if quiet is not None:
            return None if quiet == "follower" else 0
        with self._writer.begin() as conn:
            if not self._take_lease(conn, holder, now, ttl_s):
                return None
            lease = conn.execute(select(alert_lease).where(alert_lease.c.id == 1)).one()
            new_events, seen = self._changed_devices(conn, lease.seen_cursor, bounds, now)
            stale_checked = lease.stale_checked_at
            if now - stale_checked >= STALE_CHECK_S:
                new_events += self._stale_devices(conn, bounds, now)
                stale_checked = now
            clones, clone_cursor = self._clones(conn, lease.clone_cursor)
            new_events += clones
            self._write_events(conn, new_events, sinks, now)
            conn.execute(update(alert_lease).where(alert_lease.c.id == 1).values(
                seen_cursor=max(lease.seen_cursor, seen), clone_cursor=max(lease.clone_cursor, clone_cursor),
                stale_checked_at=stale_checked))
        return len(new_events)

    def _quiet(self, holder: str, ttl_s: float, now: float) -> str | None:
        """Decide without a write transaction when there is nothing to do: another
        replica holds the lease ("follower"), or this one holds it for a while
        yet and nothing changed ("idle"). On SQLite every write transaction
        takes the one write lock that ingest needs, so idle polls stay reads."""
        with self.engine.connect() as conn:
            lease = conn.execute(select(alert_lease).where(alert_lease.c.id == 1)).one()
            if lease.holder != holder and lease.expires_at >= now:
                return "follower"
            if lease.holder != holder or lease.expires_at - now < ttl_s / 2 or now - lease.stale_checked_at >= STALE_CHECK_S:
                return None
            changed = conn.execute(select(devices.c.device_id).select_from(
                devices.outerjoin(alert_state, alert_state.c.device_id == devices.c.device_id))
                .where(*self._changed(lease.seen_cursor)).limit(1)).first()
            cloned = conn.execute(select(clone_events.c.id).where(clone_events.c.id > lease.clone_cursor)
                                  .limit(1)).first()
        return None if changed or cloned else "idle"

    @staticmethod
    def _changed(cursor: float) -> list[Any]:
        """Devices seen since the cursor (minus the overlap) whose latest report was not examined."""
        return [devices.c.last_seen > cursor - OVERLAP_S,
                # In SQL, not Python: the overlap re-reads many devices already examined.
                or_(alert_state.c.device_id.is_(None), alert_state.c.stale == 1,
                    alert_state.c.report_id.is_distinct_from(devices.c.last_report_id))]

    def _take_lease(self, conn: Connection, holder: str, now: float, ttl_s: float) -> bool:
        # On PostgreSQL this UPDATE locks the lease row until COMMIT: a second
        # replica's tick waits here, then finds the lease held and renewed.
        result = conn.execute(update(alert_lease).where(
            alert_lease.c.id == 1, or_(alert_lease.c.holder == holder, alert_lease.c.expires_at < now))
            .values(holder=holder, expires_at=now + ttl_s))
        return result.rowcount == 1

    def release_lease(self, holder: str) -> None:
        """On a clean stop: another replica (or the next start) takes over at once,
        not after the lease runs out."""
        with self._writer.begin() as conn:
            conn.execute(update(alert_lease).where(alert_lease.c.id == 1, alert_lease.c.holder == holder)
                         .values(expires_at=0))

    def holds_lease(self, holder: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(select(alert_lease.c.holder, alert_lease.c.expires_at)
                               .where(alert_lease.c.id == 1)).one()
        return row.holder == holder and row.expires_at > now

    def _changed_devices(self, conn: Connection, cursor: float, bounds: ev.Bounds,
                         now: float) -> tuple[list[dict[str, Any]], float]:
        rows = conn.execute(select(
            devices.c.device_id, devices.c.hostname, devices.c.os, devices.c.last_report_id,
            devices.c.last_verdict, devices.c.last_started_at, devices.c.reconnect_s, devices.c.last_seen,
            alert_state.c.report_id, alert_state.c.leaking, alert_state.c.stale, alert_state.c.slow)
            .select_from(devices.outerjoin(alert_state, alert_state.c.device_id == devices.c.device_id))
            .where(*self._changed(cursor))).all()
        seen = conn.execute(select(func.max(devices.c.last_seen))).scalar() or cursor
        work = []
        for r in rows:
            device = ev.Device(r.device_id, r.hostname, r.os, r.last_report_id, r.last_verdict,
                               r.last_started_at, r.reconnect_s)
            before = None if r.leaking is None else ev.Notified(r.report_id, json.loads(r.leaking),
                                                                bool(r.stale), bool(r.slow))
            fresh_again = bool(before and before.stale and device.started_at is not None
                               and now - device.started_at <= bounds.stale_after_s)
            if before is None or before.report_id != device.report_id or fresh_again:
                work.append((device, before))
        bodies = self._bodies(conn, [d.report_id for d, _ in work if d.verdict == "leak" and d.report_id])
        out: list[dict[str, Any]] = []
        states = []
        for device, before in work:
            found, after = ev.changes(device, before, bodies.get(device.report_id or ""), bounds, now)
            out += found
            states.append(dict(device_id=device.device_id, report_id=after.report_id,
                               leaking=json.dumps(after.leaking), stale=int(after.stale), slow=int(after.slow),
                               updated_at=now))
        self._save_states(conn, states)
        return out, seen

    def _bodies(self, conn: Connection, report_ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(report_ids):
            for rid, body in conn.execute(select(reports.c.report_id, reports.c.body)
                                          .where(reports.c.report_id.in_(chunk))):
                try:
                    out[rid] = json.loads(body)
                except ValueError:
                    out[rid] = {}
        return out

    def _save_states(self, conn: Connection, states: list[dict[str, Any]]) -> None:
        if not states:
            return
        stmt = _insert(conn, alert_state)
        stmt = stmt.on_conflict_do_update(index_elements=[alert_state.c.device_id], set_={
            c: stmt.excluded[c] for c in ("report_id", "leaking", "stale", "slow", "updated_at")})
        for chunk in _chunks(states):
            conn.execute(stmt, list(chunk))

    def _stale_devices(self, conn: Connection, bounds: ev.Bounds, now: float) -> list[dict[str, Any]]:
        rows = conn.execute(select(
            devices.c.device_id, devices.c.hostname, devices.c.os, devices.c.last_report_id,
            devices.c.last_verdict, devices.c.last_started_at, devices.c.reconnect_s, alert_state.c.leaking,
            alert_state.c.report_id, alert_state.c.slow)
            .select_from(devices.outerjoin(alert_state, alert_state.c.device_id == devices.c.device_id))
            .where(devices.c.last_started_at < now - bounds.stale_after_s,
                   or_(alert_state.c.stale.is_(None), alert_state.c.stale == 0))).all()
        out, states = [], []
        for r in rows:
            device = ev.Device(r.device_id, r.hostname, r.os, r.last_report_id, r.last_verdict,
                               r.last_started_at, r.reconnect_s)
            out.append(ev.stale(device, now, bounds))
            states.append(dict(device_id=r.device_id, report_id=r.report_id, leaking=r.leaking or "[]",
                               stale=1, slow=int(r.slow or 0), updated_at=now))
        self._save_states(conn, states)
        return out

    def _clones(self, conn: Connection, cursor: int) -> tuple[list[dict[str, Any]], int]:
        rows = conn.execute(select(clone_events, devices.c.os, devices.c.hostname.label("held_by"))
                            .select_from(clone_events.outerjoin(devices,
                                                                devices.c.device_id == clone_events.c.device_id))
                            .where(clone_events.c.id > cursor - CLONE_OVERLAP)
                            .order_by(clone_events.c.id)).all()
        if not rows:
            return [], cursor
        made = [ev.clone(r.id, {"id": r.device_id, "hostname": r.held_by or r.hostname, "os": r.os or ""},
                         r.reason, r.hostname, r.instance, r.seen_at) for r in rows]
        known = set()
        for chunk in _chunks([e["id"] for e in made]):
            known.update(conn.execute(select(alert_events.c.event_id)
                                      .where(alert_events.c.event_id.in_(chunk))).scalars())
        return [e for e in made if e["id"] not in known], max(r.id for r in rows)

    def _write_events(self, conn: Connection, new: list[dict[str, Any]], sinks: Sequence[str],
                      now: float) -> None:
        if not new:
            return
        for chunk in _chunks(new):
            conn.execute(alert_events.insert(), [dict(event_id=e["id"], type=e["type"], at=now,
                                                      device_id=e["device"]["id"], body=json.dumps(e))
                                                 for e in chunk])
        if not sinks:
            return
        for chunk in _chunks([e["id"] for e in new]):
            seqs = conn.execute(select(alert_events.c.seq).where(alert_events.c.event_id.in_(chunk))
                                .order_by(alert_events.c.seq)).scalars().all()
            conn.execute(alert_outbox.insert(), [dict(sink=s, seq=q, attempts=0, due_at=now)
                                                 for s in sinks for q in seqs])

    # -- delivery ------------------------------------------------------------------

    def due(self, sink: str, limit: int, now: float | None = None) -> list[Due]:
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_outbox.c.id, alert_outbox.c.seq, alert_outbox.c.attempts,
                                       alert_events.c.body)
                                .join(alert_events, alert_events.c.seq == alert_outbox.c.seq)
                                .where(alert_outbox.c.sink == sink, alert_outbox.c.due_at <= now)
                                .order_by(alert_outbox.c.seq).limit(limit)).all()
        return [Due(r.id, r.seq, r.attempts, json.loads(r.body)) for r in rows]

    def delivered(self, sink: str, batch: list[Due], started: float, status: int | None) -> None:
        with self._writer.begin() as conn:
            for chunk in _chunks([d.outbox_id for d in batch]):
                conn.execute(delete(alert_outbox).where(alert_outbox.c.id.in_(chunk)))
            self._log(conn, sink, batch, started, True, status, None)

    def failed(self, sink: str, batch: list[Due], started: float, status: int | None, error: str,
               retry_max_s: float) -> float:
        """Push the batch back with exponential backoff; returns when it is due again."""
        attempts = max(d.attempts for d in batch) + 1
        due_at = time.time() + min(retry_max_s, 2.0 ** (attempts - 1))
        with self._writer.begin() as conn:
            for chunk in _chunks([d.outbox_id for d in batch]):
                conn.execute(update(alert_outbox).where(alert_outbox.c.id.in_(chunk))
                             .values(attempts=attempts, due_at=due_at))
            self._log(conn, sink, batch, started, False, status, error[:500])
        return due_at

    def _log(self, conn: Connection, sink: str, batch: list[Due], started: float, ok: bool,
             status: int | None, error: str | None) -> None:
        conn.execute(alert_deliveries.insert().values(
            sink=sink, attempted_at=started, events=len(batch), first_seq=batch[0].seq, last_seq=batch[-1].seq,
            attempt=max(d.attempts for d in batch) + 1, ok=int(ok), status=status, error=error,
            duration_ms=int((time.time() - started) * 1000)))

    def prune(self, keep_s: float, now: float | None = None) -> int:
        """Delete delivery-log rows and events older than `keep_s`; an event
        some sink has not received yet stays, however old."""
        cut = (time.time() if now is None else now) - keep_s
        with self._writer.begin() as conn:
            conn.execute(delete(alert_deliveries).where(alert_deliveries.c.attempted_at < cut))
            result = conn.execute(delete(alert_events).where(
                alert_events.c.at < cut, alert_events.c.seq.not_in(select(alert_outbox.c.seq))))
            return int(result.rowcount or 0)

    # -- reading -------------------------------------------------------------------

    def events(self, after: int = 0, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """Events after sequence number `after`, oldest first (cursor pagination on `seq`)."""
        conds = [alert_events.c.seq > after]
        if kind:
            conds.append(alert_events.c.type == kind)
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_events.c.seq, alert_events.c.body).where(and_(*conds))
                                .order_by(alert_events.c.seq).limit(limit)).all()
        return [dict(json.loads(r.body), seq=r.seq) for r in rows]

    def deliveries(self, before: int | None = None, limit: int = 100, sink: str | None = None) -> list[dict[str, Any]]:
        """The delivery log, newest first (cursor pagination on `id`)."""
        conds = []
        if before is not None:
            conds.append(alert_deliveries.c.id < before)
        if sink:
            conds.append(alert_deliveries.c.sink == sink)
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_deliveries).where(*conds)
                                .order_by(alert_deliveries.c.id.desc()).limit(limit)).all()
        return [dict(r._mapping, ok=bool(r.ok), attempted_at=ev.iso(r.attempted_at)) for r in rows]

    def backlog(self) -> dict[str, int]:
        """Undelivered events per sink."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_outbox.c.sink, func.count()).group_by(alert_outbox.c.sink)).all()
        return {sink: int(n) for sink, n in rows}

    def report_documents(self, since: float | None, until: float | None) -> Iterator[dict[str, Any]]:
        """Stored report documents in a time range, oldest first, streamed (OCSF export)."""
        conds = []
        if since is not None:
            conds.append(reports.c.started_at >= since)
        if until is not None:
            conds.append(reports.c.started_at < until)
        query = select(reports.c.started_at, reports.c.body).where(*conds).order_by(reports.c.started_at)
        with self.engine.connect() as conn:
            for row in conn.execution_options(stream_results=True, yield_per=500).execute(query):
                try:
                    doc = json.loads(row.body)
                except ValueError:
                    continue
                doc["_started_ms"] = int(row.started_at * 1000)
                yield doc
