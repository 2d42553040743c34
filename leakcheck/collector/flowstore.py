"""Every SQL statement about flows (leakcheck.flows/1). Routes call these only.

One row per (device, application, destination, port, protocol). A flows
document is stored in one transaction: the device token is checked and the
device's daily storage budget counted in the same UPDATE (as for reports),
the batch_id claimed (a resubmission stores nothing), then each flow is
upserted: the earliest first_seen, the latest last_seen, the highest count
(the agent's count is cumulative), and the latest summary and evidence.
Those merges are idempotent and order-free, so a batch delivered twice or
two batches delivered out of order leave the same row.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, distinct, func, select, text
from sqlalchemy.engine import Connection, Engine

from leakcheck.collector.contract import FlowsIn, parse_time
from leakcheck.collector.schema import devices, flow_batches, flows, tokens
from leakcheck.collector.store import CLOCK_SKEW_S, _iso
from leakcheck.flows import app_of


@dataclass(frozen=True)
class FlowsOutcome:
    status: int  # 201 stored, 200 already stored, 401, 403, 409, 429
    detail: str
    metric: str
    retry_after: int | None = None


def app_hash(app: str) -> str:
    return hashlib.sha256(app.encode("utf-8")).hexdigest()


_AUTH = ("UPDATE devices SET last_seen = :now, "
         "budget_bytes = CASE WHEN budget_day = :day THEN budget_bytes + :bytes ELSE :bytes END, "
         "budget_day = :day WHERE device_id = :device_id AND EXISTS "
         "(SELECT 1 FROM tokens WHERE token_hash = :token_hash AND kind = 'device' "
         "AND device_id = :device_id AND revoked_at IS NULL) RETURNING budget_bytes")
_CLAIM = ("INSERT INTO flow_batches (batch_id, device_id, received_at, flows) "
          "VALUES (:batch_id, :device_id, :now, :n) ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id")


def _newer(column: str) -> str:
    return f"CASE WHEN excluded.last_seen >= flows.last_seen THEN excluded.{column} ELSE flows.{column} END"


_UPSERT = ("INSERT INTO flows (device_id, app, app_hash, dst, dport, proto, finding_id, severity, summary, "
           "evidence, first_seen, last_seen, count, received_at) VALUES (:device_id, :app, :app_hash, :dst, "
           ":dport, :proto, :finding_id, :severity, :summary, :evidence, :first_seen, :last_seen, :count, :now) "
           "ON CONFLICT (device_id, app_hash, dst, dport, proto) DO UPDATE SET "
           "first_seen = CASE WHEN excluded.first_seen < flows.first_seen THEN excluded.first_seen "
           "ELSE flows.first_seen END, "
           "count = CASE WHEN excluded.count > flows.count THEN excluded.count ELSE flows.count END, "
           f"finding_id = {_newer('finding_id')}, severity = {_newer('severity')}, "
           f"summary = {_newer('summary')}, evidence = {_newer('evidence')}, "
           "last_seen = CASE WHEN excluded.last_seen > flows.last_seen THEN excluded.last_seen "
           "ELSE flows.last_seen END, received_at = excluded.received_at")


class FlowStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._writer = engine.execution_options(immediate=True)

    # -- writing --------------------------------------------------------------------

    def submit(self, doc: FlowsIn, token_hash: str, body_bytes: int, daily_bytes: int) -> FlowsOutcome:
        now = time.time()
        day = int(now // 86400)
        device_id = doc.device.id
        with self._writer.begin() as conn:
            budget = conn.execute(text(_AUTH), dict(now=now, day=day, bytes=body_bytes, device_id=device_id,
                                                    token_hash=token_hash)).first()
            if budget is None:
                return self._refused(conn, token_hash, device_id)
            if budget[0] > daily_bytes:
                return FlowsOutcome(429, "this device's storage budget for today is spent", "over_budget",
                                    retry_after=max(1, math.ceil((day + 1) * 86400 - now)))
            claimed = conn.execute(text(_CLAIM), dict(batch_id=doc.batch_id, device_id=device_id, now=now,
                                                      n=len(doc.flows))).first()
            if claimed is None:
                owner = conn.execute(select(flow_batches.c.device_id)
                                     .where(flow_batches.c.batch_id == doc.batch_id)).scalar()
                if owner != device_id:
                    return FlowsOutcome(409, "this batch_id is stored for another device", "rejected_foreign_batch")
                return FlowsOutcome(200, "", "flows_duplicate")
            rows = [_flow_row(device_id, flow, now) for flow in doc.flows]
            # A fixed order: two replicas storing the same device's batches lock rows alike.
            rows.sort(key=lambda r: (r["app_hash"], r["dst"], r["dport"], r["proto"]))
            if rows:
                conn.execute(text(_UPSERT), rows)
        return FlowsOutcome(201, "", "flows_stored")

    def _refused(self, conn: Connection, token_hash: str, device_id: str) -> FlowsOutcome:
        row = conn.execute(select(tokens.c.kind, tokens.c.device_id).where(
            tokens.c.token_hash == token_hash, tokens.c.revoked_at.is_(None))).first()
        if row is None:
            return FlowsOutcome(401, "unknown or revoked token", "rejected_token")
        if row.kind != "device":
            return FlowsOutcome(403, "only a device token can submit flows", "rejected_token")
        if row.device_id != device_id:
            return FlowsOutcome(403, "a device token can only submit its own device's flows",
                                "rejected_foreign_device")
        return FlowsOutcome(401, "unknown or revoked token", "rejected_token")

    # -- reading --------------------------------------------------------------------

    def list(self, device_id: str | None, app: str | None, since: float | None, cursor: int,
             limit: int) -> dict[str, Any]:
        """Flows in id order (stable while rows are updated), after `cursor`."""
        conds = [flows.c.id > cursor]
        if device_id is not None:
            conds.append(flows.c.device_id == device_id)
        if app is not None:
            conds.append(flows.c.app_hash == app_hash(app))
        if since is not None:
            conds.append(flows.c.last_seen >= since)
        query = (select(flows, devices.c.hostname)
                 .select_from(flows.outerjoin(devices, devices.c.device_id == flows.c.device_id))
                 .where(and_(*conds)).order_by(flows.c.id).limit(limit + 1))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {"flows": [_flow_view(r._mapping) for r in rows],
                "next_cursor": str(rows[-1].id) if more else None}

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """The most recently seen flows, newest first."""
        query = (select(flows, devices.c.hostname)
                 .select_from(flows.outerjoin(devices, devices.c.device_id == flows.c.device_id))
                 .order_by(flows.c.last_seen.desc(), flows.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [_flow_view(r._mapping) for r in conn.execute(query).all()]

    def summary(self, by: str, since: float | None, limit: int = 500) -> list[dict[str, Any]]:
        """Leaked flows per application (devices, flows, packets) or per device
        (applications, flows, packets), most recent first."""
        cond = flows.c.last_seen >= since if since is not None else flows.c.id.is_not(None)
        last = func.max(flows.c.last_seen)
        common = (func.count().label("flows"), func.sum(flows.c.count).label("packets"),
                  func.min(flows.c.first_seen).label("first_seen"), last.label("last_seen"))
        if by == "app":
            query = (select(flows.c.app, func.count(distinct(flows.c.device_id)).label("devices"), *common)
                     .where(cond).group_by(flows.c.app_hash, flows.c.app))
        else:
            query = (select(flows.c.device_id, func.max(devices.c.hostname).label("hostname"),
                            func.count(distinct(flows.c.app_hash)).label("apps"), *common)
                     .select_from(flows.outerjoin(devices, devices.c.device_id == flows.c.device_id))
                     .where(cond).group_by(flows.c.device_id))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(last.desc()).limit(limit)).all()
        return [dict(r._mapping, packets=int(r.packets or 0), flows=int(r.flows),
                     first_seen=_iso(r.first_seen), last_seen=_iso(r.last_seen)) for r in rows]


def _seen(text_value: str) -> float:
    return parse_time(text_value).timestamp()


def _flow_row(device_id: str, flow: Any, now: float) -> dict[str, Any]:
    evidence = flow.evidence.model_dump()
    first, last = _seen(flow.evidence.first_seen), _seen(flow.evidence.last_seen)
    if last > now + CLOCK_SKEW_S:
        # A wrong clock (or a forged date) cannot pin a flow in the future: stored as received.
        first, last = min(first, now), now
    app = app_of(evidence)
    return dict(device_id=device_id, app=app, app_hash=app_hash(app), dst=flow.evidence.dst,
                dport=-1 if flow.evidence.dport is None else flow.evidence.dport, proto=flow.evidence.proto,
                finding_id=flow.id, severity=flow.severity, summary=flow.summary,
                evidence=json.dumps(evidence, separators=(",", ":"), ensure_ascii=False),
                first_seen=first, last_seen=last, count=flow.evidence.count, now=now)


def _flow_view(row: Any) -> dict[str, Any]:
    return {"device_id": row["device_id"], "hostname": row["hostname"], "app": row["app"] or None,
            "finding_id": row["finding_id"], "severity": row["severity"], "summary": row["summary"],
            "dst": row["dst"], "dport": None if row["dport"] < 0 else row["dport"], "proto": row["proto"],
            "first_seen": _iso(row["first_seen"]), "last_seen": _iso(row["last_seen"]), "count": int(row["count"]),
            "evidence": json.loads(row["evidence"])}
