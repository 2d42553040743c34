"""The collector: HTTP API + fleet web page over SQLite or PostgreSQL.

Build the app with `create_app(Settings(...))` (leakcheck.collector.app);
`leakcheck collector serve` runs it under uvicorn. Layout:

- settings.py   validated start-up settings (no module-level globals)
- contract.py   request models, built from leakcheck.report.Contract (the one
                definition of the report contract's limits, shared with the agent)
- schema.py     tables (the newest schema) and the migration runner
- migrations.py each migration step's DDL, frozen, per dialect
- store.py      every SQL statement about reports, devices, tokens (routes never hold SQL)
- flowstore.py  every SQL statement about flows (leakcheck.flows/1: the agents' live watch)
- ingest.py     group commit: writer threads store queued submissions in batches
- security.py   token generation and hashing
- deps.py       FastAPI dependencies: store, authentication
- routes/       one router per resource
- alerts/       state-change events to webhooks and SIEM feeds (issue 13): a
                dispatcher thread polls devices, diffs, and delivers from a
                durable outbox; it only reads ingest's tables

Report contract extension (additive, optional): a submitted report may carry
a top-level ``"agent"`` object, ``{"spool_depth": int, "dropped": int,
"last_upload": RFC 3339 | null, "last_error": str | null, "quarantined":
int (optional)}``, the agent's self-health. The collector accepts and stores it; every other field is
validated strictly against `leakcheck.report/1`.

Flows (leakcheck/flows.py): the agents' live watch sends its flows as their
own documents, `leakcheck.flows/1`, to POST /api/v1/flows (contract.FlowsIn,
routes/flows.py); the fleet page shows them at /flows (routes/flows_web.py).
"""
