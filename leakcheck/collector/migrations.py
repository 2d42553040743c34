"""The collector's schema history: each step's DDL, frozen, per dialect.

A step is plain SQL for SQLite and for PostgreSQL, written once and never
edited after release: a database created by any release upgrades through
exactly the statements that later releases ran, whatever today's table
definitions in schema.py say (those describe the newest schema, for
queries; tests/collector/test_migrations.py checks the two agree).

Steps 1 and 2 are, statement for statement, what the first release created
with `metadata.create_all`. Add a step by appending to STEPS.
"""

from __future__ import annotations

_V1 = """
CREATE TABLE tokens (
    id {serial} NOT NULL,
    token_hash VARCHAR(64) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    device_id VARCHAR(128),
    label VARCHAR(200) NOT NULL,
    created_at FLOAT NOT NULL,
    revoked_at FLOAT,
    PRIMARY KEY (id),
    UNIQUE (token_hash)
);
CREATE TABLE devices (
    device_id VARCHAR(128) NOT NULL,
    hostname VARCHAR(253) NOT NULL,
    os VARCHAR(64) NOT NULL,
    os_version TEXT NOT NULL,
    instance VARCHAR(128) NOT NULL,
    enrolled_at FLOAT NOT NULL,
    last_seen FLOAT,
    last_report_id VARCHAR(36),
    last_started_at FLOAT,
    last_verdict VARCHAR(8),
    last_trigger VARCHAR(16),
    tunnel_state VARCHAR(8),
    tunnel_kind VARCHAR(16),
    agent_version VARCHAR(64),
    spool_depth INTEGER,
    dropped INTEGER,
    last_upload VARCHAR(40),
    last_error TEXT,
    reconnect_s FLOAT,
    rl_window BIGINT NOT NULL,
    rl_count INTEGER NOT NULL,
    PRIMARY KEY (device_id)
);
CREATE TABLE reports (
    report_id VARCHAR(36) NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    received_at FLOAT NOT NULL,
    started_at FLOAT NOT NULL,
    finished_at FLOAT NOT NULL,
    "trigger" VARCHAR(16) NOT NULL,
    verdict VARCHAR(8) NOT NULL,
    tunnel_state VARCHAR(8) NOT NULL,
    tunnel_kind VARCHAR(16) NOT NULL,
    agent_version VARCHAR(64) NOT NULL,
    reconnect_s FLOAT,
    body TEXT NOT NULL,
    PRIMARY KEY (report_id)
);
CREATE INDEX ix_reports_device_started ON reports (device_id, started_at);
CREATE INDEX ix_reports_started ON reports (started_at);
CREATE TABLE findings (
    id {bigserial} NOT NULL,
    report_id VARCHAR(36) NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    probe VARCHAR(64) NOT NULL,
    finding_id VARCHAR(128) NOT NULL,
    severity VARCHAR(8) NOT NULL,
    summary TEXT NOT NULL,
    started_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_findings_fid_time ON findings (finding_id, started_at);
CREATE INDEX ix_findings_probe_time ON findings (probe, started_at);
CREATE INDEX ix_findings_report ON findings (report_id);
CREATE INDEX ix_findings_time ON findings (started_at);
CREATE TABLE current_findings (
    device_id VARCHAR(128) NOT NULL,
    finding_id VARCHAR(128) NOT NULL,
    probe VARCHAR(64) NOT NULL,
    CONSTRAINT uq_current_findings UNIQUE (device_id, finding_id)
);
CREATE INDEX ix_current_findings_fid ON current_findings (finding_id);
CREATE TABLE daily_verdicts (
    day VARCHAR(10) NOT NULL,
    verdict VARCHAR(8) NOT NULL,
    reports BIGINT NOT NULL,
    CONSTRAINT uq_daily_verdicts UNIQUE (day, verdict)
);
CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
"""

_V2 = """
CREATE TABLE clone_events (
    id {serial} NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    hostname VARCHAR(253) NOT NULL,
    instance VARCHAR(128) NOT NULL,
    seen_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
"""

# Issue 9: clock skew, per-device storage budget, quarantine count, why an
# enrollment was refused, web sessions, the health check's write target.
_V3 = """
ALTER TABLE devices ADD COLUMN clock_skew_s FLOAT;
ALTER TABLE devices ADD COLUMN quarantined INTEGER;
ALTER TABLE devices ADD COLUMN budget_day BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN budget_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE clone_events ADD COLUMN reason VARCHAR(32) NOT NULL DEFAULT 'clone';
CREATE INDEX ix_clone_events_device ON clone_events (device_id, seen_at);
CREATE TABLE sessions (
    session_hash VARCHAR(64) NOT NULL,
    token_id INTEGER NOT NULL,
    created_at FLOAT NOT NULL,
    expires_at FLOAT NOT NULL,
    PRIMARY KEY (session_hash)
);
CREATE TABLE health (
    id INTEGER NOT NULL,
    checked_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
INSERT INTO health (id, checked_at) VALUES (1, 0);
"""

