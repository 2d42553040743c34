"""Tables (SQLAlchemy Core, both databases) and the migration runner.

The Table objects describe the newest schema, for building queries. The
schema itself is made only by the frozen, numbered DDL steps in
migrations.py: `migrate(engine)` brings any database to the newest
version; replicas that start together take a lock first
(pg_advisory_xact_lock on PostgreSQL, BEGIN IMMEDIATE on SQLite) so each
step runs exactly once.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, text)
from sqlalchemy.engine import Connection, Engine

from leakcheck.collector.migrations import STEPS, statements

metadata = MetaData()

# Times are stored as UTC epoch seconds (float): cheap range scans and the
# same comparison semantics on both databases.
tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # device | analyst
    Column("device_id", String(128), nullable=True),
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

devices = Table(
    "devices", metadata,
    Column("device_id", String(128), primary_key=True),
    Column("hostname", String(253), nullable=False),
    Column("os", String(64), nullable=False),
    Column("os_version", Text, nullable=False),
    Column("instance", String(128), nullable=False),
    Column("enrolled_at", Float, nullable=False),
    Column("last_seen", Float, nullable=True),
    # Latest report (by started_at), kept here so fleet views never scan reports.
    Column("last_report_id", String(36), nullable=True),
    Column("last_started_at", Float, nullable=True),
    Column("last_verdict", String(8), nullable=True),
    Column("last_trigger", String(16), nullable=True),
    Column("tunnel_state", String(8), nullable=True),
    Column("tunnel_kind", String(16), nullable=True),
    Column("agent_version", String(64), nullable=True),
    Column("spool_depth", Integer, nullable=True),
    Column("dropped", Integer, nullable=True),
    Column("last_upload", String(40), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("reconnect_s", Float, nullable=True),
    # Rate limiting lives in the database so stateless replicas share it.
    Column("rl_window", BigInteger, nullable=False, default=0),
    Column("rl_count", Integer, nullable=False, default=0),
    # v3: how far in the future the device's latest report claimed to start
    # (its clock is wrong), the agent's quarantined count, and the evidence
    # bytes stored for it on day `budget_day` (days since the epoch, UTC).
    Column("clock_skew_s", Float, nullable=True),
    Column("quarantined", Integer, nullable=True),
    Column("budget_day", BigInteger, nullable=False, default=0),
    Column("budget_bytes", BigInteger, nullable=False, default=0),
    # v4: the alert dispatcher polls by last_seen and looks for stale devices.
    Index("ix_devices_last_seen", "last_seen"),
    Index("ix_devices_last_started", "last_started_at"),
    # v6: the hash of the latest state (verdict, tunnel, probe statuses,
    # findings with the evidence that matters), the full report that began
    # it, and how many reports since repeated it (heartbeats).
    Column("state_hash", String(64), nullable=True),
    Column("state_report_id", String(36), nullable=True),
    Column("heartbeats", BigInteger, nullable=False, default=0),
    # v7: the paged device list (by hostname; leaking ones first on the
    # overview), the summary's per-verdict and per-OS counts, slowest reconnects.
    Index("ix_devices_host", "hostname", "device_id"),
    Index("ix_devices_verdict", "last_verdict", "hostname", "device_id"),
    Index("ix_devices_os", "os"),
    Index("ix_devices_reconnect", "reconnect_s"),  # rarely changes: only the reconnect probe sets it
)

reports = Table(
    "reports", metadata,
    Column("report_id", String(36), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("verdict", String(8), nullable=False),
    Column("tunnel_state", String(8), nullable=False),
    Column("tunnel_kind", String(16), nullable=False),
    Column("agent_version", String(64), nullable=False),
    Column("reconnect_s", Float, nullable=True),
    Column("body", Text, nullable=False),  # the submitted document, verbatim JSON
    Index("ix_reports_device_started", "device_id", "started_at"),
    Index("ix_reports_started", "started_at"),
)

# v6: a report that repeated its device's state, kept only so that it is
# acknowledged once (idempotent on report_id) and counted. On PostgreSQL
# report_id is a UUID (16 bytes: these are most rows) and the table, like
# reports, is partitioned by day of started_at (migrations.py).
heartbeats = Table(
    "heartbeats", metadata,
    Column("report_id", String(36), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    # Indexes differ per database (migrations.py, step 6).
)

findings = Table(
    "findings", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("report_id", String(36), nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("probe", String(64), nullable=False),
    Column("finding_id", String(128), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("summary", Text, nullable=False),
    Column("started_at", Float, nullable=False),
    Index("ix_findings_fid_time", "finding_id", "started_at"),
    Index("ix_findings_probe_time", "probe", "started_at"),
    Index("ix_findings_time", "started_at"),
    Index("ix_findings_report", "report_id"),
)

# Findings of each device's latest report: "devices per finding id" without a scan.
current_findings = Table(
    "current_findings", metadata,
    Column("device_id", String(128), nullable=False),
    Column("finding_id", String(128), nullable=False),
    Column("probe", String(64), nullable=False),
    # v6: when this stretch of the finding began, and the latest report
    # (full or heartbeat) that still had it.
    Column("first_seen", Float, nullable=True),
    Column("last_seen", Float, nullable=True),
    UniqueConstraint("device_id", "finding_id", name="uq_current_findings"),
    Index("ix_current_findings_fid", "finding_id"),
)

# Reports per (UTC day, verdict), counted in the submitting transaction.
daily_verdicts = Table(
    "daily_verdicts", metadata,
    Column("day", String(10), nullable=False),
    Column("verdict", String(8), nullable=False),
    Column("reports", BigInteger, nullable=False, default=0),
    UniqueConstraint("day", "verdict", name="uq_daily_verdicts"),
)

# Enrollments refused for an existing device id: another installation
# holds it ("clone"), or a re-enrollment came without the device's current
# token or an admin's approval ("unapproved").
clone_events = Table(
    "clone_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device_id", String(128), nullable=False),
    Column("hostname", String(253), nullable=False),
    Column("instance", String(128), nullable=False),
    Column("seen_at", Float, nullable=False),
    Column("reason", String(32), nullable=False, default="clone"),
    Index("ix_clone_events_device", "device_id", "seen_at"),
)

# Web sessions: the cookie holds a random session id, stored only hashed,
# tied to the analyst token that signed in (revoking it ends the session).
sessions = Table(
    "sessions", metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("token_id", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# One row the health check writes: a database that cannot be written is not ready.
health = Table(
    "health", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("checked_at", Float, nullable=False),
)

# v4, alerts (leakcheck.collector.alerts): one row holding the dispatcher's
# lease (which replica dispatches, until when) and its cursors.
alert_lease = Table(
    "alert_lease", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("seen_cursor", Float, nullable=False),  # devices.last_seen already examined
    Column("clone_cursor", BigInteger, nullable=False),  # clone_events.id already examined
    Column("stale_checked_at", Float, nullable=False),
)

# What the dispatcher last notified per device: diffed against the device's
# current state to produce events (kept apart from ingest's tables).
alert_state = Table(
    "alert_state", metadata,
    Column("device_id", String(128), primary_key=True),
    Column("report_id", String(36), nullable=True),  # the latest report examined
    Column("leaking", Text, nullable=False),  # JSON list of leak finding ids notified
    Column("stale", Integer, nullable=False),
    Column("slow", Integer, nullable=False),  # reconnect slower than the bound, notified
    Column("updated_at", Float, nullable=False),
)

# Every event, in order (seq); `body` is the event as sinks receive it.
alert_events = Table(
    "alert_events", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("at", Float, nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_alert_events_at", "at"),
)

# One row per (sink, event) not yet delivered: a sink that is down keeps its rows.
alert_outbox = Table(
    "alert_outbox", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("sink", String(200), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("due_at", Float, nullable=False),
    Index("ix_alert_outbox_sink_due", "sink", "due_at"),
)

# One row per delivery attempt (a batch of events to one sink).
alert_deliveries = Table(
    "alert_deliveries", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("sink", String(200), nullable=False),
    Column("attempted_at", Float, nullable=False),
    Column("events", Integer, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ok", Integer, nullable=False),
    Column("status", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_alert_deliveries_at", "attempted_at"),
)

# v5: flows the agents' live watch saw leave outside the tunnel (leakcheck.flows/1),
# one row per dedup key of a device; `dport` is -1 when the flow has none (ICMP).
flows = Table(
    "flows", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("device_id", String(128), nullable=False),
    Column("app", Text, nullable=False),  # exe, else command, else ""
    Column("app_hash", String(64), nullable=False),  # sha256 of app: keys stay index-sized
    Column("dst", String(64), nullable=False),
    Column("dport", Integer, nullable=False),
    Column("proto", String(16), nullable=False),
    Column("finding_id", String(128), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("summary", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # the latest evidence, JSON
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("device_id", "app_hash", "dst", "dport", "proto", name="uq_flows_key"),
    Index("ix_flows_last_seen", "last_seen"),
    Index("ix_flows_app", "app_hash", "last_seen"),
)

# Flows documents stored: a resubmitted batch_id stores nothing.
flow_batches = Table(
    "flow_batches", metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("device_id", String(128), nullable=False),
    Column("received_at", Float, nullable=False),
    Column("flows", Integer, nullable=False),
    Index("ix_flow_batches_received", "received_at"),
)

# v7: admin actions (token made or revoked, re-enrollment approved, ...):
# who (token id and label, or `cli:<user>`), what, when. Read by admins.
audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_audit_log_at", "at"),
)

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)


MIGRATIONS = sorted(STEPS)


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, "schema_version"):
        return 0
    return int(conn.execute(text("SELECT COALESCE(MAX(version), 0) FROM schema_version")).scalar())


def migrate(engine: Engine) -> int:
    """Apply missing migrations; returns the version now in force."""
    # On SQLite `immediate` makes the transaction BEGIN IMMEDIATE (see db.py).
    with engine.execution_options(immediate=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            # Any constant works; it only serialises leakcheck migrations.
            conn.execute(text("SELECT pg_advisory_xact_lock(7345001)"))
        version = current_version(conn)
        for number in MIGRATIONS:
            if number > version:
                for statement in statements(number, conn.dialect.name):
                    conn.exec_driver_sql(statement)
                conn.execute(schema_version.insert().values(version=number))
    return len(MIGRATIONS)
