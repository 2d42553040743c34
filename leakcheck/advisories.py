"""The advisory table: which installed VPN client versions carry a known
vulnerability.

The table ships with leakcheck (leakcheck/data/advisories.json, dated,
every entry with its sources); an organisation can point
`posture.advisories_file` at a newer one. Its shape, schema
`leakcheck.advisories/1`: a `date` and a list of `advisories`, each with
`id` (CVE), `package` (source package), `severity`, `summary`,
`introduced` and `fixed_upstream` (upstream versions), `fixed`
(distribution -> release -> first fixed package version) and `sources`.

Deciding, per installed package of that source (leakcheck.debversion
ordering for all of them):
1. the distribution and release are in `fixed`: vulnerable when the
   installed package version is older than the fixed package version
   (Debian backports: 2.6.3-1+deb12u3 is fixed, 2.6.3-1+deb12u2 is not);
2. a program found without a package manager (`binary`): its upstream
   version against `introduced` .. `fixed_upstream`;
3. a package of a distribution the entry does not name: its upstream
   version below the fix is only *undetermined* (the vendor may have
   backported the fix), never called vulnerable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakcheck import debversion
from leakcheck.vpnclients import Distribution, InstalledPackage

SCHEMA = "leakcheck.advisories/1"
SHIPPED = Path(__file__).resolve().parent / "data" / "advisories.json"
SEVERITIES = ("critical", "high", "medium", "low")
MAX_BYTES = 1 << 20  # a table is a few KiB; a megabyte is a mistake (collector and agent refuse more)


class AdvisoryError(ValueError):
    """A table that does not have the documented shape."""


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    severity: str
    summary: str
    introduced: str
    fixed_upstream: str
    fixed: dict[str, dict[str, str]]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    date: str
    advisories: tuple[Advisory, ...]
    path: str


@dataclass(frozen=True)
class Verdict:
    advisory: Advisory
    package: InstalledPackage
    state: str  # vulnerable | fixed | undetermined | unaffected
    compared: str  # what was compared with what, in words


def parse(doc: Any, path: str) -> Table:
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise AdvisoryError(f"{path}: not a {SCHEMA} document")
    items = doc.get("advisories")
    if not isinstance(items, list) or not isinstance(doc.get("date"), str):
        raise AdvisoryError(f"{path}: needs a date and a list of advisories")
    out = []
    for n, item in enumerate(items):
        try:
            advisory = Advisory(id=str(item["id"]), package=str(item["package"]), severity=str(item["severity"]),
                                summary=str(item["summary"]), introduced=str(item.get("introduced", "0")),
                                fixed_upstream=str(item["fixed_upstream"]),
                                fixed={str(d): {str(r): str(v) for r, v in rel.items()}
                                       for d, rel in dict(item.get("fixed", {})).items()},
                                sources=tuple(str(s) for s in item["sources"]))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise AdvisoryError(f"{path}: advisory {n} is incomplete ({exc})") from None
        if advisory.severity not in SEVERITIES or not advisory.sources:
            raise AdvisoryError(f"{path}: advisory {advisory.id} needs a severity ({', '.join(SEVERITIES)}) "
                                "and at least one source")
        for version in (advisory.introduced, advisory.fixed_upstream,
                        *(v for rel in advisory.fixed.values() for v in rel.values())):
            try:
                debversion.split(version)
            except debversion.VersionError as exc:
                raise AdvisoryError(f"{path}: advisory {advisory.id}: {exc}") from None
        out.append(advisory)
    return Table(date=doc["date"], advisories=tuple(out), path=path)


def load(path: str | Path | None = None) -> Table:
    target = Path(path) if path else SHIPPED
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdvisoryError(f"{target}: cannot read the advisory table ({exc})") from None
    return parse(doc, str(target))


def judge(advisory: Advisory, package: InstalledPackage, distribution: Distribution | None) -> Verdict:
    try:
        upstream = debversion.upstream(package.version)
    except debversion.VersionError:
        return Verdict(advisory, package, "undetermined", f"version {package.version!r} not understood")
    if debversion.compare(upstream, advisory.introduced) < 0:
        return Verdict(advisory, package, "unaffected", f"upstream {upstream} is older than {advisory.introduced}, "
                                                         "where the flaw was introduced")
    fixed_here = (advisory.fixed.get(distribution.id, {}).get(distribution.codename)
                  if distribution and package.manager != "binary" else None)
    if fixed_here:
        older = debversion.compare(package.version, fixed_here) < 0
        return Verdict(advisory, package, "vulnerable" if older else "fixed",
                       f"{package.name} {package.version} {'<' if older else '>='} {fixed_here} "
                       f"(the {distribution.id} {distribution.codename} fix)")
    older = debversion.compare(upstream, advisory.fixed_upstream) < 0
    if not older:
        return Verdict(advisory, package, "fixed", f"upstream {upstream} >= {advisory.fixed_upstream}")
    if package.manager == "binary":
        return Verdict(advisory, package, "vulnerable", f"{package.where} reports {upstream} < "
                                                         f"{advisory.fixed_upstream} (the upstream fix)")
    where = f"{distribution.id} {distribution.codename}" if distribution else "this distribution"
    return Verdict(advisory, package, "undetermined",
                   f"upstream {upstream} < {advisory.fixed_upstream}, but the table names no fixed package for "
                   f"{where}: the vendor may have backported the fix")


def evaluate(table: Table, packages: list[InstalledPackage] | tuple[InstalledPackage, ...],
             distribution: Distribution | None) -> list[Verdict]:
    """One verdict per advisory and installed package of its source (one package per
    source is enough: binaries of one source share its version)."""
    out = []
    for advisory in table.advisories:
        seen = set()
        for package in packages:
            if package.source != advisory.package or package.version in seen:
                continue
            seen.add(package.version)
            out.append(judge(advisory, package, distribution))
    return out


__all__ = ["Advisory", "Table", "Verdict", "AdvisoryError", "load", "parse", "evaluate", "judge", "SHIPPED"]
