"""One agent check, in a child process that exits when it is done.

    python -m leakcheck.agent.worker --trigger schedule|network-change
                                     [--config FILE] [--up IF,IF] [--observe-only] [-v]

The long-lived agent (leakcheck.agent.service) only waits on netlink, keeps
the schedule and uploads; everything heavy (pyroute2, psutil, scapy, the
probes) is imported here and freed with the process. The worker reads the
network state once, records tunnel transitions against `--up` (the tunnel
interfaces up at the agent's last look; absent = unknown) in
tunnel-history.json *before* the probes run, so the reconnect probe sees
the outage that triggered it, then runs every probe, spools the report and
prints one JSON line on stdout:

    {"up": ["wg0"], "tunnel": "up", "report_id": "...", "verdict": "pass", "spool_depth": 1}

(`--observe-only`: the tunnel part only, no probes, no report.) The agent
uploads what is spooled. SIGTERM and SIGINT are ignored: a run in progress
finishes (the agent waits for it, and kills it only past its deadline).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Sequence

log = logging.getLogger("leakcheck.agent")
TRIGGERS = ("schedule", "network-change")


def parse_up(text: str | None) -> set[str] | None:
    if text is None:
        return None
    return {name for name in text.split(",") if name}


def format_up(up: set[str] | None) -> list[str]:
    """The `--up` arguments for a worker, from what the agent last saw."""
    return [] if up is None else ["--up", ",".join(sorted(up))]


def observe_tunnel(history, previous: set[str] | None, up: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Record transitions between the last look (`previous`) and now (`up`)."""
    known_down = history.open_outages()
    for name in sorted((previous or set()) - up):
        if name not in known_down:
            log.warning("tunnel %s went down", name)
            history.went_down(name)
    for name in sorted(up & known_down):
        log.info("tunnel %s is back up", name)
        history.came_up(name)


def main(argv: Sequence[str] | None = None) -> int:
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_IGN)
    parser = argparse.ArgumentParser(prog="leakcheck.agent.worker")
    parser.add_argument("--config")
    parser.add_argument("--trigger", choices=TRIGGERS, required=True)
    parser.add_argument("--up", help="tunnel interfaces up at the last look, comma-separated")
    parser.add_argument("--observe-only", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)

    from leakcheck import config as config_mod
    from leakcheck.agent import logfmt
    from leakcheck.errors import LeakcheckError

    logfmt.configure(args.verbose)
    if args.verbose < 3:
        for noisy in ("pyroute2", "scapy", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = config_mod.load(args.config)
    except LeakcheckError as exc:
        log.error("configuration: %s", exc)
        return int(exc.exit_code)

    from leakcheck import engine, tunnel
    from leakcheck.agent.delivery import open_spool, spool_report
    from leakcheck.agent.state import TunnelHistory

    spool = open_spool(config)
    try:
        state = engine.read_state()
    except LeakcheckError as exc:
        log.error("cannot read the network state: %s", exc)
        return int(exc.exit_code)
    found = tunnel.detect(state, config)
    up = set(found.interfaces) if found.up else set()
    observe_tunnel(TunnelHistory(spool.paths), parse_up(args.up), up)
    out: dict[str, object] = {"up": sorted(up), "tunnel": found.state}
    if not args.observe_only:
        report = engine.run(config, engine.RunOptions(trigger=args.trigger), state=state)
        spool_report(report, spool)
        out.update(report_id=report.report_id, verdict=report.verdict.value, spool_depth=spool.depth())
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
