"""Fleet conformance: per NCSC recommendation, how many devices meet it.

A probe result names the recommendations it checks (`checks`, keys of
leakcheck.report.RECOMMENDATIONS), so conformance needs no probe names. For
one report and one recommendation R:
- the probes whose `checks` list R and that ran (status pass, warn or leak)
  decide: R is met when all of them passed, failed when any warned or leaked;
- a probe that was skipped or could not complete (skip, error) did not check
  R; a report where no probe checked R leaves the device "not checked".

The table counts each device once, by its latest report. The daily trend
counts, per day, each device by its last report of that day. Report bodies
are read here (the submitted JSON, verbatim), so the submission hot path
stays as it is; only the latest report per device and day is read.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.engine import Engine

from leakcheck.collector.schema import devices, reports
from leakcheck.report import RECOMMENDATIONS

RAN = {"pass", "warn", "leak"}
CHUNK = 500  # report ids per IN (...) query: well under every database's parameter limit


def outcome(body: dict[str, Any], key: str) -> str:
    """'meets', 'fails' or 'unchecked' for one report and one recommendation."""
    probes = body.get("probes")
    statuses = [p.get("status") for p in (probes if isinstance(probes, list) else ())
                if isinstance(p, dict) and isinstance(p.get("checks"), list) and key in p["checks"]
                and p.get("status") in RAN]
    if not statuses:
        return "unchecked"
    return "meets" if all(s == "pass" for s in statuses) else "fails"


def tally(bodies: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per recommendation: devices checked / meeting / failing (one body per device)."""
    table = {key: {"devices": 0, "checked": 0, "meets": 0, "fails": 0} for key in RECOMMENDATIONS}
    for body in bodies:
        for key, row in table.items():
            row["devices"] += 1
            result = outcome(body, key)
            if result != "unchecked":
                row["checked"] += 1
                row[result] += 1
    return table


def _bodies(engine: Engine, report_ids: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        for start in range(0, len(report_ids), CHUNK):
            chunk = report_ids[start:start + CHUNK]
            for rid, body in conn.execute(select(reports.c.report_id, reports.c.body)
                                          .where(reports.c.report_id.in_(chunk))):
                try:
                    parsed = json.loads(body)
                except ValueError:
                    continue  # stored verbatim after validation: not expected, never fatal
                if isinstance(parsed, dict):
                    yield rid, parsed


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).date().isoformat()


def conformance(engine: Engine, now: float, days: int) -> dict[str, Any]:
    """The table (latest report per device) and the daily trend over `days` days."""
    with engine.connect() as conn:
        latest = [r for (r,) in conn.execute(select(devices.c.last_report_id)
                                             .where(devices.c.last_report_id.is_not(None)))]
        since = now - days * 86400
        rows = conn.execute(select(reports.c.device_id, reports.c.started_at, reports.c.report_id)
                            .where(reports.c.started_at >= since)).all()
    last_of_day: dict[tuple[str, str], tuple[float, str]] = {}
    for device_id, started, rid in rows:
        key = (_day(started), device_id)
        if key not in last_of_day or started > last_of_day[key][0]:
            last_of_day[key] = (started, rid)
    wanted = sorted(set(latest) | {rid for _, rid in last_of_day.values()})
    bodies = dict(_bodies(engine, wanted))
    table = tally(bodies[r] for r in latest if r in bodies)
    per_day: dict[str, list[dict[str, Any]]] = {}
    for (day, _), (_, rid) in sorted(last_of_day.items()):
        if rid in bodies:
            per_day.setdefault(day, []).append(bodies[rid])
    trend = [{"day": day, "recommendations": tally(day_bodies)} for day, day_bodies in sorted(per_day.items())]
    return {
        "devices": len([r for r in latest if r in bodies]),
        "recommendations": [{"key": key, "guidance": RECOMMENDATIONS[key], **row} for key, row in table.items()],
        "trend": trend,
    }
