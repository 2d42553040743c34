"""Fleet conformance (API, web page, CLI rendering) over real SQLite and PostgreSQL.

Three devices report posture probes with `checks`; the table counts each
device by its latest report (met / failed / not checked, skipped probes not
checking), and the trend by each device's last report of each day.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings as hsettings
from hypothesis import strategies as st

from leakcheck.collector.conformance import outcome, tally
from leakcheck.collector.deps import COOKIE
from leakcheck.commands.fleet import _conformance_rows, render_conformance
from leakcheck.report import RECOMMENDATIONS
from tests.collector.conftest import analyst, auth, days_ago, enroll, make_report


def probe(name: str, status: str, checks: list[str]) -> dict[str, Any]:
    return {"probe": name, "status": status, "duration_ms": 3, "findings": [], "error": None, "checks": checks}


def report(device: str, started: str, *probes: dict[str, Any]) -> dict[str, Any]:
    statuses = {p["status"] for p in probes}
    verdict = "leak" if "leak" in statuses else "warn" if "warn" in statuses else "pass"
    return make_report(device_id=device, hostname=device, verdict=verdict, started=started, probes=list(probes))


def submit(client: Any, token: str, doc: dict[str, Any]) -> None:
    response = client.post("/api/v1/reports", json=doc, headers=auth(token))
    assert response.status_code == 201, response.text


def row(data: dict[str, Any], key: str) -> dict[str, Any]:
    return next(r for r in data["recommendations"] if r["key"] == key)


def test_conformance_table_trend_page_and_cli(client, app):
    tokens = {d: enroll(client, d, d, instance=f"instance-{d}-aaaaaaaa") for d in ("a", "b", "c")}
    # a: forced failed two days ago, met yesterday (the latest report decides)
    submit(client, tokens["a"], report("a", days_ago(2), probe("posture-forced", "warn", ["forced"])))
    submit(client, tokens["a"], report("a", days_ago(1), probe("posture-forced", "pass", ["forced"]),
                                       probe("routes", "pass", ["full-tunnel"]),
                                       probe("split", "leak", ["full-tunnel", "exceptions"])))
    # b: forced skipped (not checked), autoconnect met
    submit(client, tokens["b"], report("b", days_ago(1), probe("posture-forced", "skip", ["forced"]),
                                       probe("posture-autoconnect", "pass", ["autoconnect"])))
    # c: forced leaked; its older report the same day does not count
    submit(client, tokens["c"], report("c", days_ago(1).replace("T10", "T08"),
                                       probe("posture-forced", "pass", ["forced"])))
    submit(client, tokens["c"], report("c", days_ago(1), probe("posture-forced", "leak", ["forced"]),
                                       probe("posture-autoconnect", "error", ["autoconnect"])))

    reader = auth(analyst(app))
    data = client.get("/api/v1/conformance", headers=reader).json()
    assert data["devices"] == 3
    assert [r["key"] for r in data["recommendations"]] == list(RECOMMENDATIONS)
    forced = row(data, "forced")
    assert (forced["devices"], forced["checked"], forced["meets"], forced["fails"]) == (3, 2, 1, 1)
    auto = row(data, "autoconnect")
    assert (auto["checked"], auto["meets"], auto["fails"]) == (1, 1, 0)  # c's error did not check it
    full = row(data, "full-tunnel")
    assert (full["checked"], full["meets"], full["fails"]) == (1, 0, 1)  # one leaking probe fails it
    assert row(data, "protocol")["checked"] == 0

    trend = {d["day"]: d["recommendations"] for d in data["trend"]}
    assert list(trend) == [days_ago(2)[:10], days_ago(1)[:10]]
    assert trend[days_ago(2)[:10]]["forced"] == {"devices": 1, "checked": 1, "meets": 0, "fails": 1}
    assert trend[days_ago(1)[:10]]["forced"] == {"devices": 3, "checked": 2, "meets": 1, "fails": 1}

    assert client.get("/api/v1/conformance").status_code == 401
    assert client.get("/api/v1/conformance", headers=auth(tokens["a"])).status_code == 403
    assert client.get("/api/v1/conformance?days=0", headers=reader).status_code == 422

    # the web page: same numbers, behind an analyst session
    assert client.get("/conformance", follow_redirects=False).status_code == 303
    client.cookies.set(COOKIE, app.state.store.create_session(analyst(app), 3600))
    page = client.get("/conformance")
    assert page.status_code == 200
    assert '<tr id="r-forced"><td' in page.text and "<td>2</td><td class=pass>1</td><td class=leak>1</td>" in page.text
    assert "href=/conformance" in client.get("/").text

    text = render_conformance(data)
    assert "NCSC conformance: 3 devices" in text
    forced_line = next(line for line in text.splitlines() if line.startswith("forced "))
    assert forced_line.split() == ["forced", "2", "1", "1", "1"]
    rows = _conformance_rows(data)
    assert {"day": "latest", "recommendation": "forced", "devices": 3, "checked": 2, "meets": 1,
            "fails": 1} in rows


STATUS = st.sampled_from(["pass", "warn", "leak", "skip", "error"])
PROBES = st.lists(st.fixed_dictionaries({"status": STATUS, "checks": st.lists(st.sampled_from(
    list(RECOMMENDATIONS)), max_size=3)}), max_size=6)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(PROBES, max_size=8))
def test_tally_invariants(bodies: list[list[dict[str, Any]]]) -> None:
    docs = [{"probes": probes} for probes in bodies]
    table = tally(docs)
    for key, counts in table.items():
        assert counts["devices"] == len(docs)
        assert counts["checked"] == counts["meets"] + counts["fails"] <= counts["devices"]
        failing = sum(1 for d in docs if any(p["status"] in ("warn", "leak") and key in p["checks"]
                                             for p in d["probes"]))
        assert counts["fails"] == failing
    for doc in docs:
        for key in RECOMMENDATIONS:
            ran = [p for p in doc["probes"] if key in p["checks"] and p["status"] in ("pass", "warn", "leak")]
            assert (outcome(doc, key) == "unchecked") == (not ran)
