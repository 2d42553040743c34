"""The agent side: background service, durable spool, uploader, enrollment.

Processes: `leakcheck agent` (service.py) waits on netlink and the schedule
and uploads; each check runs in a child (worker.py) that spools its report
and exits, so the engine's imports never stay resident in the service.

Files (under `[agent] state_dir`, default /var/lib/leakcheck):

- ``spool/NNNNNNNNNNNNNNNNNNNN-<report_id>.json``: one report per file, the
  name's leading number is the spool time in nanoseconds so a name sort is
  oldest first. Written to ``spool/.tmp-*``, fsync'd, renamed, and the
  directory fsync'd: a file either exists complete or not at all, whatever
  moment a kill -9 or a power loss strikes. Stray ``.tmp-*`` files are
  removed at start. Reports the collector refuses for good (4xx other than
  401/429) move to ``spool/rejected/``; reports it answered 500 for five
  times move to ``spool/quarantine/`` (counted in ``agent.quarantined``).
  ``spool/attempts.json`` counts those 500s per report_id. Every report is
  conformed to the contract (leakcheck.report.conform) before it is spooled.
- ``state.json``: ``{"last_upload": RFC 3339|null, "last_error": str|null,
  "last_error_at": RFC 3339|null, "dropped": int}``; ``dropped`` counts every
  report the size/age bound ever dropped (cumulative).
- ``tunnel-history.json``: the agent's record of tunnel transitions, read by
  the ``reconnect`` probe. A JSON list, oldest first, at most 1000 entries::

      [{"interface": "wg0", "down_at": "2024-05-01T10:00:00.000Z",
        "up_at": "2024-05-01T10:00:04.250Z", "outage_s": 4.25}, ...]

  ``up_at`` and ``outage_s`` are null while the outage is still going on.
- ``instance``: a random id made once per installation; enrollment sends it
  so the collector can tell a cloned machine from a re-enrolling one.
- ``flows/``: the live watch's flows documents (leakcheck.flows/1, see
  leakcheck/flows.py), one per file, named like report spool entries but
  by ``batch_id``; same atomicity, bounds, ``rejected/``, ``quarantine/``
  and ``attempts.json`` rules. ``flows-state.json``: its last upload and
  error (flows never count in the reports' ``dropped``).
- ``watch.json``: the live watch's state for ``leakcheck status``:
  ``{"enabled", "state": "off|starting|running|restarting|unavailable|stopped",
  "detail", "watching", "cannot", "since", "flows_seen", "flows_new",
  "flow_updates", "documents", "last_flow_at", "restarts"}``.
- ``lock``: flock'd by whoever changes the spool or the state files.

Every report the agent spools carries its self-health in the optional
top-level ``"agent"`` object (see leakcheck.collector's docstring).
"""
