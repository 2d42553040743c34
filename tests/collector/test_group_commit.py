"""Group commit: one batch, one transaction, and still one outcome per
submission exactly as if each had come alone (both databases)."""

from __future__ import annotations

import asyncio

from leakcheck.collector import security
from leakcheck.collector.contract import ReportIn
from leakcheck.collector.store import Pending
from tests.collector.conftest import analyst, days_ago, enroll, leak_finding, make_report


def pending(doc: dict, token: str) -> Pending:
    report = ReportIn.model_validate(doc)
    return Pending(report, report.model_dump_json(by_alias=True, exclude={"agent"}), security.token_hash(token))


def test_mixed_batch_outcomes(client, app, table_counts):
    store = app.state.store
    one = enroll(client)
    two = enroll(client, device_id="dev-2", hostname="laptop-2", instance="instance-bbbbbbbbbbbb")
    gone = enroll(client, device_id="dev-3", hostname="laptop-3", instance="instance-cccccccccccc")
    assert store.revoke_token(gone)
    reader = analyst(app)
    kept = make_report(started=days_ago(3))
    assert store.submit_batch([pending(kept, one)], 1000, 60)[0].status == 201

    old = make_report(verdict="leak", findings=[leak_finding("dns.resolver-outside-tunnel")], started=days_ago(2))
    new = make_report(verdict="leak", findings=[leak_finding("routes.default-route-outside-tunnel")],
                      probe="routes", started=days_ago(1))
    batch = [
        pending(new, one),                                    # stored, and the device's latest
        pending(old, one),                                    # stored, older: not the latest
        pending(new, one),                                    # the same report again in the batch
        pending(kept, one),                                   # stored earlier
        pending(make_report(device_id="dev-2", hostname="laptop-2", report_id=kept["report_id"]), two),
        pending(make_report(), two),                          # dev-1's report with dev-2's token
        pending(make_report(), reader),                       # an analyst token
        pending(make_report(device_id="dev-3", hostname="laptop-3"), gone),  # revoked
        pending(make_report(), "lcd_forged"),
    ]
    before = table_counts()
    outcomes = store.submit_batch(batch, 1000, 60)
    assert [o.status for o in outcomes] == [201, 201, 200, 200, 409, 403, 403, 401, 401]
    after = table_counts()
    assert after["reports"] == before["reports"] + 2
    assert after["findings"] == before["findings"] + 2
    device = store.device("dev-1", 0, 900)
    assert device["last_report_id"] == new["report_id"]
    assert [(c["finding_id"], c["probe"], c["first_seen"]) for c in device["current_findings"]] == [
        ("routes.default-route-outside-tunnel", "routes", new["started_at"])]
    trend = store.summary(0, 900, 3650)["trend"]
    assert sum(v for day in trend for k, v in day.items() if k != "day") == 3


def test_rate_limit_counts_each_submission_of_a_batch(client, app):
    token = enroll(client)
    outcomes = app.state.store.submit_batch([pending(make_report(), token) for _ in range(5)], 3, 3600)
    # Which of a batch's submissions are over the limit is not arrival order
    # (rows are visited in a fixed order), but the count is exact.
    assert sorted(o.status for o in outcomes) == [201, 201, 201, 429, 429]
    assert all(1 <= o.retry_after <= 3600 for o in outcomes if o.status == 429)


def test_concurrent_submissions_share_transactions(client, app, table_counts, monkeypatch):
    token = enroll(client)
    docs = [make_report(verdict="leak", findings=[leak_finding()]) for _ in range(60)]
    store, batches = app.state.store, []
    real = store.submit_batch

    def counting(items, *args, **kw):  # type: ignore[no-untyped-def]
        batches.append(len(items))
        return real(items, *args, **kw)
    monkeypatch.setattr(store, "submit_batch", counting)

    async def burst() -> list[int]:
        outcomes = await asyncio.gather(*(app.state.ingest.submit(pending(d, token)) for d in docs + docs[:10]))
        return [o.status for o in outcomes]
    codes = asyncio.run(burst())
    assert codes.count(201) == 60 and codes.count(200) == 10
    assert table_counts()["reports"] == 60 and table_counts()["findings"] == 60
    assert sum(batches) == 70 and len(batches) < 70  # some transactions carried several reports
