"""The collector's read queries for lists (issue 13): keyset pagination,
filters, finding detail. Routes and the web page call these; SQL stays here.

Every list is ordered by a unique key and paged by it: a page is "the next
`limit` rows after this key", one index range scan however deep the page,
and stable while reports arrive (offsets skip or repeat rows as the table
changes under them). The key travels as an opaque cursor: base64url JSON,
checked on the way back in (a bad cursor is a 400, never a 500).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, Iterator

from sqlalchemy import func, select, tuple_

from leakcheck.collector.schema import current_findings, devices, findings, reports
from leakcheck.collector.store import Store, _device_view, _iso

# Findings of this severity are notes (ipv6.skipped, reconnect.tunnel-history):
# they describe the run, not a leak, and never count as a leak class.
NOTE_SEVERITY = "info"
# Worst first, for sorting a device's findings.
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


class BadCursor(ValueError):
    """A cursor this collector did not hand out (or for another list)."""


def encode_cursor(kind: str, key: list[Any]) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, kind: str, types: tuple[type, ...]) -> list[Any]:
    """The key inside `cursor`, whose parts must have `types` (int is taken
    for float: JSON drops the .0)."""
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadCursor("not a cursor from this collector") from None
    if not isinstance(value, list) or len(value) != len(types) + 1 or value[0] != kind:
        raise BadCursor("this cursor belongs to another list")
    key = value[1:]
    for part, expected in zip(key, types):
        ok = isinstance(part, expected) or (expected is float and isinstance(part, int))
        if not ok or isinstance(part, bool):
            raise BadCursor("malformed cursor")
    return key


@dataclass
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None = None


@dataclass(frozen=True)
class DeviceFilter:
    os: str | None = None
    verdict: str | None = None
    tunnel_kind: str | None = None
    finding_id: str | None = None  # a current finding of the device
    probe: str | None = None  # a probe with a current finding on the device
    seen_since: float | None = None  # latest report started at or after
    seen_until: float | None = None

    def conditions(self) -> list[Any]:
        conds = []
        for column, value in ((devices.c.os, self.os), (devices.c.last_verdict, self.verdict),
                              (devices.c.tunnel_kind, self.tunnel_kind)):
            if value is not None:
                conds.append(column == value)
        if self.finding_id is not None or self.probe is not None:
            inner = [current_findings.c.device_id == devices.c.device_id]
            if self.finding_id is not None:
                inner.append(current_findings.c.finding_id == self.finding_id)
            if self.probe is not None:
                inner.append(current_findings.c.probe == self.probe)
            conds.append(select(1).where(*inner).exists())
        if self.seen_since is not None:
            conds.append(devices.c.last_started_at >= self.seen_since)
        if self.seen_until is not None:
            conds.append(devices.c.last_started_at < self.seen_until)
        return conds


@dataclass(frozen=True)
class FindingFilter:
    probe: str | None = None
    finding_id: str | None = None
    device_id: str | None = None
    since: float | None = None
    until: float | None = None
    os: str | None = None  # the device's OS (now)
    tunnel_kind: str | None = None  # the report's tunnel kind
    notes: bool = True  # include info-severity notes

    def conditions(self) -> list[Any]:
        conds = []
        for column, value in ((findings.c.probe, self.probe), (findings.c.finding_id, self.finding_id),
                              (findings.c.device_id, self.device_id)):
            if value is not None:
                conds.append(column == value)
        if self.since is not None:
            conds.append(findings.c.started_at >= self.since)
        if self.until is not None:
            conds.append(findings.c.started_at < self.until)
        if self.os is not None:  # finding_page joins devices
            conds.append(devices.c.os == self.os)
        if self.tunnel_kind is not None:
            conds.append(select(1).where(reports.c.report_id == findings.c.report_id,
                                         reports.c.tunnel_kind == self.tunnel_kind).exists())
        if not self.notes:
            conds.append(findings.c.severity != NOTE_SEVERITY)
        return conds


def device_page(store: Store, now: float, interval_s: int, limit: int, cursor: str | None = None,
                where: DeviceFilter = DeviceFilter()) -> Page:
    """Devices by (hostname, device_id), `limit` at a time."""
    order = (devices.c.hostname, devices.c.device_id)
    query = select(devices).where(*where.conditions())
    if cursor:
        hostname, device_id = decode_cursor(cursor, "d", (str, str))
        query = query.where(tuple_(*order) > tuple_(hostname, device_id))
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(*order).limit(limit + 1)).all()
    page = Page([_device_view(r._mapping, now, interval_s) for r in rows[:limit]])
    if len(rows) > limit:
        last = page.rows[-1]
        page.next_cursor = encode_cursor("d", [last["hostname"], last["device_id"]])
    return page


def iter_devices(store: Store, now: float, interval_s: int, where: DeviceFilter = DeviceFilter(),
                 batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every matching device, a page at a time (exports: bounded memory)."""
    cursor = None
    while True:
        page = device_page(store, now, interval_s, batch, cursor, where)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def finding_page(store: Store, limit: int, cursor: str | None = None,
                 where: FindingFilter = FindingFilter()) -> Page:
    """Findings newest first, by (started_at, id) descending."""
    order = (findings.c.started_at, findings.c.id)
    query = (select(findings.c.id, findings.c.report_id, findings.c.device_id, devices.c.hostname,
                    findings.c.probe, findings.c.finding_id, findings.c.severity, findings.c.summary,
                    findings.c.started_at)
             .join(devices, devices.c.device_id == findings.c.device_id, isouter=True)
             .where(*where.conditions()))
    if cursor:
        started, row_id = decode_cursor(cursor, "f", (float, int))
        query = query.where(tuple_(*order) < tuple_(float(started), row_id))
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(findings.c.started_at.desc(), findings.c.id.desc())
                            .limit(limit + 1)).all()
    page = Page([_finding_row(r) for r in rows[:limit]])
    if len(rows) > limit:
        last = rows[limit - 1]
        page.next_cursor = encode_cursor("f", [last.started_at, last.id])
    return page


