"""Alerts and SIEM feeds (issue 13): state-change events pushed out of the collector.

Decoupled from ingest: nothing on the submission path knows about alerts.
A dispatcher thread in every collector process polls the devices table
incrementally (devices whose `last_seen` moved past a cursor, by index),
diffs each against its own last-notified state (table `alert_state`) and
writes events plus one outbox row per configured sink, in one transaction.
Deliveries read the outbox, send a batch per sink, and delete what was
acknowledged; what failed is retried with exponential backoff. So a
receiver that is down gets every event later (the outbox is durable), and
delivery is at-least-once: a crash between a receiver's 2xx and the
outbox delete resends that batch, so receivers dedupe on the event `id`.

Several replicas: only the holder of a database lease dispatches. Each
tick is one write transaction that starts by taking or renewing the lease
(`UPDATE alert_lease ... WHERE holder = me OR expires_at < now`): on
PostgreSQL the row lock serialises ticks across replicas, on SQLite
BEGIN IMMEDIATE does. Another replica takes over when the lease expires.

- config.py    the `[alerts]` settings: sinks, intervals, bounds; unknown keys refused
- events.py    event types and how a device's change becomes events
- ocsf.py      the OCSF mapping of findings (Detection / Compliance Finding)
- formats.py   wire formats: webhook JSON + HMAC signature, RFC 5424 syslog, CEF
- sinks.py     webhook, JSON-lines file, syslog (UDP/TCP) senders
- store.py     the dispatcher's SQL (lease, polling, outbox, delivery log)
- dispatcher.py the thread: detect, then deliver due batches
- routes.py    GET /api/v1/alerts/events and /api/v1/alerts/deliveries
- cli.py       `collector serve` options and `leakcheck collector alerts ...`
"""
