"""Fixtures: the packages built once per session, clean Debian roots."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.packaging.debroot import REPO, DebRoot, root_tarball

NEEDS = ("debootstrap", "dpkg-deb", "unshare", "chroot", "systemd-analyze")


def _require_root_and_tools() -> None:
    # Not a skip either: a package test that cannot run fails loudly with the reason.
    if os.geteuid() != 0:
        pytest.fail("package tests install into a chroot and need root (sudo bash tests/run.sh)")
    missing = [tool for tool in NEEDS if not shutil.which(tool)]
    # Not a skip: tests/run.sh installs these, so a missing one is a broken set-up.
    assert not missing, f"missing tools {missing}: run tests/run.sh (it installs them)"


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """leakcheck and leakcheck-collector .debs, built by the README's command."""
    _require_root_and_tools()
    out = tmp_path_factory.mktemp("debs")
    # Fast compression: xz would add ~25 s and tests nothing more.
    env = dict(os.environ, LEAKCHECK_DEB_COMPRESS="gzip", LEAKCHECK_DEB_COMPRESS_LEVEL="1")
    done = subprocess.run(["bash", str(REPO / "packaging/deb/build.sh"), "--collector", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, f"build failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    found = {p.name.split("_")[0]: p for p in out.glob("*.deb")}
    assert set(found) == {"leakcheck", "leakcheck-collector"}, found
    return found


@pytest.fixture(scope="session")
def clean_tarball() -> Path:
    _require_root_and_tools()
    return root_tarball()


@pytest.fixture
def fresh_root(clean_tarball: Path, debs: dict[str, Path], tmp_path: Path) -> Iterator[DebRoot]:
    """A clean Debian root of its own, the built packages copied in."""
    root = DebRoot.extract(clean_tarball, tmp_path / "root")
    root.add_debs(debs)
    yield root
    root.remove()


@pytest.fixture(scope="session")
def installed_root(clean_tarball: Path, debs: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebRoot]:
    """One root with both packages installed, for checks that change nothing."""
    root = DebRoot.extract(clean_tarball, tmp_path_factory.mktemp("installed") / "root")
    root.add_debs(debs)
    root.run(["dpkg", "-i", str(root.debs["leakcheck"]), str(root.debs["leakcheck-collector"])])
    yield root
    root.remove()
