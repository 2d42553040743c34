"""The fleet web page in a real headless browser (Debian's chromium driven by
Playwright), not only fetched as HTML."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from tests.agent.conftest import SECRET, CollectorProcess
from tests.collector.conftest import days_ago, leak_finding, make_report

CHROMIUM = os.environ.get("LEAKCHECK_CHROMIUM", "/usr/bin/chromium")


def test_overview_and_device_page_in_browser(tmp_path: Path):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (packaging/dev-setup.sh --test)")
    from playwright.sync_api import sync_playwright

    server = CollectorProcess(tmp_path)
    server.start()
    try:
        token = requests.post(server.url + "/api/v1/enroll", timeout=10, json={
            "secret": SECRET, "instance": "instance-web-000000001",
            "device": {"id": "dev-web", "hostname": "leaky-laptop", "os": "linux", "os_version": "Debian 12"},
        }).json()["token"]
        for report in (make_report(device_id="dev-web", hostname="leaky-laptop", started=days_ago(2)),
                       make_report(device_id="dev-web", hostname="leaky-laptop", verdict="leak",
                                   findings=[leak_finding()], started=days_ago(1))):
            r = requests.post(server.url + "/api/v1/reports", json=report, timeout=10,
                              headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 201, r.text
        analyst = server.analyst_token()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(server.url + "/")
            assert page.url.endswith("/login")  # no token, no fleet data
            page.fill("#token", "lca_wrong")
            page.click("#signin")
            assert page.locator("#error").is_visible()
            page.fill("#token", analyst)
            page.click("#signin")
            page.wait_for_selector("#leaking")
            assert "1 leaking now" in page.inner_text("#totals")
            assert "leaky-laptop" in page.inner_text("#leaking")
            assert "dns.resolver-outside-tunnel" in page.inner_text("#by-class")
            assert page.locator("#trend tr").count() >= 2
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
            page.click("#leaking a")
            page.wait_for_selector("#history")
            assert page.inner_text("#hostname") == "leaky-laptop"
            assert page.inner_text("#verdict") == "leak"
            assert page.locator("#history tr").count() == 3  # header + two reports
            assert "dns.resolver-outside-tunnel" in page.inner_text("#findings")
            # Finding detail as `leakcheck run` prints it: the fix, the evidence, when seen.
            card = page.locator("#findings .finding").first
            assert card.locator(".fix").inner_text() == "Fix: Fix it."
            assert "192.0.2.53" in card.locator(".evidence").inner_text()
            assert "high" in card.locator("h3").inner_text()
            assert card.locator(".seen").inner_text().startswith("first seen " + days_ago(1)[:10])
            page.screenshot(path=str(tmp_path / "device.png"), full_page=True)
            _never_none(page)
            # The finding's own page lists the device; back on the overview, no None either.
            card.locator("h3 a").click()
            page.wait_for_selector("#finding-devices")
            assert "leaky-laptop" in page.inner_text("#finding-devices")
            _never_none(page)
            page.goto(server.url + "/")
            _never_none(page)
            browser.close()
    finally:
        server.stop()


def _never_none(page) -> None:  # type: ignore[no-untyped-def]
    """A missing value is shown empty, never as Python's `None` (issue 13)."""
    import re
    text = page.inner_text("body")
    assert not re.search(r"\bNone\b", text), (page.url, text[:2000])
