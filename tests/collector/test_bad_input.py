"""Bad input at the collector: refused with the right status, nothing stored,
and the collector keeps serving."""

from __future__ import annotations

import copy
import json
from typing import Any, Iterator

import pytest

from tests.collector.conftest import analyst, auth, enroll, leak_finding, make_report

INJECTIONS = ["'; DROP TABLE reports; --", "\" OR 1=1 --", "x'); DELETE FROM devices; --",
              "1; UPDATE tokens SET revoked_at=NULL"]


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every leaf path of a JSON document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, prefix + (i,))
    else:
        yield prefix


def _set(doc: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


# Free text is data: it is stored verbatim (only ever a bound parameter).
FREE_TEXT = {("device", "os_version"), ("probes", 0, "findings", 0, "summary"),
             ("probes", 0, "findings", 0, "evidence", "resolver"),
             ("probes", 0, "findings", 0, "recommendation"), ("probes", 0, "findings", 0, "guidance"),
             ("agent", "last_error"), ("probes", 0, "error")}


def test_sql_injection_in_every_field(client, app, table_counts):
    token = enroll(client)
    base = make_report(verdict="leak", findings=[leak_finding()],
                       agent={"spool_depth": 0, "dropped": 0, "last_upload": None, "last_error": "none"})
    reader = auth(analyst(app))
    for path in _paths(base):
        for attack in INJECTIONS[:2]:
            doc = _set(base, path, attack)
            doc["report_id"] = doc["report_id"] if path == ("report_id",) else make_report()["report_id"]
            before = table_counts()
            response = client.post("/api/v1/reports", json=doc, headers=auth(token))
            if path in FREE_TEXT:
                assert response.status_code == 201, (path, response.text)
                assert response.json()["stored"] is True
            else:
                assert response.status_code in (403, 422), (path, attack, response.status_code)
                assert table_counts() == before, path
    # The tables are all still there and the collector still answers.
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/api/v1/devices", headers=reader).status_code == 200
    for attack in INJECTIONS:
        for params in ({"probe": attack}, {"finding_id": attack}, {"device_id": attack}, {"since": attack}):
            assert client.get("/api/v1/findings", params=params, headers=reader).status_code == 422
        assert client.get(f"/api/v1/devices/{attack}", headers=reader).status_code in (404, 422)


def test_free_text_is_stored_verbatim(client, app):
    token = enroll(client)
    finding = leak_finding()
    finding["summary"] = INJECTIONS[0]
    doc = make_report(verdict="leak", findings=[finding])
    assert client.post("/api/v1/reports", json=doc, headers=auth(token)).status_code == 201
    latest = client.get("/api/v1/devices/dev-1/latest", headers=auth(analyst(app))).json()
    assert latest["probes"][0]["findings"][0]["summary"] == INJECTIONS[0]


BAD_DOCUMENTS = {
    "wrong schema": lambda d: {**d, "schema": "leakcheck.report/2"},
    "missing field": lambda d: {k: v for k, v in d.items() if k != "tunnel"},
    "unknown field": lambda d: {**d, "extra": 1},
    "bad verdict": lambda d: {**d, "verdict": "fine"},
    "verdict not from probes": lambda d: {**d, "verdict": "pass"},
    "bad status": lambda d: _set(d, ("probes", 0, "status"), "ok"),
    "bad finding id": lambda d: _set(d, ("probes", 0, "findings", 0, "id"), "DNS_Leak"),
    "bad severity": lambda d: _set(d, ("probes", 0, "findings", 0, "severity"), "urgent"),
    "not rfc3339": lambda d: {**d, "started_at": "01/05/2024 10:00"},
    "impossible date": lambda d: {**d, "started_at": "2024-13-45T10:00:00Z"},
    "epoch number time": lambda d: {**d, "started_at": 1714557600},
    "report_id not uuid": lambda d: {**d, "report_id": "42"},
    "negative duration": lambda d: _set(d, ("probes", 0, "duration_ms"), -1),
    "string duration": lambda d: _set(d, ("probes", 0, "duration_ms"), "12"),
    "bad trigger": lambda d: {**d, "trigger": "cron"},
    "bad agent health": lambda d: {**d, "agent": {"spool_depth": -1, "dropped": 0,
                                                  "last_upload": None, "last_error": None}},
    "agent extra key": lambda d: {**d, "agent": {"spool_depth": 0, "dropped": 0, "last_upload": None,
                                                 "last_error": None, "x": 1}},
    "finished before started": lambda d: {**d, "finished_at": "2000-01-01T00:00:00Z"},
    "array body": lambda d: [d],
}


@pytest.mark.parametrize("mutation", sorted(BAD_DOCUMENTS))
def test_wrong_schema_rejected(client, table_counts, mutation):
    token = enroll(client)
    doc = BAD_DOCUMENTS[mutation](make_report(verdict="leak", findings=[leak_finding()]))
    before = table_counts()
    response = client.post("/api/v1/reports", json=doc, headers=auth(token))
    assert response.status_code == 422, response.text
    assert table_counts() == before
    assert "DROP" not in response.text


def test_malformed_json_and_oversize(client, app, table_counts):
    token = enroll(client)
    before = table_counts()
    for body in (b"{", b"not json", b"", b"\xff\xfe", b'{"schema": "leakcheck.report/1",}'):
        response = client.post("/api/v1/reports", content=body,
                               headers={**auth(token), "Content-Type": "application/json"})
        assert response.status_code == 422, body
    limit = app.state.settings.max_body_bytes
    huge = make_report(verdict="leak", findings=[leak_finding(blob="x" * (limit + 10))])
    response = client.post("/api/v1/reports", content=json.dumps(huge).encode(),
                           headers={**auth(token), "Content-Type": "application/json"})
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        data = json.dumps(huge).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]
    response = client.post("/api/v1/reports", content=chunks(),
                           headers={**auth(token), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert table_counts() == before
    ok = client.post("/api/v1/reports", json=make_report(), headers=auth(token))
    assert ok.status_code == 201
