"""OCSF (Open Cybersecurity Schema Framework 1.1) mapping of leakcheck findings.

A finding of a probe whose status is `leak` (traffic escapes, or can
escape, the tunnel) is a **Detection Finding** (class_uid 2004, category
Findings, 2). A finding of a probe that did not observe a leak but reports
a departure from the NCSC guidance (status `warn`: posture, e.g. split
tunnelling allowed, weak protocol) is a **Compliance Finding** (class_uid
2003), with the recommendation it breaks under `compliance`. Informational
notes (severity `info`) are neither and are not exported.

| leakcheck                       | OCSF field                                        |
|---------------------------------|---------------------------------------------------|
| finding `id`                    | finding_info.types[0], finding_info.analytic.uid  |
| probe name                      | finding_info.analytic.name (type_id 1, Rule)      |
| device id + finding id          | finding_info.uid (stable per device and finding)  |
| `summary`                       | finding_info.title, message                       |
| `severity` info..critical       | severity_id 1..5 (Informational..Critical)        |
| `evidence`                      | evidences[0].data (verbatim)                      |
| `recommendation`                | remediation.desc                                  |
| `guidance`                      | remediation.references[0]; Compliance: compliance.control |
| probe `checks` (NCSC keys)      | compliance.requirements (Compliance Finding)      |
| device id, hostname, os         | device.uid, device.hostname, device.os.name/type_id |
| report time                     | time (ms), finding_info.last_seen_time            |
| leak started / resolved event   | activity_id 1 Create / 3 Close, status_id 1 New / 4 Resolved |
| report id / event id            | metadata.correlation_uid / metadata.uid           |
"""

from __future__ import annotations

from typing import Any

from leakcheck import __version__

OCSF_VERSION = "1.1.0"
DETECTION, COMPLIANCE = 2004, 2003
_SEVERITY = {"info": (1, "Informational"), "low": (2, "Low"), "medium": (3, "Medium"),
             "high": (4, "High"), "critical": (5, "Critical")}
# OCSF operating system type_id.
_OS = {"windows": 100, "linux": 200, "macos": 300, "darwin": 300}
_ACTIVITY = {"open": (1, "Create", 1, "New"), "close": (3, "Close", 4, "Resolved")}


def finding(device: dict[str, Any], probe: dict[str, Any], item: dict[str, Any], time_ms: int,
            activity: str = "open", uid: str | None = None, report_id: str | None = None) -> dict[str, Any]:
    """One finding (of one probe result, on one device) as an OCSF object."""
    leak = probe.get("status") == "leak"
    class_uid = DETECTION if leak else COMPLIANCE
    activity_id, activity_name, status_id, status = _ACTIVITY[activity]
    severity_id, severity = _SEVERITY.get(item.get("severity", ""), (0, "Unknown"))
    os_name = str(device.get("os", ""))
    doc: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": "Detection Finding" if leak else "Compliance Finding",
        "category_uid": 2, "category_name": "Findings",
        "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": time_ms,
        "severity_id": severity_id, "severity": severity,
        "status_id": status_id, "status": status,
        "message": item.get("summary", ""),
        "finding_info": {
            "uid": f"{device.get('id', '')}/{item.get('id', '')}",
            "title": item.get("summary", ""),
            "types": [item.get("id", "")],
            "analytic": {"uid": item.get("id", ""), "name": probe.get("probe", ""), "type_id": 1, "type": "Rule"},
            "last_seen_time": time_ms,
        },
        "device": {"uid": device.get("id", ""), "hostname": device.get("hostname", ""),
                   "os": {"name": os_name, "type_id": _OS.get(os_name.lower(), 99)}},
        "evidences": [{"data": item.get("evidence", {})}],
        "remediation": {"desc": item.get("recommendation", ""),
                        "references": [item["guidance"]] if item.get("guidance") else []},
        "metadata": {"version": OCSF_VERSION,
                     "product": {"name": "leakcheck", "vendor_name": "leakcheck", "version": __version__}},
    }
    if uid:
        doc["metadata"]["uid"] = uid
    if report_id:
        doc["metadata"]["correlation_uid"] = report_id
    if not leak:
        doc["compliance"] = {"standards": ["NCSC VPN guidance"], "control": item.get("guidance", ""),
                             "requirements": list(probe.get("checks", [])), "status_id": 3, "status": "Fail"}
    return doc


def report_findings(report: dict[str, Any], time_ms: int) -> list[dict[str, Any]]:
    """Every finding of a stored report worth a SIEM's attention (not info notes)."""
    out = []
    for probe in report.get("probes", []):
        if probe.get("status") not in ("leak", "warn"):
            continue
        for item in probe.get("findings", []):
            if item.get("severity") != "info":
                out.append(finding(report.get("device", {}), probe, item, time_ms,
                                   report_id=report.get("report_id")))
    return out
