"""The systemd units: `systemd-analyze verify` on the installed files (so
every ExecStart= program must exist), the agent's exposure at or below 2.0,
and the settings issue #5 asks for, read from the files themselves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.packaging.debroot import REPO, DebRoot, unit_settings

UNITS_DIR = REPO / "packaging" / "systemd"
UNITS = sorted(p.name for p in UNITS_DIR.iterdir() if p.suffix in (".service", ".timer"))
SERVICES = [u for u in UNITS if u.endswith(".service")]
AGENT_SANDBOXED = ("leakcheck-agent.service", "leakcheck-run.service")
EXPOSURE_TARGET = 2.0


def exposure(unit: Path) -> float:
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_every_unit_is_shipped() -> None:
    assert UNITS == ["leakcheck-agent.service", "leakcheck-collector.service",
                     "leakcheck-run.service", "leakcheck-run.timer"]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_on_the_installed_unit(installed_root: DebRoot, unit: str) -> None:
    installed = installed_root.file(f"/lib/systemd/system/{unit}")
    assert installed.read_text() == (UNITS_DIR / unit).read_text()
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={installed_root.path}", unit],
                          capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_exposure_at_most_2(unit: str) -> None:
    assert exposure(UNITS_DIR / unit) <= EXPOSURE_TARGET


@pytest.mark.parametrize("unit", AGENT_SANDBOXED)
def test_agent_sandbox_settings(unit: str) -> None:
    s = {k: v[-1] for k, v in unit_settings(UNITS_DIR / unit).items()}
    assert s["User"] == "leakcheck" and "DynamicUser" not in s
    assert s["AmbientCapabilities"].split() == s["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups"):
        assert s[key] == "yes", key
    assert s["ProtectSystem"] == "strict" and s["StateDirectory"] == "leakcheck"
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"}
    assert s["MemoryMax"] and s["CPUQuota"]


def test_agent_restarts_on_failure() -> None:
    s = {k: v[-1] for k, v in unit_settings(UNITS_DIR / "leakcheck-agent.service").items()}
    assert s["ExecStart"] == "/usr/bin/leakcheck agent" and s["Restart"] == "on-failure"


def test_timer_spreads_and_catches_up() -> None:
    timer = {k: v[-1] for k, v in unit_settings(UNITS_DIR / "leakcheck-run.timer").items()}
    assert timer["Persistent"] == "true" and timer["RandomizedDelaySec"]
    service = {k: v[-1] for k, v in unit_settings(UNITS_DIR / "leakcheck-run.service").items()}
    assert service["ExecStart"] == "/usr/bin/leakcheck run --upload --trigger schedule" and service["Type"] == "oneshot"


def test_collector_unit_has_no_capabilities() -> None:
    s = {k: v[-1] for k, v in unit_settings(UNITS_DIR / "leakcheck-collector.service").items()}
    assert s["CapabilityBoundingSet"] == "" and s["Restart"] == "on-failure"
    assert s["ExecStart"].startswith("/opt/leakcheck-collector/venv/bin/leakcheck collector serve ")