# Issue 13, alerts: the dispatcher's lease and cursors (one row), its own
# last-notified state per device, the event log, the durable per-sink outbox
# and the delivery log; indexes for polling devices incrementally (by
# last_seen) and finding stale ones (by last_started_at).
_V4 = """
CREATE INDEX ix_devices_last_seen ON devices (last_seen);
CREATE INDEX ix_devices_last_started ON devices (last_started_at);
CREATE TABLE alert_lease (
    id INTEGER NOT NULL,
    holder VARCHAR(64) NOT NULL,
    expires_at FLOAT NOT NULL,
    seen_cursor FLOAT NOT NULL,
    clone_cursor BIGINT NOT NULL,
    stale_checked_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
INSERT INTO alert_lease (id, holder, expires_at, seen_cursor, clone_cursor, stale_checked_at)
    VALUES (1, '', 0, 0, 0, 0);
CREATE TABLE alert_state (
    device_id VARCHAR(128) NOT NULL,
    report_id VARCHAR(36),
    leaking TEXT NOT NULL,
    stale INTEGER NOT NULL,
    slow INTEGER NOT NULL,
    updated_at FLOAT NOT NULL,
    PRIMARY KEY (device_id)
);
CREATE TABLE alert_events (
    seq {bigserial} NOT NULL,
    event_id VARCHAR(36) NOT NULL,
    type VARCHAR(32) NOT NULL,
    at FLOAT NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (seq),
    UNIQUE (event_id)
);
CREATE INDEX ix_alert_events_at ON alert_events (at);
CREATE TABLE alert_outbox (
    id {bigserial} NOT NULL,
    sink VARCHAR(200) NOT NULL,
    seq BIGINT NOT NULL,
    attempts INTEGER NOT NULL,
    due_at FLOAT NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_alert_outbox_sink_due ON alert_outbox (sink, due_at);
CREATE TABLE alert_deliveries (
    id {bigserial} NOT NULL,
    sink VARCHAR(200) NOT NULL,
    attempted_at FLOAT NOT NULL,
    events INTEGER NOT NULL,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    status INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_alert_deliveries_at ON alert_deliveries (attempted_at);
"""

# Issue 11: flows the agents' live watch saw leave outside the tunnel, one
# row per (device, application, destination, port, protocol), and the
# flows documents already stored (idempotence on batch_id). The key holds
# a hash of the application: an executable path can be longer than a
# PostgreSQL index entry may be.
_V5 = """
CREATE TABLE flows (
    id {bigserial} NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    app TEXT NOT NULL,
    app_hash VARCHAR(64) NOT NULL,
    dst VARCHAR(64) NOT NULL,
    dport INTEGER NOT NULL,
    proto VARCHAR(16) NOT NULL,
    finding_id VARCHAR(128) NOT NULL,
    severity VARCHAR(8) NOT NULL,
    summary TEXT NOT NULL,
    evidence TEXT NOT NULL,
    first_seen FLOAT NOT NULL,
    last_seen FLOAT NOT NULL,
    count BIGINT NOT NULL,
    received_at FLOAT NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT uq_flows_key UNIQUE (device_id, app_hash, dst, dport, proto)
);
CREATE INDEX ix_flows_last_seen ON flows (last_seen);
CREATE INDEX ix_flows_app ON flows (app_hash, last_seen);
CREATE TABLE flow_batches (
    batch_id VARCHAR(36) NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    received_at FLOAT NOT NULL,
    flows INTEGER NOT NULL,
    PRIMARY KEY (batch_id)
);
CREATE INDEX ix_flow_batches_received ON flow_batches (received_at);
"""

# Issue 13: store changes, not repeats. A report that repeats its device's
# state is a heartbeat: a slim row (for idempotency on report_id) and
# counters on the device; the device remembers its state's hash and the full
# report that began it; current findings know when they were first and last
# seen. Both dialects share this part.
_V6_COMMON = """
ALTER TABLE devices ADD COLUMN state_hash VARCHAR(64);
ALTER TABLE devices ADD COLUMN state_report_id VARCHAR(36);
ALTER TABLE devices ADD COLUMN heartbeats BIGINT NOT NULL DEFAULT 0;
ALTER TABLE current_findings ADD COLUMN first_seen FLOAT;
ALTER TABLE current_findings ADD COLUMN last_seen FLOAT;
UPDATE current_findings SET first_seen = (SELECT last_started_at FROM devices
    WHERE devices.device_id = current_findings.device_id),
    last_seen = (SELECT last_started_at FROM devices WHERE devices.device_id = current_findings.device_id);
UPDATE devices SET state_report_id = last_report_id;
"""

