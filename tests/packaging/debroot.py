"""Clean Debian roots for package tests, and running things inside them.

A root is made once with debootstrap (minbase plus the packages' Depends
and systemd) and cached as a tarball under /var/cache/leakcheck-test/,
keyed by suite, mirror and package list; every test gets a fresh copy.
Commands run chrooted in private network/mount/PID namespaces
(tests/packaging/nsroot.sh), so nothing touches the host's network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]
NSROOT = Path(__file__).with_name("nsroot.sh")
CACHE = Path(os.environ.get("LEAKCHECK_TEST_CACHE", "/var/cache/leakcheck-test"))
SUITE = "bookworm"
VARIANT = "minbase"
# systemd: a real target has it (unit files, systemd-analyze inside the root).
EXTRA_PACKAGES = ("systemd",)
DEB_DIR = "/var/tmp/leakcheck-debs"  # where debs are copied inside a root


def mirror() -> str:
    """The Debian mirror apt on this machine uses (debootstrap needs one)."""
    if os.environ.get("LEAKCHECK_TEST_MIRROR"):
        return os.environ["LEAKCHECK_TEST_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for pattern in (r"^URIs:\s*(\S+/debian)\s*$", r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s+"):
            match = re.search(pattern, text, re.M)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def control_depends(package: str) -> list[str]:
    """Package names in packaging/deb/PACKAGE/control's Depends (no versions)."""
    text = (REPO / "packaging" / "deb" / package / "control").read_text()
    line = re.search(r"^Depends:\s*(.+)$", text, re.M)
    assert line, f"no Depends in {package}'s control"
    return [re.split(r"[\s(]", item.strip().split("|")[0].strip())[0] for item in line.group(1).split(",")]


def root_packages() -> list[str]:
    names = set(EXTRA_PACKAGES)
    for package in ("leakcheck", "leakcheck-collector"):
        names.update(control_depends(package))
    return sorted(names)


def cache_key(packages: Sequence[str]) -> str:
    text = "\n".join([SUITE, VARIANT, mirror(), *packages])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def root_tarball() -> Path:
    """The cached clean root; made with debootstrap the first time."""
    packages = root_packages()
    tarball = CACHE / f"debian-{SUITE}-{VARIANT}-{cache_key(packages)}.tar"
    with _locked(CACHE / ".lock"):
        if not tarball.exists():
            _debootstrap(tarball, packages)
    return tarball


def _debootstrap(tarball: Path, packages: Sequence[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
    try:
        target = work / "root"
        done = subprocess.run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(packages)}",
                               SUITE, str(target), mirror()], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        # Package lists and downloaded debs are not part of a clean system.
        shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)
        (target / "var/cache/apt/archives/partial").mkdir(parents=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)  # atomic: a half-written cache is never used
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class DebRoot:
    """A fresh Debian tree to install packages into and run them in."""

    path: Path
    debs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def extract(cls, tarball: Path, where: Path) -> "DebRoot":
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(where), "--numeric-owner", "-xpf", str(tarball)], check=True)
        return cls(where)

    def add_debs(self, debs: dict[str, Path]) -> None:
        target = self.path / DEB_DIR.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for name, deb in debs.items():
            shutil.copy(deb, target / deb.name)
            self.debs[name] = Path(DEB_DIR) / deb.name

    def run(self, argv: Sequence[str], *, laptop: bool = False, tunnel: bool = False, readonly: bool = False,
            rw: Sequence[str] = (), timeout: float = 180, check: bool = True) -> Result:
        options: list[str] = ["--tunnel"] if tunnel else ["--laptop"] if laptop else []
        if readonly:
            options.append("--readonly")
            for path in rw:
                options += ["--rw", path]
        done = subprocess.run(["bash", str(NSROOT), str(self.path), *options, "--", *argv],
                              capture_output=True, text=True, timeout=timeout)
        result = Result(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
                                 f"{done.stderr[-4000:]}")
        return result

    def sh(self, script: str, **kwargs) -> Result:  # type: ignore[no-untyped-def]
        return self.run(["/bin/sh", "-ec", script], **kwargs)

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def dpkg_status(self, package: str) -> str:
        done = self.run(["dpkg-query", "-W", "-f=${Status}", package], check=False)
        return done.stdout.strip() if done.returncode == 0 else "not-installed"

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# Where dpkg keeps its books, logs and caches: they record that a package
# was there, which is expected; everything else must be as it was.
SNAPSHOT_IGNORED = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "var/lib/dpkg", "var/log",
                    "var/cache/debconf", "var/cache/ldconfig")
# Their content must be identical too (user and group gone).
SNAPSHOT_CONTENT = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` (but the ignored ones), with its kind; the
    account files with their content."""
    out: dict[str, str] = {}
    ignored = {root / p for p in SNAPSHOT_IGNORED}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in ignored]
        for name in dirnames + filenames:
            path = here / name
            rel = str(path.relative_to(root))
            out[rel] = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
    for rel in SNAPSHOT_CONTENT:
        out[rel] = (root / rel).read_text()
    return out


# -- systemd unit files ---------------------------------------------------------------------

def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value it is given in the unit file (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def capability_names(values: Sequence[str]) -> list[str]:
    """'CAP_NET_ADMIN CAP_NET_RAW' -> ['net_admin', 'net_raw'] (setpriv's spelling)."""
    names = [word for value in values for word in value.split()]
    return sorted(n.lower().removeprefix("cap_") for n in names)


def setpriv_argv(unit: Path) -> list[str]:
    """setpriv arguments giving a process what the unit gives its service:
    its user and group, only its capabilities (inheritable, ambient and
    bounding sets), no new privileges, root without special powers."""
    settings = unit_settings(unit)
    ambient = capability_names(settings.get("AmbientCapabilities", []))
    bounding = capability_names(settings.get("CapabilityBoundingSet", []))
    only = lambda caps: ",".join(["-all", *(f"+{c}" for c in caps)])  # noqa: E731
    argv = ["setpriv", f"--reuid={settings['User'][-1]}", f"--regid={settings['Group'][-1]}",
            "--clear-groups", f"--inh-caps={only(ambient)}", f"--bounding-set={only(bounding)}"]
    if ambient:
        argv.append("--ambient-caps=" + ",".join(f"+{c}" for c in ambient))
    if "noroot-locked" in " ".join(settings.get("SecureBits", [])):
        argv.append("--securebits=+noroot,+noroot_locked")
    if settings.get("NoNewPrivileges", ["no"])[-1] == "yes":
        argv.append("--no-new-privs")
    return argv + ["--"]
