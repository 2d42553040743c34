"""The spool on its own: atomic entries, order, bounds, clean-up."""

from __future__ import annotations

import json
import os
import time
import uuid

from leakcheck.agent.spool import Spool
from leakcheck.agent.state import Paths, TunnelHistory


def report(n: int = 0, size: int = 0) -> dict:
    return {"report_id": str(uuid.uuid4()), "n": n, "pad": "x" * size}


def test_entries_oldest_first_and_removal(tmp_path):
    spool = Spool(Paths(tmp_path))
    docs = [report(i) for i in range(5)]
    for doc in docs:
        spool.add(doc)
    assert [e.report_id for e in spool.entries()] == [d["report_id"] for d in docs]
    assert [e.load()["n"] for e in spool.entries()] == list(range(5))
    spool.remove(spool.entries()[0])
    assert spool.depth() == 4
    assert oct(os.stat(spool.dir).st_mode & 0o777) == "0o700"


def test_size_bound_drops_oldest_and_counts(tmp_path):
    spool = Spool(Paths(tmp_path), max_bytes=3000)
    docs = [report(i, size=900) for i in range(6)]
    for doc in docs:
        spool.add(doc)
    kept = [e.load()["n"] for e in spool.entries()]
    assert kept == [3, 4, 5]
    assert spool.state.read()["dropped"] == 3


def test_age_bound(tmp_path):
    spool = Spool(Paths(tmp_path), max_age_s=0.2)
    spool.add(report(0))
    time.sleep(0.3)
    spool.add(report(1))
    assert [e.load()["n"] for e in spool.entries()] == [1]
    assert spool.state.read()["dropped"] == 1


def test_newest_is_never_dropped_even_if_alone_over_bound(tmp_path):
    spool = Spool(Paths(tmp_path), max_bytes=10)
    spool.add(report(0, size=100))
    assert spool.depth() == 1


def test_clean_removes_temporaries_and_quarantines_garbage(tmp_path):
    spool = Spool(Paths(tmp_path))
    spool.add(report(0))
    (spool.dir / ".tmp-deadbeef").write_bytes(b'{"half')
    bad = spool.dir / f"{time.time_ns():020d}-{uuid.uuid4()}.json"
    bad.write_bytes(b"{not json")
    assert spool.clean() == 2
    assert spool.depth() == 1 and json.loads(spool.entries()[0].path.read_text())["n"] == 0
    assert (spool.dir / "rejected" / bad.name).exists()


def test_tunnel_history_format(tmp_path):
    history = TunnelHistory(Paths(tmp_path))
    history.went_down("wg0", "2024-05-01T10:00:00.000Z")
    assert history.open_outages() == {"wg0"}
    history.came_up("wg0", "2024-05-01T10:00:04.250Z")
    assert history.read() == [{"interface": "wg0", "down_at": "2024-05-01T10:00:00.000Z",
                               "up_at": "2024-05-01T10:00:04.250Z", "outage_s": 4.25}]
    assert history.open_outages() == set()
