"""Reading a lab run's JSON report in client tests: run the CLI and check
its exit status matches the verdict, then pick probes and findings out."""

from __future__ import annotations

from tests.lab.topology import Lab

EXIT = {"pass": 0, "warn": 0, "leak": 1, "error": 3}


def run(lab: Lab, config: dict | None = None, *args: str) -> dict:
    result = lab.run_cli(*args, config=config)
    assert result.report is not None, f"no JSON report:\n{result}"
    assert result.returncode == EXIT[result.report["verdict"]], str(result)
    return result.report


def brief(report: dict) -> str:
    lines = [f"verdict={report['verdict']} tunnel={report['tunnel']}"]
    for p in report["probes"]:
        lines.append(f"  {p['probe']}: {p['status']} {p['error'] or ''}")
        lines += [f"    {f['id']}: {f['summary']}" for f in p["findings"]]
    return "\n".join(lines)


def probe(report: dict, name: str) -> dict:
    (found,) = [p for p in report["probes"] if p["probe"] == name]
    assert found["error"] is None, found
    return found


def finding(report: dict, finding_id: str) -> dict:
    hits = [f for p in report["probes"] for f in p["findings"] if f["id"] == finding_id]
    assert hits, f"{finding_id} not in:\n{brief(report)}"
    return hits[0]


def ids(report: dict) -> set[str]:
    return {f["id"] for p in report["probes"] for f in p["findings"]}
