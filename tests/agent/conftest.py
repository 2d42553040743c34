"""Agent fixtures: a real collector process on loopback, and agent configs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

SECRET = "fleet-enrollment-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectorProcess:
    """`leakcheck collector serve` in a subprocess, on 127.0.0.1 only."""

    def __init__(self, tmp: Path, db: str | None = None, extra: tuple[str, ...] = ()):
        self.tmp = tmp
        self.db = db or str(tmp / "collector.sqlite3")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret_file = tmp / "secret"
        self.secret_file.write_text(SECRET)
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "leakcheck", "collector", "serve", "--db", self.db,
             "--listen", "127.0.0.1", "--port", str(self.port),
             "--enroll-secret-file", str(self.secret_file), *self.extra],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "collector.log", "ab"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("collector died: " + (self.tmp / "collector.log").read_text())
                time.sleep(0.05)
        raise RuntimeError("collector did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def analyst_token(self, role: str = "analyst") -> str:
        out = subprocess.run([sys.executable, "-m", "leakcheck", "collector", "token", "--db", self.db,
                              "create", "--label", "test", "--role", role], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def report_ids(self) -> list[str]:
        """Straight from the database: what is really stored (duplicates would show).
        A report repeating its device's state is stored as a heartbeat row
        (issue 13), so both tables count."""
        from sqlalchemy import select

        from leakcheck.collector.db import make_engine
        from leakcheck.collector.schema import heartbeats, reports
        from leakcheck.collector.settings import database_url
        engine = make_engine(database_url(self.db))
        try:
            with engine.connect() as conn:
                return [str(r[0]) for table in (reports, heartbeats)
                        for r in conn.execute(select(table.c.report_id))]
        finally:
            engine.dispose()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    # Rate limiting has its own test; here it would only slow the drains.
    proc = CollectorProcess(tmp_path, extra=("--rate-limit", "100000"))
    proc.start()
    yield proc
    proc.stop()


def write_config(tmp: Path, url: str, **agent: object) -> Path:
    state = tmp / "state"
    lines = ["[agent]", f'state_dir = "{state}"']
    for key, value in agent.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    lines += ["[collector]", f'url = "{url}"', f'token_file = "{tmp / "token"}"']
    path = tmp / "leakcheck.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def enroll_cli(config: Path, secret_file: Path, url: str) -> None:
    from leakcheck.cli import main
    assert main(["enroll", "--config", str(config), "--collector", url, "--secret-file", str(secret_file)]) == 0
