"""Issue 13, finding detail and pagination: the API's keyset pages, filters,
the per-finding list, exports of every table, and the web page's finding
detail (fix, evidence, first/last seen), notes kept apart from leak
classes, no `None` anywhere. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re

from tests.collector.conftest import auth, days_ago, enroll, leak_finding, make_report

NOTE = {"id": "ipv6.skipped", "severity": "info", "summary": "No IPv6 on this host; IPv6 checks skipped.",
        "evidence": {"interfaces": []}, "recommendation": "Nothing to do.", "guidance": "Informational."}


def _fleet(client, app, n: int = 7) -> str:
    """n devices; the even ones leak DNS (two reports: first and last seen
    differ), every one carries an info note. Returns an analyst token. The
    second report follows a network change, so it is stored in full (a
    scheduled repeat of the same state would be a heartbeat, listed nowhere)."""
    for i in range(n):
        token = enroll(client, device_id=f"dev-{i}", hostname=f"host-{i:02d}", instance=f"instance-{i:016d}")
        leaking = i % 2 == 0
        for day in (3, 1):
            found = [leak_finding(resolver="192.0.2.53", interface="eth0")] if leaking else []
            report = make_report(device_id=f"dev-{i}", hostname=f"host-{i:02d}", verdict="leak" if leaking else "pass",
                                 started=days_ago(day), findings=found,
                                 trigger="schedule" if day == 3 else "network-change")
            report["probes"].append({"probe": "ipv6", "status": "pass", "duration_ms": 1, "findings": [NOTE],
                                     "error": None})
            assert client.post("/api/v1/reports", json=report, headers=auth(token)).status_code == 201
    return app.state.store.create_token("analyst", None, "views test")


def _walk(client, path: str, headers: dict, params: dict) -> tuple[list, int]:
    rows, pages, url = [], 0, path
    while url:
        response = client.get(url, params=params if url == path else None, headers=headers)
        assert response.status_code == 200, response.text
        rows += response.json()
        pages += 1
        link = response.headers.get("link")
        url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
        assert (link is None) == ("x-next-cursor" not in response.headers)
    return rows, pages


def test_device_pages_cover_the_fleet_once_in_order(client, app):
    reader = auth(_fleet(client, app))
    rows, pages = _walk(client, "/api/v1/devices", reader, {"limit": 2})
    assert [d["hostname"] for d in rows] == [f"host-{i:02d}" for i in range(7)]
    assert pages == 4
    leaking, _ = _walk(client, "/api/v1/devices", reader, {"limit": 1, "verdict": "leak"})
    assert [d["device_id"] for d in leaking] == ["dev-0", "dev-2", "dev-4", "dev-6"]
    by_finding, _ = _walk(client, "/api/v1/devices", reader, {"finding_id": "dns.resolver-outside-tunnel"})
    assert len(by_finding) == 4
    assert _walk(client, "/api/v1/devices", reader, {"os": "windows"})[0] == []
    assert len(_walk(client, "/api/v1/devices", reader, {"tunnel_kind": "wireguard", "limit": 3})[0]) == 7


def test_bad_cursors_are_400_not_500(client, app):
    reader = auth(_fleet(client, app, 2))
    finding_cursor = client.get("/api/v1/findings", params={"limit": 1}, headers=reader).headers["x-next-cursor"]
    for bad in ("notbase64!", "AAAA", "W10", finding_cursor):  # junk, junk, [], a findings cursor
        response = client.get("/api/v1/devices", params={"cursor": bad}, headers=reader)
        assert response.status_code in (400, 422), (bad, response.text)


def test_findings_pages_filters_and_per_finding_devices(client, app):
    reader = auth(_fleet(client, app))
    everything, pages = _walk(client, "/api/v1/findings", reader, {"limit": 3})
    assert len(everything) == 4 * 2 + 7 * 2 and pages == 8
    assert len({(r["report_id"], r["finding_id"]) for r in everything}) == len(everything)
    stamps = [r["started_at"] for r in everything]
    assert stamps == sorted(stamps, reverse=True)
    leaks, _ = _walk(client, "/api/v1/findings", reader, {"notes": "false", "limit": 5})
    assert {r["finding_id"] for r in leaks} == {"dns.resolver-outside-tunnel"} and len(leaks) == 8
    recent, _ = _walk(client, "/api/v1/findings", reader, {"since": days_ago(2), "probe": "dns"})
    assert len(recent) == 4
    assert _walk(client, "/api/v1/findings", reader, {"os": "macos"})[0] == []
    assert len(_walk(client, "/api/v1/findings", reader, {"os": "linux", "tunnel_kind": "wireguard"})[0]) == 22
    holders, _ = _walk(client, "/api/v1/findings/dns.resolver-outside-tunnel/devices", reader, {"limit": 3})
    assert [d["hostname"] for d in holders] == ["host-00", "host-02", "host-04", "host-06"]


def test_device_detail_has_fix_evidence_and_first_last_seen(client, app):
    reader = auth(_fleet(client, app, 1))
    detail = client.get("/api/v1/devices/dev-0", headers=reader).json()["finding_detail"]
    leak = next(f for f in detail if f["finding_id"] == "dns.resolver-outside-tunnel")
    assert leak["recommendation"] == "Fix it." and leak["evidence"] == {"resolver": "192.0.2.53", "interface": "eth0"}
    assert leak["first_seen"].startswith(days_ago(3)[:10]) and leak["last_seen"].startswith(days_ago(1)[:10])
    assert detail[-1]["finding_id"] == "ipv6.skipped"  # worst first, notes last


def test_every_table_downloads_as_csv_and_json(client, app):
    reader = auth(_fleet(client, app))
    for path, rows in (("/api/v1/export/devices", 7), ("/api/v1/export/findings", 22),
                       ("/api/v1/export/findings/dns.resolver-outside-tunnel/devices", 4),
                       ("/api/v1/export/summary/leak-classes", 1), ("/api/v1/export/summary/notes", 1),
                       ("/api/v1/export/summary/trend", 2), ("/api/v1/export/summary/reconnects", 0)):
        as_csv = client.get(path, params={"format": "csv"}, headers=reader)
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv"), path
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert len(table) == rows, path
        assert "None" not in as_csv.text, path
        as_json = client.get(path, params={"format": "json"}, headers=reader)
        assert [json.loads(line) for line in as_json.text.splitlines()].__len__() == rows, path
    assert client.get("/api/v1/export/devices", params={"verdict": "leak"}, headers=reader).text.count("\n") == 5


def _page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    return response.text


def _sign_in(client, token: str) -> None:
    response = client.post("/login", data={"token": token}, headers={"Origin": "http://testserver"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/", response.text


def test_web_pages_show_detail_split_notes_and_never_none(client, app):
    _sign_in(client, _fleet(client, app, 3))
    # A device with no report at all: every value is missing.
    enroll(client, device_id="dev-quiet", hostname="quiet-host", instance="instance-quiet-000000")
    overview = _page(client, "/")
    by_class = overview.split("id=by-class")[1].split("</table>")[0]
    notes = overview.split("id=notes")[1].split("</table>")[0]
    assert "dns.resolver-outside-tunnel" in by_class and "ipv6.skipped" not in by_class
    assert "ipv6.skipped" in notes
    device = _page(client, "/devices/dev-0")
    cards = device.split("id=findings>")[1].split("id=device-notes")[0]
    assert "Fix:</b> Fix it." in cards and "192.0.2.53" in cards and "eth0" in cards
    assert "first seen " + days_ago(3)[:10] in cards
    assert "ipv6.skipped" not in cards
    for path in ("/", "/devices/dev-0", "/devices/dev-1", "/devices/dev-quiet", "/devices?verdict=leak",
                 "/devices?os=linux&since=" + days_ago(2), "/findings/dns.resolver-outside-tunnel",
                 "/findings/nothing.here", "/findings", "/findings?notes=false&os=linux&since=" + days_ago(2)):
        assert not re.search(r"\bNone\b", _page(client, path)), path
    listed = _page(client, "/findings?notes=false&probe=dns").split("id=finding-list>")[1]
    assert listed.count("<tr>") == 1 + 2 * 2 and "ipv6.skipped" not in listed
    assert "ipv6.skipped" in _page(client, "/findings?probe=ipv6")
    assert client.get("/findings?since=yesterday").status_code == 400
    holders = _page(client, "/findings/dns.resolver-outside-tunnel")
    assert "host-00" in holders and "host-02" in holders and "host-01" not in holders


def test_web_overview_pages_devices(client, app):
    from leakcheck.collector.routes import web
    _sign_in(client, _fleet(client, app, web.PAGE_ROWS + 3))
    first = _page(client, "/")
    assert first.count("/devices/dev-") >= web.PAGE_ROWS
    cursor = re.search(r'id=next href="/\?cursor=([A-Za-z0-9_-]+)"', first).group(1)
    second = _page(client, f"/?cursor={cursor}")
    table = second.split("id=devices>")[1]
    assert table.count("<tr>") == 1 + 3 and "id=next" not in second
    assert client.get("/?cursor=bogus").status_code == 400


def test_cursor_parser_takes_any_text_without_crashing():
    """Property: a cursor is parsed or refused as BadCursor, never another
    exception; what encode_cursor makes decodes to the same key."""
    from hypothesis import given, settings, strategies as st

    from leakcheck.collector.views import BadCursor, decode_cursor, encode_cursor

    @settings(max_examples=400, deadline=None)
    @given(st.one_of(st.text(max_size=80), st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
                                                   max_size=80),
                     st.builds(lambda v: encode_cursor("d", v), st.lists(st.one_of(st.text(), st.integers(), st.none(),
                                                                                       st.booleans()), max_size=3))))
    def any_text(text: str) -> None:
        try:
            key = decode_cursor(text, "d", (str, str))
        except BadCursor:
            return
        assert len(key) == 2 and all(isinstance(k, str) for k in key)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=60), st.text(max_size=60))
    def round_trip(hostname: str, device_id: str) -> None:
        assert decode_cursor(encode_cursor("d", [hostname, device_id]), "d", (str, str)) == [hostname, device_id]

    any_text()
    round_trip()
