"""One leak-check run: read the state once, detect the tunnel, run the probes,
return a Report. Never prints and never exits: the CLI renders."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from leakcheck import __version__, device
from leakcheck.config import Config
from leakcheck.netstate import NetState
from leakcheck.oracle import Oracle
from leakcheck.privileges import network_privileged
from leakcheck.probe import Probe, ProbeContext
from leakcheck.registry import discover, select
from leakcheck.report import Report, utcnow
from leakcheck.runner import run_all
from leakcheck import tunnel as tunnel_detection


@dataclass(frozen=True)
class RunOptions:
    probes: tuple[str, ...] = ()
    trigger: str = "manual"
    disruptive: bool = False
    passive: bool = False  # no test packets, inference only


def read_state() -> NetState:
    from leakcheck.linux import read_state as read_linux
    return read_linux()


def run(config: Config, options: RunOptions = RunOptions(), state: NetState | None = None) -> Report:
    chosen: list[type[Probe]] = select(discover(), list(options.probes))
    started = utcnow()
    state = state if state is not None else read_state()
    tunnel = tunnel_detection.detect(state, config)
    oracle = Oracle(state, tunnel)
    ctx = ProbeContext(config=config, state=state, tunnel=tunnel, oracle=oracle,
                       is_root=network_privileged(),
                       disruptive=options.disruptive or bool(config.get("agent", "disruptive")),
                       trigger=options.trigger,
                       active=not options.passive and bool(config.get("canaries", "active")))
    try:
        results = run_all(chosen, ctx)
    finally:
        oracle.close()
    return Report(report_id=str(uuid.uuid4()), agent_version=__version__, device=device.describe(),
                  started_at=started, finished_at=utcnow(), trigger=options.trigger,
                  tunnel=tunnel.summary(), probes=results)
