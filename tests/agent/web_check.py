"""The fleet web page as an analyst sees it, in headless chromium (Playwright).

    python -m tests.agent.web_check URL TOKEN_FILE HOSTNAME OUT_DIR

Run inside the collector's network namespace (`ip netns exec`), where the
collector is reachable and nothing else is. Signs in with the analyst token,
expects HOSTNAME among the leaking devices, opens its page and prints the
device page's facts as one JSON line: {"verdict": ..., "triggers": [...],
"findings": "...", "fixes": [...], "evidence": [...]} (each finding's fix
and evidence as shown). Fails if any page it sees prints `None`.
Screenshots go to OUT_DIR.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

CHROMIUM = os.environ.get("LEAKCHECK_CHROMIUM", "/usr/bin/chromium")


def main() -> int:
    url, token_file, hostname, out_dir = sys.argv[1:5]
    from playwright.sync_api import sync_playwright

    token = Path(token_file).read_text().strip()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("#token", token)
            page.click("#signin")
            page.wait_for_selector("#leaking")
            page.screenshot(path=str(Path(out_dir) / "overview.png"), full_page=True)
            never_none(page)
            leaking = page.inner_text("#leaking")
            assert hostname in leaking, f"{hostname} not among the leaking devices: {leaking!r}"
            page.click(f"#leaking a:has-text('{hostname}')")
            page.wait_for_selector("#history")
            page.screenshot(path=str(Path(out_dir) / "device.png"), full_page=True)
            rows = page.locator("#history tr")
            triggers = [rows.nth(i).locator("td").nth(1).inner_text() for i in range(1, rows.count())]
            cards = page.locator("#findings .finding")
            fixes = [cards.nth(i).locator(".fix").inner_text() for i in range(cards.count())]
            evidence = [cards.nth(i).locator(".evidence").inner_text() for i in range(cards.count())]
            never_none(page)
            print(json.dumps({"hostname": page.inner_text("#hostname"), "verdict": page.inner_text("#verdict"),
                              "triggers": triggers, "findings": page.inner_text("#findings"),
                              "fixes": fixes, "evidence": evidence}))
        finally:
            browser.close()
    return 0


def never_none(page) -> None:  # type: ignore[no-untyped-def]
    """A missing value is shown empty, never as Python's `None`."""
    text = page.inner_text("body")
    assert not re.search(r"\bNone\b", text), f"{page.url} prints None: {text[:2000]!r}"


if __name__ == "__main__":
    sys.exit(main())
