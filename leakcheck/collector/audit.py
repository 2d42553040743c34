"""Roles and the audit log of admin actions (issue 13).

Two reader roles, both read-only over fleet data: `analyst`, and `admin`,
who may also manage tokens, approve re-enrollments (and, with the alerts
work, webhooks). A role is the token's kind (tokens.kind), so scripts keep
using bearer tokens and web sessions inherit the role of the token (or OIDC
claim) that opened them. Every admin action is recorded here: who (token id
and label, `oidc:<subject>`, or `cli:<user>` for the command line), what,
when; admins read it through /api/v1/admin/audit and the CLI.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select, tuple_

from leakcheck.collector.schema import audit_log
from leakcheck.collector.store import Principal, Store, _iso
from leakcheck.collector.views import Page, decode_cursor, encode_cursor

ROLES = ("analyst", "admin")  # token kinds that may read fleet data
ADMIN = "admin"


def actor(principal: Principal) -> str:
    if principal.token_id is None:
        return principal.label or principal.kind
    return f"token {principal.token_id} ({principal.label or 'no label'})"


def record(store: Store, who: str, action: str, detail: dict[str, Any]) -> None:
    with store.engine.execution_options(immediate=True).begin() as conn:
        conn.execute(audit_log.insert().values(at=time.time(), actor=who[:200], action=action[:64],
                                               detail=json.dumps(detail, sort_keys=True)))


def page(store: Store, limit: int, cursor: str | None = None) -> Page:
    """Newest first, by (at, id) descending."""
    order = (audit_log.c.at, audit_log.c.id)
    query = select(audit_log)
    if cursor:
        at, row_id = decode_cursor(cursor, "a", (float, int))
        query = query.where(tuple_(*order) < tuple_(float(at), row_id))
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit + 1)).all()
    out = Page([dict(id=r.id, at=_iso(r.at), actor=r.actor, action=r.action, detail=json.loads(r.detail))
                for r in rows[:limit]])
    if len(rows) > limit:
        out.next_cursor = encode_cursor("a", [rows[limit - 1].at, rows[limit - 1].id])
    return out
