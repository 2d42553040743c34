"""The agent run by an ordinary user (uid 65534, no capabilities) inside the
lab's laptop: every probe still runs what it can, skips the rest with a
reason, and nothing crashes; a leak visible from routes is still caught."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

from tests.lab.topology import REPO_ROOT

NOBODY = "65534"


def unprivileged_argv(config_path: Path, *args: str) -> list[str]:
    """`leakcheck run` as nobody. The test interpreter may live where nobody
    cannot read (a venv under /root), so the system's python runs the
    repository with this environment's site-packages on its path."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python, "the unprivileged test needs Debian's /usr/bin/python3"
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "env", f"PYTHONPATH={REPO_ROOT}", python, "-c", AS_INSTALLED,
            sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            "run", "--json", "--config", str(config_path), *args]


# The venv's site directories are added as site directories, not bare path
# entries, so their .pth files run: the editable install's finder is what maps
# leakcheck.probes onto the repository's probes/ folder.
AS_INSTALLED = ("import runpy, site, sys\n"
                "for d in sys.argv[1:3]: site.addsitedir(d)\n"
                "sys.argv = ['leakcheck', *sys.argv[3:]]\n"
                "runpy.run_module('leakcheck', run_name='__main__')")


def readable_by_nobody(path: str) -> bool:
    current = Path(path)
    for part in [current, *current.parents]:
        if part.exists() and not os.stat(part).st_mode & 0o001 and part != Path("/"):
            return False
    return True


def run_as_nobody(lab, *args):
    import json

    from tests.lab import LAB_CONFIG
    from tests.lab.topology import to_toml

    site = sysconfig.get_paths()["purelib"]
    assert readable_by_nobody(site), (
        f"{site} is not readable by an ordinary user: run the suite from the project's .venv "
        f"(tests/run.sh) so the unprivileged test can use its packages")
    config_path = lab.workdir / "unprivileged.toml"
    config_path.write_text(to_toml(LAB_CONFIG))
    os.chmod(lab.workdir, 0o755)
    os.chmod(config_path, 0o644)
    done = lab.exec(unprivileged_argv(config_path, *args), check=False, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_unprivileged_run_passes_on_a_correct_tunnel(lab):
    code, report = run_as_nobody(lab)
    assert code == 0 and report["verdict"] in ("pass", "warn"), report
    assert not [p for p in report["probes"] if p["status"] == "error"], report["probes"]
    for probe in report["probes"]:
        if probe["status"] == "skip":
            assert probe["findings"][0]["evidence"]["reason"]


@pytest.mark.parametrize("lab", ["wg-quick+tunnelvision"], indirect=True)
def test_unprivileged_run_still_catches_a_route_leak_by_inference(lab):
    code, report = run_as_nobody(lab)
    assert code == 1 and report["verdict"] == "leak"
    routes = next(p for p in report["probes"] if p["probe"] == "routes")
    found = next(f for f in routes["findings"] if f["id"] == "routes.more-specific-route-outside-tunnel")
    assert found["evidence"]["method"] == "inferred"  # no capture without CAP_NET_RAW
    assert report["tunnel"]["kind"] == "wireguard"
