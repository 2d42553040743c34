"""One contract (leakcheck.report.Contract) on both sides: whatever a probe
puts in a report, the agent conforms it before spooling and the collector's
request model accepts what was spooled; what was cut carries a marker."""

from __future__ import annotations

import json
import re
import string
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leakcheck.collector.contract import ReportIn
from leakcheck.report import (Contract, Finding, ProbeResult, Report, Severity, Status, TunnelSummary, conform,
                              utcnow)

wild_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=80)
leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**90), max_value=2**90),
                 st.floats(), wild_text)


def deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


evidence = st.dictionaries(st.text(max_size=8), st.one_of(
    st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.text(string.ascii_letters, max_size=4), inner,
                                                               max_size=3)), max_leaves=30),
    st.integers(min_value=10, max_value=600).map(deep),
    st.integers(min_value=4000, max_value=60_000).map(lambda n: "x" * n)), max_size=4)


def report(summary: str, evidences: list[dict[str, Any]], error: str | None, counter: int) -> Report:
    findings = [Finding("dns.resolver-outside-tunnel", Severity.HIGH, summary, e, "fix", "guidance")
                for e in evidences]
    now = utcnow()
    return Report(str(uuid.uuid4()), "0.1.0", {"id": "dev-1", "hostname": "laptop-1", "os": "linux",
                                              "os_version": summary},
                  now, now, "manual", TunnelSummary("up", "wireguard", ["wg0"]),
                  [ProbeResult("dns", Status.LEAK, 5, findings, error, checks=("dns", "full-tunnel"))],
                  agent={"spool_depth": counter, "dropped": counter, "last_upload": None,
                         "last_error": error, "quarantined": 0})


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(wild_text, st.lists(evidence, min_size=1, max_size=6), st.one_of(st.none(), wild_text),
       st.integers(min_value=0, max_value=2**80))
def test_what_the_agent_spools_the_collector_accepts(summary, evidences, error, counter):
    doc = conform(report(summary, evidences, error, counter).to_dict())
    wire = json.dumps(doc, allow_nan=False).encode("utf-8")  # the spool file's bytes
    ReportIn.model_validate_json(wire)


def test_over_long_text_and_too_many_findings_are_cut_with_a_marker():
    findings = [{"ok": n} for n in range(Contract.FINDINGS_MAX + 7)]
    doc = conform(report("s" * 10_000, findings, None, 0).to_dict())
    probe = doc["probes"][0]
    assert len(probe["findings"]) == Contract.FINDINGS_MAX
    assert "7 finding(s) dropped" in probe["error"]
    summary = probe["findings"][0]["summary"]
    assert len(summary) <= Contract.TEXT_MAX and summary.endswith("more characters]")
    big = conform(report("s", [{"blob": "y" * 3000, "more": ["z" * 3000] * 20}], None, 0).to_dict())
    assert "truncated_by_leakcheck" in big["probes"][0]["findings"][0]["evidence"]
    ReportIn.model_validate_json(json.dumps(big))


def test_the_collector_model_copies_no_pattern():
    """The collector's patterns come from leakcheck.report.Contract, not copies."""
    source = Path(__file__).parents[2].joinpath("leakcheck/collector/contract.py").read_text()
    literals = re.findall(r'r"\^[^"]*"', source)
    assert literals == ['r"^[A-Za-z0-9_-]{16,128}$"'], literals  # enrollment's instance id only
    fields = ReportIn.model_fields
    assert fields["report_id"].metadata[0].pattern == Contract.UUID
