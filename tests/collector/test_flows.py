"""POST /api/v1/flows and the flows views, over a real SQLite file and a real
PostgreSQL: idempotence on batch_id, upsert on the dedup key, cursor
pagination, per-app and per-device views, who may submit, and hostile
documents (4xx, never 5xx, nothing stored)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.collector.conftest import analyst, auth, enroll
from tests.collector.flowdocs import at, flow, flows_doc


def post(client: Any, token: str, doc: Any) -> Any:
    body = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
    return client.post("/api/v1/flows", content=body, headers={**auth(token), "Content-Type": "application/json"})


def stored_flows(app: Any) -> int:
    from sqlalchemy import func, select

    from leakcheck.collector.schema import flow_batches, flows
    with app.state.store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(flows)).scalar()
                + conn.execute(select(func.count()).select_from(flow_batches)).scalar())


def test_submit_is_idempotent_on_batch_id_and_listed(client: Any, app: Any) -> None:
    token = enroll(client)
    doc = flows_doc([flow(), flow(dst="203.0.113.9", dport=53, proto="udp", fid="watch.dns-outside-tunnel",
                                  dns_name="intranet.example.com", exe="/usr/lib/firefox/firefox",
                                  command="firefox")])
    first = post(client, token, doc)
    assert first.status_code == 201, first.text
    assert first.json() == {"batch_id": doc["batch_id"], "stored": True}
    again = post(client, token, doc)
    assert again.status_code == 200 and again.json() == {"batch_id": doc["batch_id"], "stored": False}
    listed = client.get("/api/v1/flows", headers=auth(analyst(app))).json()
    assert listed["next_cursor"] is None
    assert sorted((f["app"], f["dst"], f["dport"], f["proto"], f["count"]) for f in listed["flows"]) == [
        ("/usr/bin/curl", "198.51.100.7", 443, "tcp", 1),
        ("/usr/lib/firefox/firefox", "203.0.113.9", 53, "udp", 1)]
    dns = next(f for f in listed["flows"] if f["proto"] == "udp")
    assert dns["finding_id"] == "watch.dns-outside-tunnel"
    assert dns["evidence"]["dns_name"] == "intranet.example.com"
    assert dns["hostname"] == "laptop-1" and dns["device_id"] == "dev-1"


def test_updates_keep_earliest_first_latest_last_and_highest_count(client: Any, app: Any) -> None:
    token = enroll(client)
    t0, t1, t2 = at(60), at(30), at(1)
    assert post(client, token, flows_doc([flow(count=3, first=t0, last=t1)])).status_code == 201
    assert post(client, token, flows_doc([flow(count=9, first=t0, last=t2)])).status_code == 201
    # An older update delivered late (a spool drained out of order) changes nothing.
    assert post(client, token, flows_doc([flow(count=2, first=t0, last=t1, command="old")])).status_code == 201
    rows = client.get("/api/v1/flows", headers=auth(analyst(app))).json()["flows"]
    assert len(rows) == 1
    assert (rows[0]["count"], rows[0]["first_seen"], rows[0]["last_seen"]) == (9, t0, t2)
    assert rows[0]["evidence"]["command"] == "curl"


def test_cursor_pagination_and_filters(client: Any, app: Any) -> None:
    one, two = enroll(client), enroll(client, "dev-2", "laptop-2", instance="instance-bbbbbbbbbbbb")
    assert post(client, one, flows_doc([flow(dst=f"198.51.100.{n}") for n in range(1, 6)])).status_code == 201
    assert post(client, two, flows_doc([flow(dst="198.51.100.1", exe=None, command="ssh")], "dev-2",
                                       "laptop-2")).status_code == 201
    reader = auth(analyst(app))
    seen, cursor = [], "0"
    while cursor is not None:
        page = client.get("/api/v1/flows", params={"limit": 2, "cursor": cursor}, headers=reader).json()
        assert len(page["flows"]) <= 2
        seen += [(f["device_id"], f["dst"]) for f in page["flows"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 6
    ssh = client.get("/api/v1/flows", params={"app": "ssh"}, headers=reader).json()["flows"]
    assert [(f["device_id"], f["app"]) for f in ssh] == [("dev-2", "ssh")]
    mine = client.get("/api/v1/flows", params={"device": "dev-1"}, headers=reader).json()["flows"]
    assert len(mine) == 5 and {f["device_id"] for f in mine} == {"dev-1"}
    later = client.get("/api/v1/flows", params={"since": at(-60)}, headers=reader).json()["flows"]
    assert later == []


def test_views_per_application_and_per_device(client: Any, app: Any) -> None:
    one, two = enroll(client), enroll(client, "dev-2", "laptop-2", instance="instance-bbbbbbbbbbbb")
    post(client, one, flows_doc([flow(count=2), flow(dst="198.51.100.8", count=1)]))
    post(client, two, flows_doc([flow(count=5), flow(exe=None, command="ssh", dport=22)], "dev-2", "laptop-2"))
    reader = auth(analyst(app))
    by_app = {r["app"]: r for r in client.get("/api/v1/flows/summary", params={"by": "app"}, headers=reader).json()}
    assert (by_app["/usr/bin/curl"]["devices"], by_app["/usr/bin/curl"]["flows"],
            by_app["/usr/bin/curl"]["packets"]) == (2, 3, 8)
    assert (by_app["ssh"]["devices"], by_app["ssh"]["flows"]) == (1, 1)
    by_device = {r["device_id"]: r for r in
                 client.get("/api/v1/flows/summary", params={"by": "device"}, headers=reader).json()}
    dev1 = by_device["dev-1"]
    assert (dev1["apps"], dev1["flows"], dev1["hostname"]) == (1, 2, "laptop-1")
    assert (by_device["dev-2"]["apps"], by_device["dev-2"]["packets"]) == (2, 6)


def test_who_may_submit(client: Any, app: Any) -> None:
    token = enroll(client)
    other = enroll(client, "dev-2", "laptop-2", instance="instance-bbbbbbbbbbbb")
    doc = flows_doc([flow()])
    assert post(client, "lcd_not-a-token", doc).status_code == 401
    assert client.post("/api/v1/flows", json=doc).status_code == 401
    assert post(client, analyst(app), doc).status_code == 403
    assert post(client, other, doc).status_code == 403  # dev-2's token, dev-1's flows
    assert stored_flows(app) == 0
    assert post(client, token, doc).status_code == 201
    stolen = flows_doc([flow(dst="203.0.113.1")], "dev-2", "laptop-2", batch_id=doc["batch_id"])
    assert post(client, other, stolen).status_code == 409
    # Device tokens cannot read the fleet's flows.
    assert client.get("/api/v1/flows", headers=auth(token)).status_code == 403
    assert client.get("/api/v1/flows").status_code == 401


def test_long_application_paths_are_keyed_by_hash(client: Any, app: Any) -> None:
    """A 4,000-character executable path is within the contract: stored and
    found again (the unique key holds its hash; PostgreSQL's index could not
    hold the text)."""
    token = enroll(client)
    exe = "/opt/" + "x" * 4000
    assert post(client, token, flows_doc([flow(exe=exe)])).status_code == 201
    assert post(client, token, flows_doc([flow(exe=exe, count=4, last=at(0))])).status_code == 201
    rows = client.get("/api/v1/flows", params={"app": exe}, headers=auth(analyst(app))).json()["flows"]
    assert [(r["app"], r["count"]) for r in rows] == [(exe, 4)]


def _bad(mutate) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    doc = flows_doc([flow()])
    mutate(doc)
    return doc


HOSTILE = {
    "wrong schema": _bad(lambda d: d.update(schema="leakcheck.flows/2")),
    "report schema": _bad(lambda d: d.update(schema="leakcheck.report/1")),
    "unknown top-level key": _bad(lambda d: d.update(extra=1)),
    "not a uuid": _bad(lambda d: d.update(batch_id="1; DROP TABLE flows")),
    "too many flows": _bad(lambda d: d.update(flows=[flow(dst=f"198.51.{n // 250}.{n % 250}") for n in range(201)])),
    "not a finding id of the watch": _bad(lambda d: d["flows"][0].update(id="dns.resolver-outside-tunnel")),
    "NUL in the command": _bad(lambda d: d["flows"][0]["evidence"].update(command="cu\x00rl")),
    "lone surrogate": _bad(lambda d: d["flows"][0]["evidence"].update(exe="/usr/bin/\udcff")),
    "not an address": _bad(lambda d: d["flows"][0]["evidence"].update(dst="example.com")),
    "port out of range": _bad(lambda d: d["flows"][0]["evidence"].update(dport=70000)),
    "negative count": _bad(lambda d: d["flows"][0]["evidence"].update(count=-1)),
    "zero count": _bad(lambda d: d["flows"][0]["evidence"].update(count=0)),
    "count past 32 bits": _bad(lambda d: d["flows"][0]["evidence"].update(count=2**40)),
    "string port": _bad(lambda d: d["flows"][0]["evidence"].update(dport="443")),
    "bool uid": _bad(lambda d: d["flows"][0]["evidence"].update(uid=True)),
    "no evidence key": _bad(lambda d: d["flows"][0]["evidence"].pop("dst")),
    "year 1": _bad(lambda d: d["flows"][0]["evidence"].update(first_seen="0001-01-01T00:00:00Z")),
    "month 13": _bad(lambda d: d["flows"][0]["evidence"].update(last_seen="2026-13-01T00:00:00Z")),
    "last before first": _bad(lambda d: d["flows"][0]["evidence"].update(first_seen=at(0), last_seen=at(100))),
    "evidence too large": _bad(lambda d: d["flows"][0]["evidence"].update(note="x" * 9000)),
    "evidence too deep": _bad(lambda d: d["flows"][0]["evidence"].update(
        note=json.loads("[" * 40 + "]" * 40))),
    "huge integer in evidence": _bad(lambda d: d["flows"][0]["evidence"].update(note=2**70)),
    "summary too long": _bad(lambda d: d["flows"][0].update(summary="s" * 1001)),
    "device id pattern": _bad(lambda d: d["device"].update(id="../../etc")),
    "flows not a list": _bad(lambda d: d.update(flows={"a": 1})),
    "flow not an object": _bad(lambda d: d.update(flows=[1])),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_documents_get_4xx_and_store_nothing(name: str, client: Any, app: Any) -> None:
    token = enroll(client)
    response = post(client, token, HOSTILE[name])
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
    assert stored_flows(app) == 0


def test_not_json_and_oversize(client: Any, app: Any) -> None:
    token = enroll(client)
    assert post(client, token, b"{not json").status_code == 422
    assert post(client, token, b"\xff\xfe").status_code in (400, 422)
    assert post(client, token, "[]").status_code == 422
    big = flows_doc([flow(dst=f"198.51.100.{n % 250}", dport=n, summary_pad="x" * 3000) for n in range(100)])
    assert post(client, token, big).status_code in (413, 422)
    assert stored_flows(app) == 0


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                         max_size=4),
                           max_leaves=12)
paths = st.sampled_from([("schema",), ("batch_id",), ("agent_version",), ("device",), ("device", "id"),
                         ("device", "hostname"), ("sent_at",), ("flows",), ("flows", 0), ("flows", 0, "id"),
                         ("flows", 0, "severity"), ("flows", 0, "summary"), ("flows", 0, "evidence"),
                         *[("flows", 0, "evidence", k) for k in ("proto", "src", "sport", "dst", "dport",
                                                                 "interface", "uid", "pid", "command", "exe",
                                                                 "dns_name", "first_seen", "last_seen", "count",
                                                                 "extra")]])


def _holds(container: Any, key: Any) -> bool:
    if isinstance(container, dict):
        return key in container
    return isinstance(container, list) and isinstance(key, int) and key < len(container)


def set_at(doc: Any, path: tuple, value: Any) -> None:
    """Replace the value at `path` if the document still has that place."""
    target = doc
    for key in path[:-1]:
        if not _holds(target, key):
            return
        target = target[key]
    if isinstance(target, dict) or _holds(target, path[-1]):
        target[path[-1]] = value


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(st.tuples(paths, json_values), min_size=1, max_size=3))
def test_mutated_documents_never_cause_a_server_error(changes: list[Any], client: Any, app: Any) -> None:
    token = getattr(app.state, "fuzz_device_token", None)
    if token is None:  # one enrollment per app; hypothesis runs many examples on it
        token = app.state.fuzz_device_token = enroll(client, "dev-fuzz", "fuzz", instance="instance-fuzzfuzzfuzz")
    doc = flows_doc([flow()], "dev-fuzz", "fuzz")
    for path, value in changes:
        set_at(doc, path, value)
    response = post(client, token, json.dumps(doc, allow_nan=True))
    assert response.status_code < 500, response.text[:300]
    if response.status_code in (200, 201):
        listed = client.get("/api/v1/flows", params={"device": "dev-fuzz"}, headers=auth(analyst(app)))
        assert listed.status_code == 200


def test_flows_page(client: Any, app: Any) -> None:
    token = enroll(client)
    post(client, token, flows_doc([flow(exe="/usr/bin/<script>", command="x")]))
    assert client.get("/flows", follow_redirects=False).status_code == 303
    signin = client.post("/login", data={"token": analyst(app)}, headers={"Origin": "http://testserver"},
                         follow_redirects=False)
    assert signin.status_code == 303
    page = client.get("/flows").text
    assert 'id=flows-by-app' in page and 'id=flows-by-device' in page and 'id=flows-latest' in page
    assert "/usr/bin/&lt;script&gt;" in page and "<script>" not in page
    assert "laptop-1 (dev-1)" in page
    assert "href=/flows" in client.get("/").text
