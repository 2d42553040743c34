"""Issue 9, defects 3 and 5 and quarantine: what counts as delivered, what
happens to a report the collector keeps failing on, and Retry-After.

The collector here is a scripted HTTP server on loopback (http.server in a
thread): it plays what a real collector never does on purpose (a captive
portal's 200, a 500 for one report, hostile Retry-After values)."""

from __future__ import annotations

import json
import threading
import time
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from leakcheck import config as config_mod
from leakcheck.agent.delivery import open_spool, spool_report
from leakcheck.agent.uploader import Backoff, Uploader, retry_after_seconds
from leakcheck.cli import main
from tests.agent.conftest import write_config
from tests.agent.reports import synthetic

Answer = tuple[int, dict[str, str], bytes]


class Scripted:
    """Answers POST /api/v1/reports with `script(report_id)`; records every request."""

    def __init__(self, script: Callable[[str], Answer]):
        self.script = script
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                report_id = json.loads(body)["report_id"]
                outer.requests.append(report_id)
                code, headers, answer = outer.script(report_id)
                self.send_response(code)
                for name, value in {"Content-Length": str(len(answer)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ack(report_id: str, code: int = 201) -> Answer:
    return code, {"Content-Type": "application/json"}, json.dumps({"report_id": report_id, "stored": True}).encode()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[str], Answer]], Scripted]]:
    servers: list[Scripted] = []

    def start(script: Callable[[str], Answer]) -> Scripted:
        servers.append(Scripted(script))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def _agent(tmp_path: Path, url: str) -> tuple[Path, Any]:
    cfg = write_config(tmp_path, url)
    (tmp_path / "token").write_text("lcd_scripted-token")
    return cfg, open_spool(config_mod.load(cfg))


def _no_wait(limit: int) -> Callable[[float], bool]:
    """A wait() for drain that records delays and stops after `limit` of them."""
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return len(waits) >= limit
    wait.waits = waits  # type: ignore[attr-defined]
    return wait


def test_a_200_that_does_not_name_the_report_deletes_nothing(tmp_path, scripted):
    portal = scripted(lambda rid: (200, {"Content-Type": "text/html"}, b"<html>Welcome to the hotel Wi-Fi</html>"))
    cfg, spool = _agent(tmp_path, portal.url)
    spool_report(synthetic(), spool)
    result = Uploader(portal.url, "lcd_x").drain(spool, deadline=time.monotonic() + 5, wait=_no_wait(3))
    assert result.delivered == 0 and spool.depth() == 1
    assert "does not acknowledge" in result.error

    other = scripted(lambda rid: ack("00000000-0000-4000-8000-000000000000"))
    result = Uploader(other.url, "lcd_x").drain(spool, deadline=time.monotonic() + 5, wait=_no_wait(3))
    assert result.delivered == 0 and spool.depth() == 1

    right = scripted(lambda rid: ack(rid, 200))
    assert Uploader(right.url, "lcd_x").drain(spool, deadline=time.monotonic() + 5).delivered == 1
    assert spool.depth() == 0


def test_a_report_the_collector_keeps_failing_on_is_quarantined_and_the_spool_moves_on(tmp_path, scripted, capsys):
    poisoned: list[str] = []
    server = scripted(lambda rid: (500, {}, b"Internal Server Error") if rid in poisoned else ack(rid))
    cfg, spool = _agent(tmp_path, server.url)
    first, second = synthetic(), synthetic()
    poisoned.append(first.report_id)
    spool_report(first, spool)
    spool_report(second, spool)
    uploader = Uploader(server.url, "lcd_x", max_attempts=4, backoff=Backoff(base_s=0.001, cap_s=0.01))
    result = uploader.drain(spool, deadline=time.monotonic() + 20, wait=lambda s: False)
    assert result.quarantined == 1 and result.delivered == 1 and spool.depth() == 0
    assert server.requests.count(first.report_id) == 4
    quarantined = list((spool.dir / "quarantine").iterdir())
    assert [p.name.endswith(first.report_id + ".json") for p in quarantined] == [True]  # kept, not deleted

    assert main(["status", "--config", str(cfg), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["quarantined"] == 1 and status["quarantined_reports"] == [first.report_id]
    assert main(["status", "--config", str(cfg)]) == 0
    assert "quarantined:  1 report(s)" in capsys.readouterr().out
    third = synthetic()
    spool_report(third, spool)
    assert spool.entries()[0].load()["agent"]["quarantined"] == 1


@pytest.mark.parametrize("header", ["0", "-5", "nan", "inf", "-inf", "garbage", "1e400"])
def test_hostile_retry_after_never_makes_a_tight_loop_or_a_crash(tmp_path, scripted, header):
    server = scripted(lambda rid: (429, {"Retry-After": header}, b"{}"))
    cfg, spool = _agent(tmp_path, server.url)
    spool_report(synthetic(), spool)
    wait = _no_wait(5)
    result = Uploader(server.url, "lcd_x").drain(spool, deadline=time.monotonic() + 1e6, wait=wait)
    assert result.error == "rate limited (429)" and spool.depth() == 1
    assert all(1.0 <= w <= 3600.0 for w in wait.waits), wait.waits  # type: ignore[attr-defined]


def test_retry_after_as_http_date_is_honoured(tmp_path, scripted):
    when = datetime.now(timezone.utc) + timedelta(seconds=90)
    server = scripted(lambda rid: (429, {"Retry-After": format_datetime(when, usegmt=True)}, b"{}"))
    cfg, spool = _agent(tmp_path, server.url)
    spool_report(synthetic(), spool)
    wait = _no_wait(1)
    Uploader(server.url, "lcd_x").drain(spool, deadline=time.monotonic() + 1e6, wait=wait)
    assert 80 <= wait.waits[0] <= 91, wait.waits  # type: ignore[attr-defined]
    far = format_datetime(datetime.now(timezone.utc) + timedelta(days=30), usegmt=True)
    assert retry_after_seconds(far) > 3600  # parsed; the uploader caps it
    assert retry_after_seconds("Wed, 99 Foo 2026 00:00:00 GMT") is None


def test_run_upload_survives_retry_after_nan(tmp_path, scripted, monkeypatch):
    server = scripted(lambda rid: (429, {"Retry-After": "nan"}, b"{}"))
    cfg, spool = _agent(tmp_path, server.url)
    from leakcheck import engine
    monkeypatch.setattr(engine, "run", lambda config, options=None, **kw: synthetic())
    from leakcheck.agent import delivery
    monkeypatch.setattr(delivery, "deliver_now", _short_budget(delivery.deliver_now))
    code = main(["run", "--upload", "--json", "--config", str(cfg)])
    assert code in (0, 1, 2) and spool.depth() == 1


def _short_budget(deliver: Callable[..., Any]) -> Callable[..., Any]:
    return lambda report, config, budget_s=20.0: deliver(report, config, budget_s=2.5)


def test_a_collector_that_is_down_quarantines_nothing(tmp_path, scripted):
    server = scripted(lambda rid: (503, {}, b"Service Unavailable"))
    cfg, spool = _agent(tmp_path, server.url)
    spool_report(synthetic(), spool)
    uploader = Uploader(server.url, "lcd_x", max_attempts=2, backoff=Backoff(base_s=0.001, cap_s=0.01))
    result = uploader.drain(spool, deadline=time.monotonic() + 20, wait=_no_wait(6))
    assert len(server.requests) >= 5 and result.quarantined == 0 and spool.depth() == 1