_V6_SQLITE = _V6_COMMON + """
CREATE TABLE heartbeats (
    report_id VARCHAR(36) NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    started_at FLOAT NOT NULL,
    PRIMARY KEY (report_id)
);
CREATE INDEX ix_heartbeats_started ON heartbeats (started_at);
"""

# PostgreSQL: reports and heartbeats become tables partitioned by day of
# started_at (epoch seconds). A unique key on a partitioned table must
# contain the partition key, so report_id is indexed, not unique: the
# submitting transaction has locked the device's row before it looks the
# id up, which serialises a device's submissions (leakcheck.collector.store).
# Existing rows move to the DEFAULT partition; the collector creates the day
# partitions ahead (store.ensure_partitions) and retention drops whole ones.
# Heartbeats, most of the rows, carry one index (report_id): retention drops
# whole day partitions, so they need none on started_at (SQLite's do).
# Every report updates its device's row (and a heartbeat its current
# findings' last_seen): half-empty pages let those be HOT updates, whose old
# versions are pruned in place instead of piling up until a vacuum.
_V6_POSTGRESQL = _V6_COMMON + """
ALTER TABLE reports RENAME TO reports_v3;
DROP INDEX ix_reports_device_started;
DROP INDEX ix_reports_started;
CREATE TABLE reports (
    report_id VARCHAR(36) NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    received_at FLOAT NOT NULL,
    started_at FLOAT NOT NULL,
    finished_at FLOAT NOT NULL,
    "trigger" VARCHAR(16) NOT NULL,
    verdict VARCHAR(8) NOT NULL,
    tunnel_state VARCHAR(8) NOT NULL,
    tunnel_kind VARCHAR(16) NOT NULL,
    agent_version VARCHAR(64) NOT NULL,
    reconnect_s FLOAT,
    body TEXT NOT NULL
) PARTITION BY RANGE (started_at);
CREATE TABLE reports_default PARTITION OF reports DEFAULT;
INSERT INTO reports SELECT report_id, device_id, received_at, started_at, finished_at, "trigger", verdict,
    tunnel_state, tunnel_kind, agent_version, reconnect_s, body FROM reports_v3;
DROP TABLE reports_v3;
CREATE INDEX ix_reports_id ON reports (report_id);
CREATE INDEX ix_reports_device_started ON reports (device_id, started_at);
CREATE INDEX ix_reports_started ON reports (started_at);
CREATE TABLE heartbeats (
    report_id UUID NOT NULL,
    device_id VARCHAR(128) NOT NULL,
    started_at FLOAT NOT NULL
) PARTITION BY RANGE (started_at);
CREATE TABLE heartbeats_default PARTITION OF heartbeats DEFAULT;
CREATE INDEX ix_heartbeats_id ON heartbeats (report_id);
ALTER TABLE devices SET (fillfactor = 50);
ALTER TABLE current_findings SET (fillfactor = 50);
"""

# Step 7, issue 13 (read side): indexes for the paged device list and the summary's
# counts at 100,000 devices, and the audit log of admin actions.
_V7 = """
CREATE INDEX ix_devices_host ON devices (hostname, device_id);
CREATE INDEX ix_devices_verdict ON devices (last_verdict, hostname, device_id);
CREATE INDEX ix_devices_os ON devices (os);
CREATE INDEX ix_devices_reconnect ON devices (reconnect_s);
CREATE TABLE audit_log (
    id {serial} NOT NULL,
    at FLOAT NOT NULL,
    actor VARCHAR(200) NOT NULL,
    action VARCHAR(64) NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_audit_log_at ON audit_log (at);
"""

_TYPES = {"sqlite": {"serial": "INTEGER", "bigserial": "INTEGER"},
          "postgresql": {"serial": "SERIAL", "bigserial": "BIGSERIAL"}}

# Step number -> dialect -> DDL. In the other steps the only per-dialect
# difference is how an auto-incrementing key is spelled; step 6 differs more.
STEPS: dict[int, dict[str, str]] = {
    number: {dialect: ddl.format(**types) for dialect, types in _TYPES.items()}
    for number, ddl in ((1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5), (7, _V7))
}
STEPS[6] = {"sqlite": _V6_SQLITE, "postgresql": _V6_POSTGRESQL}
STEPS = dict(sorted(STEPS.items()))


def statements(number: int, dialect: str) -> list[str]:
    return [s.strip() for s in STEPS[number][dialect].split(";") if s.strip()]