def iter_findings(store: Store, where: FindingFilter = FindingFilter(), batch: int = 1000
                  ) -> Iterator[dict[str, Any]]:
    cursor = None
    while True:
        page = finding_page(store, batch, cursor, where)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _finding_row(r: Any) -> dict[str, Any]:
    return dict(report_id=r.report_id, device_id=r.device_id, hostname=r.hostname or "", probe=r.probe,
                finding_id=r.finding_id, severity=r.severity, summary=r.summary,
                started_at=_iso(r.started_at))


def finding_devices(store: Store, finding_id: str, now: float, interval_s: int, limit: int,
                    cursor: str | None = None) -> Page:
    """The devices whose latest report has this finding (the per-finding page)."""
    return device_page(store, now, interval_s, limit, cursor, DeviceFilter(finding_id=finding_id))


def finding_classes(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Devices per current finding id, split: leak classes (severity above
    info in the finding's latest occurrence) and notes."""
    with store.engine.connect() as conn:
        counts = conn.execute(select(current_findings.c.finding_id, current_findings.c.probe, func.count())
                              .group_by(current_findings.c.finding_id, current_findings.c.probe)
                              .order_by(func.count().desc(), current_findings.c.finding_id)).all()
        detail = {fid: _latest_occurrence(conn, fid) for fid, _, _ in counts}
    leaks, notes = [], []
    for fid, probe, n in counts:
        severity, summary = detail[fid]
        row = dict(finding_id=fid, probe=probe, devices=int(n), severity=severity, summary=summary)
        (notes if severity == NOTE_SEVERITY else leaks).append(row)
    return {"leaks": leaks, "notes": notes}


def _latest_occurrence(conn: Any, finding_id: str) -> tuple[str, str]:
    """Severity and summary of the newest stored occurrence (one index probe:
    ix_findings_fid_time)."""
    row = conn.execute(select(findings.c.severity, findings.c.summary)
                       .where(findings.c.finding_id == finding_id)
                       .order_by(findings.c.started_at.desc()).limit(1)).first()
    return (row.severity, row.summary) if row else ("", "")


def leaking_devices(store: Store, now: float, interval_s: int, limit: int, cursor: str | None = None) -> Page:
    return device_page(store, now, interval_s, limit, cursor, DeviceFilter(verdict="leak"))


def finding_detail(store: Store, device_id: str, latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The device's current findings as `leakcheck run` prints them: from its
    latest stored report (severity, summary, evidence, fix, guidance), with
    when each was first and last seen in its stored reports. Worst first."""
    if not latest:
        return []
    out = []
    for probe in latest.get("probes", []):
        for f in probe.get("findings", []):
            out.append(dict(finding_id=f["id"], probe=probe["probe"], severity=f["severity"],
                            summary=f["summary"], evidence=f.get("evidence") or {},
                            recommendation=f.get("recommendation", ""), guidance=f.get("guidance", "")))
    seen = _seen(store, device_id, [f["finding_id"] for f in out])
    for f in out:
        first, last = seen.get(f["finding_id"], (None, None))
        f["first_seen"], f["last_seen"] = _iso(first), _iso(last)
    out.sort(key=lambda f: (SEVERITY_ORDER.get(f["severity"], 9), f["finding_id"]))
    return out


def _seen(store: Store, device_id: str, finding_ids: list[str]) -> dict[str, tuple[float, float]]:
    """First and last start time of stored reports of this device carrying
    each finding (through the reports' (device_id, started_at) index)."""
    if not finding_ids:
        return {}
    query = (select(findings.c.finding_id, func.min(findings.c.started_at), func.max(findings.c.started_at))
             .join(reports, reports.c.report_id == findings.c.report_id)
             .where(reports.c.device_id == device_id, findings.c.finding_id.in_(finding_ids))
             .group_by(findings.c.finding_id))
    with store.engine.connect() as conn:
        return {fid: (first, last) for fid, first, last in conn.execute(query)}

