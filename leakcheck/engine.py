"""One leak-check run: read the state once, detect the tunnel, run the probes,
return a Report. Never prints and never exits: the CLI renders.

Everything that touches the operating system comes from one platform
backend (leakcheck/platform), chosen once from sys.platform unless a caller
hands one in (tests hand in a recorded macOS or Windows machine)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from leakcheck import __version__, device
from leakcheck.config import Config
from leakcheck.netstate import NetState
from leakcheck.oracle import Oracle
from leakcheck import platform as platforms
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


def read_state(backend: "platforms.Backend | None" = None) -> NetState:
    return (backend or platforms.select()).read_state()


def run(config: Config, options: RunOptions = RunOptions(), state: NetState | None = None,
        backend: "platforms.Backend | None" = None) -> Report:
    backend = backend or platforms.select()  # an unsupported OS stops here: one line, exit 2
    chosen: list[type[Probe]] = select(discover(), list(options.probes))
    started = utcnow()
    state = state if state is not None else backend.read_state()
    tunnel = tunnel_detection.detect(state, config)
    oracle = Oracle(state, tunnel, lookup=backend.route_lookup(state))
    ctx = ProbeContext(config=config, state=state, tunnel=tunnel, oracle=oracle,
                       is_root=backend.privileged(),
                       disruptive=options.disruptive or bool(config.get("agent", "disruptive")),
                       trigger=options.trigger,
                       posture_reader=getattr(backend, "posture_facts", None),
                       active=(not options.passive and bool(config.get("canaries", "active"))
                               and backend.packets_unavailable() is None))
    try:
        results = run_all(chosen, ctx)
    finally:
        oracle.close()
    return Report(report_id=str(uuid.uuid4()), agent_version=__version__, device=device.describe(),
                  started_at=started, finished_at=utcnow(), trigger=options.trigger,
                  tunnel=tunnel.summary(), probes=results)
