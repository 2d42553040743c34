"""Spool + upload wiring from the configuration, shared by `run --upload`,
`status` and the agent service."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from leakcheck.agent.spool import Spool
from leakcheck.agent.state import Paths
from leakcheck.agent.uploader import DrainResult, Uploader
from leakcheck.config import Config, parse_duration
from leakcheck.errors import UsageError
from leakcheck.report import Report, conform

log = logging.getLogger(__name__)


def paths(config: Config) -> Paths:
    return Paths(Path(config.get("agent", "state_dir")))


def open_spool(config: Config) -> Spool:
    return Spool(paths(config), max_bytes=int(config.get("agent", "spool_max_bytes")),
                 max_age_s=parse_duration(config.get("agent", "spool_max_age")))


def open_flow_spool(config: Config) -> Spool:
    """The live watch's flows documents: same bounds, own directory, keyed on batch_id."""
    p = paths(config)
    return Spool(p, max_bytes=int(config.get("agent", "spool_max_bytes")),
                 max_age_s=parse_duration(config.get("agent", "spool_max_age")), directory=p.flows, id_key="batch_id",
                 state_file=p.flows_state)


def read_token(config: Config) -> str | None:
    try:
        token = Path(config.get("collector", "token_file")).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def make_flow_uploader(config: Config) -> Uploader | None:
    """An uploader for flows documents (POST /api/v1/flows, acknowledged by batch_id)."""
    uploader = make_uploader(config)
    if uploader is None:
        return None
    return Uploader(config.get("collector", "url"), read_token(config) or "", config.get("collector", "ca_file"),
                    resource="flows", ack_key="batch_id")


def make_uploader(config: Config) -> Uploader | None:
    url = config.get("collector", "url")
    token = read_token(config)
    if not url:
        log.warning("no collector.url configured: reports stay in the spool")
        return None
    if not token:
        log.warning("no device token in %s: run `leakcheck enroll` first", config.get("collector", "token_file"))
        return None
    return Uploader(url, token, config.get("collector", "ca_file"))


def spool_report(report: Report, spool: Spool) -> None:
    """Add the agent's self-health and write the report to the spool."""
    state = spool.state.read()
    report.agent = {"spool_depth": spool.depth(), "dropped": state["dropped"],
                    "last_upload": state["last_upload"], "last_error": state["last_error"],
                    "quarantined": spool.quarantined()}
    # What is spooled is what the collector accepts (leakcheck.report.Contract):
    # an over-long text or odd evidence is cut with a marker here, never refused there.
    spool.add(conform(report.to_dict()))


def deliver_now(report: Report, config: Config, budget_s: float = 20.0) -> DrainResult:
    """`leakcheck run --upload`: spool, then try to drain within a time budget."""
    if not config.get("collector", "url"):
        raise UsageError("--upload needs collector.url in the configuration")
    spool = open_spool(config)
    spool.clean()
    spool_report(report, spool)
    uploader = make_uploader(config)
    if uploader is None:
        return DrainResult(remaining=spool.depth(), error="no device token (run leakcheck enroll)")
    try:
        return uploader.drain(spool, deadline=time.monotonic() + budget_s)
    finally:
        uploader.close()
