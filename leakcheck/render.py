"""Terminal rendering for a helpdesk technician: plain words, 80 columns,
no colour needed. The verdict first, one line per probe, then each finding
with what to fix and the evidence that shows it."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from leakcheck.report import Effect, Report, Status, Verdict

WIDTH = 80
VERDICT_LINES = {
    Verdict.PASS: "PASS - no traffic escapes the VPN tunnel.",
    Verdict.WARN: "WARN - no leak found, but something needs attention (see below).",
    Verdict.LEAK: "LEAK - traffic escapes the VPN tunnel. Fix the findings below.",
    Verdict.ERROR: "ERROR - some checks could not complete; the result is incomplete.",
}
# Evidence keys worth a technician's eye, in the order they are shown.
EVIDENCE_KEYS = ("resolver", "link", "destination", "interface", "gateway", "route", "rule",
                 "xfrm_policy", "prefix_count", "prefixes", "public_share", "addresses",
                 "covering_route", "endpoint", "path", "method", "reason")


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)


def render_text(report: Report) -> str:
    lines = [_header(report), _tunnel_line(report), "", "VERDICT: " + VERDICT_LINES[report.verdict], ""]
    # The name column fits the longest probe name (posture-autoconnect), at least 10 wide.
    name_width = max([10, *(len(p.probe) for p in report.probes)])
    lines += [_probe_line(p, name_width) for p in report.probes]
    shown = [f for p in report.probes if p.status is not Status.SKIP for f in p.findings]
    problems = [f for f in shown if f.effect is not Effect.INFO]
    notes = [f for f in shown if f.effect is Effect.INFO]
    if problems:
        lines += ["", "Findings:"]
        for n, finding in enumerate(problems, 1):
            lines += _finding_block(n, finding)
    if notes:
        lines += ["", "Notes (no action needed):"]
        for finding in notes:
            lines += [""] + _wrap(f"- {finding.id}: {finding.summary}", "  ", "    ")
    return "\n".join(lines) + "\n"


def _header(report: Report) -> str:
    when = report.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"leakcheck {report.agent_version} on {report.device.get('hostname', '?')}, {when}"


def _tunnel_line(report: Report) -> str:
    tunnel = report.tunnel
    if tunnel.state == "absent":
        return "Tunnel: none found - this machine is not connected to a VPN."
    where = ", ".join(tunnel.interfaces) if tunnel.interfaces else "policy-based, no interface"
    return f"Tunnel: {tunnel.kind} ({where}), {tunnel.state}"


def _probe_line(probe: Any, name_width: int = 10) -> str:  # may wrap onto more lines
    status = probe.status.value.upper()
    if probe.status is Status.SKIP:
        note = probe.findings[0].evidence.get("reason", "") if probe.findings else ""
        detail = f"skipped: {note}"
    elif probe.status is Status.ERROR:
        detail = f"could not complete: {probe.error}"
    else:
        problems = sum(1 for f in probe.findings if f.effect is not Effect.INFO)
        notes = len(probe.findings) - problems
        detail = f"{problems} finding{'s' if problems != 1 else ''}" if problems else "ok"
        if notes:
            detail += f" ({notes} note{'s' if notes != 1 else ''})"
    return "\n".join(_wrap(detail, f"  {status:<5} {probe.probe:<{name_width}} ", " " * (name_width + 9)))


def _finding_block(n: int, finding: Any) -> list[str]:
    head = f"{n:>2}. [{finding.severity.value}] {finding.id}"
    out = ["", head]
    out += _wrap(finding.summary, "    ")
    if finding.recommendation:
        out += _wrap("Fix: " + finding.recommendation, "    ", "         ")
    facts = _evidence_facts(finding.evidence)
    if facts:
        out.append("    Evidence:")
        for key, value in facts:
            out += _wrap(f"{key}: {value}", "      ", "        ")
    return out


def _evidence_facts(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    facts = []
    for key in EVIDENCE_KEYS:
        value = evidence.get(key)
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            shown = ", ".join(str(v) for v in value[:6])
            if len(value) > 6:
                shown += f" (+{len(value) - 6} more)"
            value = shown
        facts.append((key.replace("_", " "), str(value)))
    return facts


def _wrap(text: str, first: str, rest: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest or first,
                         break_on_hyphens=False) or [first.rstrip()]

