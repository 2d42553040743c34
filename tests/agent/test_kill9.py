"""kill -9 of a spooling, uploading process at random points, repeated:
no report lost, none doubled, the spool never corrupt."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from leakcheck import config as config_mod
from leakcheck.agent.delivery import open_spool
from tests.agent.conftest import enroll_cli, write_config

ROUNDS = 12
ROOT = Path(__file__).resolve().parents[2]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_kill9_during_spooling_and_upload(tmp_path, collector):
    cfg = write_config(tmp_path, collector.url)
    enroll_cli(cfg, collector.secret_file, collector.url)
    logdir = tmp_path / "log"
    logdir.mkdir()
    rng = random.Random(int(os.environ.get("LEAKCHECK_KILL_SEED", "4")))
    spool = open_spool(config_mod.load(cfg))
    command = [sys.executable, "-m", "tests.agent.spool_driver", str(cfg), str(logdir)]
    for round_ in range(ROUNDS):
        # Every few rounds the collector is away, so kills also hit backoff.
        if round_ % 4 == 3:
            collector.stop()
        elif collector.proc is None:
            collector.start()
        proc = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # Never corrupt: every entry is a complete, valid report.
        for entry in spool.entries():
            assert json.loads(entry.path.read_bytes())["report_id"] == entry.report_id
    if collector.proc is None:
        collector.start()
    final = subprocess.run(command + ["--final"], cwd=ROOT, timeout=120)
    assert final.returncode == 0 and spool.depth() == 0

    stored = collector.report_ids()
    intent, spooled = set(lines(logdir / "intent")), set(lines(logdir / "spooled"))
    assert len(spooled) >= ROUNDS  # the test did real work
    assert spooled <= set(stored), "a spooled report was lost"
    assert set(stored) <= intent
    assert len(stored) == len(set(stored))
    # Nothing counted twice either: the per-day counters add up to the rows.
    from leakcheck.collector.db import make_engine
    from leakcheck.collector.schema import daily_verdicts
    from leakcheck.collector.settings import database_url
    engine = make_engine(database_url(collector.db))
    with engine.connect() as conn:
        counted = conn.execute(select(func.sum(daily_verdicts.c.reports))).scalar()
    engine.dispose()
    assert counted == len(stored)
    assert not list((spool.dir / "rejected").glob("*")) if (spool.dir / "rejected").exists() else True
