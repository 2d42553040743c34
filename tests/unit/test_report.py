import json
import uuid
from datetime import datetime, timezone

import pytest

from leakcheck.report import (Effect, Finding, ProbeResult, Report, Severity, Status, TunnelSummary,
                              overall_verdict)


def result(status):
    return ProbeResult(probe="x", status=status, duration_ms=1)


@pytest.mark.parametrize("statuses, verdict", [
    ([Status.PASS, Status.SKIP], "pass"),
    ([Status.PASS, Status.WARN], "warn"),
    ([Status.WARN, Status.ERROR], "error"),
    ([Status.ERROR, Status.LEAK, Status.WARN], "leak"),
])
def test_verdict_precedence(statuses, verdict):
    assert overall_verdict([result(s) for s in statuses]).value == verdict


def test_finding_ids_must_be_probe_dot_kebab():
    for bad in ("dns", "dns.Resolver", "dns.resolver_outside", "DNS.x", "dns.a.b"):
        with pytest.raises(ValueError):
            Finding(id=bad, severity=Severity.LOW, summary="", evidence={}, recommendation="", guidance="")


def test_report_document_has_exactly_the_contract_keys():
    finding = Finding(id="dns.resolver-outside-tunnel", severity=Severity.CRITICAL, summary="s",
                      evidence={"resolver": "192.0.2.53"}, recommendation="r", guidance="g",
                      effect=Effect.LEAK)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    report = Report(report_id=str(uuid.uuid4()), agent_version="0.1.0",
                    device={"id": "d", "hostname": "h", "os": "linux", "os_version": "v"},
                    started_at=now, finished_at=now, trigger="manual",
                    tunnel=TunnelSummary("up", "wireguard", ["wg0"]),
                    probes=[ProbeResult("dns", Status.LEAK, 3, [finding])])
    doc = json.loads(json.dumps(report.to_dict()))
    assert list(doc) == ["schema", "report_id", "agent_version", "device", "started_at", "finished_at",
                         "trigger", "tunnel", "verdict", "probes"]
    assert doc["schema"] == "leakcheck.report/1"
    assert doc["started_at"] == "2026-01-02T03:04:05.000Z"
    assert doc["verdict"] == "leak"
    assert set(doc["tunnel"]) == {"state", "kind", "interfaces"}
    assert set(doc["probes"][0]) == {"probe", "status", "duration_ms", "findings", "error"}
    assert set(doc["probes"][0]["findings"][0]) == {"id", "severity", "summary", "evidence",
                                                    "recommendation", "guidance"}
