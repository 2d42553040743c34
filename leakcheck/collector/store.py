"""Every SQL statement of the collector. Routes call these functions only.

Written for many stateless replicas over one PostgreSQL: every write is a
single transaction whose effects are idempotent on `report_id` (the
primary key decides which replica stores a report; the loser stores
nothing), and counters are updated in place by the database.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from leakcheck.collector import security
from leakcheck.collector.contract import EnrollIn, ReportIn, parse_time
from leakcheck.collector.schema import (clone_events, current_findings, daily_verdicts, devices,
                                        findings, reports, tokens)


class CloneSuspected(Exception):
    """A second installation claims a device id that another one holds."""


class ForeignReport(Exception):
    """The report_id is already stored for a different device."""


@dataclass(frozen=True)
class Principal:
    kind: str  # device | analyst
    device_id: str | None


@dataclass(frozen=True)
class Submission:
    stored: bool
    retry_after: int | None = None  # set when rate limited (nothing stored)


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

    def revoke_device(self, device_id: str) -> int:
        with self._writer.begin() as conn:
            result = conn.execute(update(tokens).where(
                tokens.c.device_id == device_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time()))
            return result.rowcount

    def authenticate(self, token: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens.c.kind, tokens.c.device_id).where(
                tokens.c.token_hash == security.token_hash(token),
                tokens.c.revoked_at.is_(None))).first()
        return Principal(row.kind, row.device_id) if row else None

    def enroll(self, request: EnrollIn, clone_grace_s: float) -> str:
        """A device token for this installation. The same installation may
        re-enroll (its old tokens are revoked); a different installation
        claiming an id that reported recently is a clone and is refused."""
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
            elif existing.instance != request.instance and _recent(existing.last_seen, now, clone_grace_s):
                raise _CloneDetected()
            else:
                conn.execute(update(devices).where(devices.c.device_id == dev.id).values(
                    hostname=dev.hostname, os=dev.os, os_version=dev.os_version,
                    instance=request.instance))
            conn.execute(update(tokens).where(tokens.c.device_id == dev.id,
                                              tokens.c.revoked_at.is_(None)).values(revoked_at=now))
            return self.create_token("device", dev.id, dev.hostname, conn=conn)

    def enroll_or_clone(self, request: EnrollIn, clone_grace_s: float) -> str:
        try:
            return self.enroll(request, clone_grace_s)
        except _CloneDetected:
            # Nothing of the enrollment is stored, but the attempt is evidence.
            with self._writer.begin() as conn:
                dev = request.device
                conn.execute(clone_events.insert().values(device_id=dev.id, hostname=dev.hostname,
                                                          instance=request.instance,
                                                          seen_at=time.time()))
            raise CloneSuspected(request.device.id) from None

    # -- submissions --------------------------------------------------------------

    def submit(self, report: ReportIn, body: str, device_id: str, limit: int, window_s: int) -> Submission:
        now = time.time()
        with self._writer.begin() as conn:
            retry_after = self._rate_limited(conn, device_id, now, limit, window_s)
            if retry_after is not None:
                return Submission(stored=False, retry_after=retry_after)
            inserted = conn.execute(_insert(conn, reports).values(**_report_row(report, body, now))
                                    .on_conflict_do_nothing(index_elements=["report_id"])
                                    .returning(reports.c.report_id)).first()
            if inserted is None:
                owner = conn.execute(select(reports.c.device_id)
                                     .where(reports.c.report_id == report.report_id)).scalar()
                if owner != device_id:
                    raise ForeignReport(report.report_id)
                return Submission(stored=False)
            self._store_findings(conn, report)
            self._count_day(conn, report)
            self._update_latest(conn, report, now)
        return Submission(stored=True)

    def _rate_limited(self, conn: Connection, device_id: str, now: float, limit: int,
                      window_s: int) -> int | None:
        window = int(now // window_s)
        conn.execute(update(devices).where(devices.c.device_id == device_id).values(
            rl_count=func.coalesce(
                # Same window: one more; a new window starts again at 1.
                _case_same_window(window), 1),
            rl_window=window, last_seen=now))
        count = conn.execute(select(devices.c.rl_count).where(devices.c.device_id == device_id)).scalar()
        if count is not None and count > limit:
            return max(1, math.ceil((window + 1) * window_s - now))
        return None

    def _store_findings(self, conn: Connection, report: ReportIn) -> None:
        started = _epoch(report.started_at)
        rows = [dict(report_id=report.report_id, device_id=report.device.id, probe=p.probe,
                     finding_id=f.id, severity=f.severity, summary=f.summary, started_at=started)
                for p in report.probes for f in p.findings]
        if rows:
            conn.execute(findings.insert(), rows)

    def _count_day(self, conn: Connection, report: ReportIn) -> None:
        day = parse_time(report.started_at).astimezone(timezone.utc).date().isoformat()
        stmt = _insert(conn, daily_verdicts).values(day=day, verdict=report.verdict, reports=1)
        conn.execute(stmt.on_conflict_do_update(index_elements=["day", "verdict"],
                                                set_={"reports": daily_verdicts.c.reports + 1}))

    def _update_latest(self, conn: Connection, report: ReportIn, now: float) -> None:
        started = _epoch(report.started_at)
        health = report.agent
        values: dict[str, Any] = dict(
            last_report_id=report.report_id, last_started_at=started, last_verdict=report.verdict,
            last_trigger=report.trigger, tunnel_state=report.tunnel.state,
            tunnel_kind=report.tunnel.kind, agent_version=report.agent_version,
            hostname=report.device.hostname, os=report.device.os, os_version=report.device.os_version,
            reconnect_s=reconnect_seconds(report))
        if health is not None:
            values.update(spool_depth=health.spool_depth, dropped=health.dropped,
                          last_upload=health.last_upload, last_error=health.last_error)
        # Only a newer report replaces the latest state (uploads arrive out of order).
        newer = conn.execute(update(devices).where(
            devices.c.device_id == report.device.id,
            or_(devices.c.last_started_at.is_(None), devices.c.last_started_at < started))
            .values(**values))
        if newer.rowcount == 0:
            return
        conn.execute(delete(current_findings).where(current_findings.c.device_id == report.device.id))
        current = {f.id: p.probe for p in report.probes for f in p.findings}
        if current:
            conn.execute(current_findings.insert(), [
                dict(device_id=report.device.id, finding_id=fid, probe=probe)
                for fid, probe in current.items()])

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
            current = conn.execute(select(current_findings.c.finding_id, current_findings.c.probe)
                                   .where(current_findings.c.device_id == device_id)
                                   .order_by(current_findings.c.finding_id)).all()
        view = _device_view(row._mapping, now, interval_s)
        view["current_findings"] = [dict(finding_id=c.finding_id, probe=c.probe) for c in current]
        view["history"] = [dict(report_id=p.report_id, started_at=_iso(p.started_at), trigger=p.trigger,
                                verdict=p.verdict, tunnel_state=p.tunnel_state,
                                reconnect_s=p.reconnect_s) for p in past]
        return view

    def latest_report(self, device_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            body = conn.execute(select(reports.c.body).join(
                devices, devices.c.last_report_id == reports.c.report_id)
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
            per_verdict = conn.execute(select(devices.c.last_verdict, func.count())
                                       .group_by(devices.c.last_verdict)).all()
            per_os = conn.execute(select(devices.c.os, func.count()).group_by(devices.c.os)).all()
            stale = conn.execute(select(func.count()).where(or_(
                devices.c.last_started_at.is_(None), devices.c.last_started_at < stale_before))).scalar()
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
            "devices": sum(int(n) for _, n in per_verdict),
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


def _case_same_window(window: int):  # type: ignore[no-untyped-def]
    from sqlalchemy import case
    return case((devices.c.rl_window == window, devices.c.rl_count + 1), else_=None)


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
    return dict(report_id=report.report_id, device_id=report.device.id, received_at=now,
                started_at=_epoch(report.started_at), finished_at=_epoch(report.finished_at),
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
        # A device that has not reported for twice its interval is stale.
        "stale": last is None or now - last > 2 * interval_s,
        "agent": {"spool_depth": row["spool_depth"], "dropped": row["dropped"],
                  "last_upload": row["last_upload"], "last_error": row["last_error"]},
    }
