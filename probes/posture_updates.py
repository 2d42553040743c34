"""posture-updates: are the installed VPN clients free of known, fixed
vulnerabilities?

Installed VPN client packages (dpkg's status file, rpm where present,
`openvpn --version` when no package manager knows it) are compared with the
dated advisory table (leakcheck/advisories.py: the table shipped with
leakcheck, or the newer copy the agent fetched from the collector, or
`posture.advisories_file`). Versions are ordered as dpkg orders them
(leakcheck/debversion.py), and a distribution's own fixed package version
decides where the table names one: Debian backports fixes without changing
the upstream version (openvpn 2.6.3-1+deb12u3 carries the fix for
CVE-2024-5594 that upstream shipped in 2.6.11).

- `posture-updates.client-outdated` (warn; the advisory's severity): an
  installed version older than the fix, with the CVE, the installed and
  fixed versions and the table's sources;
- `posture-updates.undetermined` (info): a package of a distribution the
  table does not name, whose upstream version is below the upstream fix
  (its vendor may have backported it);
- `posture-updates.clients` (info): what is installed and which table
  (date, path) it was compared with.
Nothing installed: skipped.
"""

from __future__ import annotations

from leakcheck.advisories import Verdict, evaluate
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, ProbeSkipped, Severity
from leakcheck.report import Guidance


class PostureUpdatesProbe(Probe):
    __doc__ = __doc__
    name = "posture-updates"
    leak_class = "VPN client versions with known vulnerabilities (dated advisory table)"
    finding_ids = ("posture-updates.client-outdated", "posture-updates.undetermined", "posture-updates.clients")
    checks = ("up-to-date",)
    timeout_s = 5.0

    def run(self, ctx: ProbeContext) -> list[Finding]:
        facts = ctx.clients.facts(ctx.state)
        if not facts.packages:
            raise ProbeSkipped("no VPN client package found")
        table = ctx.clients.advisory_table(ctx.config.get("posture", "advisories_file"),
                                           ctx.config.get("agent", "state_dir"))
        verdicts = evaluate(table, facts.packages, facts.distribution)
        findings = [self._outdated(v, table.date, table.path) for v in verdicts if v.state == "vulnerable"]
        undetermined = [v for v in verdicts if v.state == "undetermined"]
        if undetermined:
            findings.append(self.finding(
                "posture-updates.undetermined", Severity.INFO,
                "Not decided (no fixed package version known for this distribution): "
                + ", ".join(f"{v.package.name} {v.package.version} / {v.advisory.id}" for v in undetermined) + ".",
                {"checks": [_row(v) for v in undetermined], "table_date": table.date, "table": table.path},
                "Check the vendor's advisory for these CVEs, or add the distribution's fixed versions to the "
                "advisory table.", Guidance.UP_TO_DATE, Effect.INFO))
        dist = facts.distribution
        findings.append(self.finding(
            "posture-updates.clients", Severity.INFO,
            f"{len({p.source for p in facts.packages})} VPN client(s) checked against the advisory table of "
            f"{table.date} ({len(table.advisories)} advisories): "
            + ", ".join(sorted({f"{p.source} {p.version}" for p in facts.packages})) + ".",
            {"packages": [{"name": p.name, "version": p.version, "source": p.source, "manager": p.manager}
                          for p in facts.packages],
             "distribution": f"{dist.id} {dist.codename}".strip() if dist else None,
             "table_date": table.date, "table": table.path,
             "fixed": sorted({v.advisory.id for v in verdicts if v.state == "fixed"})},
            "", Guidance.UP_TO_DATE, Effect.INFO))
        return findings

    def _outdated(self, verdict: Verdict, date: str, path: str) -> Finding:
        advisory, package = verdict.advisory, verdict.package
        return self.finding(
            "posture-updates.client-outdated", Severity(advisory.severity),
            f"{package.name} {package.version} is affected by {advisory.id}: {advisory.summary}",
            {"package": package.name, "installed": package.version, "source_package": package.source,
             "manager": package.manager, "read_from": package.where, "cve": advisory.id,
             "compared": verdict.compared, "fixed_upstream": advisory.fixed_upstream, "fixed": advisory.fixed,
             "sources": list(advisory.sources), "table_date": date, "table": path},
            f"Update {package.source} (e.g. `apt-get install --only-upgrade {package.name}`) to a version with "
            f"the fix for {advisory.id}, then restart the VPN client.",
            Guidance.UP_TO_DATE, Effect.WARN)


def _row(verdict: Verdict) -> dict[str, str]:
    return {"package": verdict.package.name, "installed": verdict.package.version, "cve": verdict.advisory.id,
            "compared": verdict.compared}
