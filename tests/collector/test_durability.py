"""Issue 9, defect 6: a report acknowledged with 201 must be on disk. With
WAL, SQLite's synchronous=NORMAL fsyncs only at checkpoints, so a power
loss could take acknowledged commits; FULL fsyncs the WAL at every commit.
Checked on the very connections the collector reads and writes with."""

from __future__ import annotations

from tests.collector.conftest import auth, enroll, make_report

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_every_sqlite_connection_commits_durably(tmp_path):
    from fastapi.testclient import TestClient

    from leakcheck.collector.app import create_app
    from leakcheck.collector.settings import Settings
    from tests.collector.conftest import SECRET

    app = create_app(Settings(db=str(tmp_path / "d.sqlite3"), enroll_secret=SECRET))
    with TestClient(app) as client:
        token = enroll(client)
        assert client.post("/api/v1/reports", json=make_report(), headers=auth(token)).status_code == 201
        store = app.state.store
        writer = store.writer_connection()  # what the ingest writer threads use
        try:
            assert writer.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
            assert writer.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        finally:
            writer.close()
        with store.engine.connect() as reader:
            assert reader.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
    app.state.store.engine.dispose()
