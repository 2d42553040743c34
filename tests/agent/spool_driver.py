"""A process that spools and uploads reports in a loop, for kill -9 tests.

    python -m tests.agent.spool_driver CONFIG LOGDIR [--final]

Before spooling a report it appends its id to LOGDIR/intent, after spool.add
returns to LOGDIR/spooled (both fsync'd). --final: clean the spool and drain
it completely, then exit.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from leakcheck import config as config_mod
from leakcheck.agent.delivery import make_uploader, open_spool, spool_report
from tests.agent.reports import synthetic


def append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def main() -> int:
    config = config_mod.load(sys.argv[1])
    logdir = Path(sys.argv[2])
    spool = open_spool(config)
    spool.clean()  # what the agent does at start
    uploader = make_uploader(config)
    assert uploader is not None
    if "--final" in sys.argv:
        result = uploader.drain(spool, deadline=time.monotonic() + 60)
        return 0 if spool.depth() == 0 else 1
    while True:
        report = synthetic("schedule")
        append(logdir / "intent", report.report_id)
        spool_report(report, spool)
        append(logdir / "spooled", report.report_id)
        uploader.drain(spool, deadline=time.monotonic() + 0.5)


if __name__ == "__main__":
    sys.exit(main())
