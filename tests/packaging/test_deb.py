"""The leakcheck .deb, installed into a clean Debian 12 root: it runs there
(as root and under the agent unit's user and capabilities), and removal
keeps the configuration while purge leaves nothing behind."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from leakcheck import __version__
from leakcheck.config import render_default
from tests.packaging.debroot import NSROOT, DebRoot, setpriv_argv, snapshot, unit_settings

AGENT_UNIT = "/lib/systemd/system/leakcheck-agent.service"
STATE_DIR = "/var/lib/leakcheck"
EXIT_FOR_VERDICT = {"pass": 0, "warn": 0, "leak": 1, "error": 3}


def check_report(text: str) -> dict[str, Any]:
    """One JSON document of schema leakcheck.report/1, held to the contract
    the collector enforces."""
    from leakcheck.collector.contract import ReportIn

    report = json.loads(text)
    assert report["schema"] == "leakcheck.report/1"
    ReportIn.model_validate(report)
    return report


def skip_reason(probe: dict[str, Any]) -> str:
    notes = [f for f in probe["findings"] if f["id"] == f"{probe['probe']}.skipped"]
    assert notes and notes[0]["evidence"].get("reason"), f"skip without a reason: {probe}"
    return str(notes[0]["evidence"]["reason"])


def run_json(root: DebRoot, prefix: list[str], **kwargs: Any) -> tuple[int, dict[str, Any]]:
    kwargs.setdefault("laptop", True)
    done = root.run([*prefix, "/usr/bin/leakcheck", "run", "--json"], check=False, **kwargs)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr}"
    report = check_report(done.stdout)
    assert done.returncode == EXIT_FOR_VERDICT[report["verdict"]]
    return done.returncode, report


def needs_root_probes(root: DebRoot) -> set[str]:
    """Probes of the installed code that declare they need the capabilities."""
    code = "from leakcheck.registry import discover; print(' '.join(n for n, c in discover().items() if c.needs_root))"
    return set(root.run(["/opt/leakcheck/venv/bin/python", "-c", code]).stdout.split())


# -- the package as built ---------------------------------------------------------------------

def test_package_metadata_and_contents(debs: dict[str, Path]) -> None:
    deb = str(debs["leakcheck"])
    info = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True, text=True, check=True).stdout
    assert f"Version: {__version__}-" in info
    conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert conffiles == ["/etc/leakcheck/leakcheck.toml"]
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    for path in ("./lib/systemd/system/leakcheck-agent.service", "./lib/systemd/system/leakcheck-run.timer",
                 "./lib/systemd/system/leakcheck-run.service", "./usr/bin/leakcheck -> /opt/leakcheck/venv/bin/leakcheck",
                 "./opt/leakcheck/venv/bin/python3.11 -> /usr/bin/python3.11"):
        assert path in listing, path
    # Agents do not carry the collector's web stack.
    assert "site-packages/fastapi/" not in listing and "site-packages/pip/" not in listing


# -- installed ---------------------------------------------------------------------------------

def test_installed_version_config_user_and_enablement(installed_root: DebRoot) -> None:
    root = installed_root
    assert root.run(["leakcheck", "--version"]).stdout.strip() == f"leakcheck {__version__}"
    # The conffile is the schema's documented default, and the installed
    # `config check` accepts it.
    assert root.file("/etc/leakcheck/leakcheck.toml").read_text() == render_default()
    checked = root.run(["leakcheck", "config", "check", "/etc/leakcheck/leakcheck.toml"])
    assert 'interval = "15m"' in checked.stdout and "valid" in checked.stderr
    assert root.run(["getent", "passwd", "leakcheck"]).stdout.split(":")[6].strip() == "/usr/sbin/nologin"
    assert root.run(["stat", "-c", "%U:%G %a", STATE_DIR]).stdout.strip() == "leakcheck:leakcheck 750"
    # The agent is enabled on first install; the timer (its alternative) is not.
    assert root.file("/etc/systemd/system/multi-user.target.wants/leakcheck-agent.service").is_symlink()
    assert not root.file("/etc/systemd/system/timers.target.wants/leakcheck-run.timer").exists()


def test_run_json_as_root_in_its_own_network(installed_root: DebRoot) -> None:
    """A laptop with no VPN, in a network namespace of its own: the installed
    agent says leak, with a report of the public schema."""
    code, report = run_json(installed_root, [])
    assert code == 1 and report["verdict"] == "leak"
    assert report["agent_version"] == __version__
    routes = next(p for p in report["probes"] if p["probe"] == "routes")
    assert routes["status"] == "leak"


def test_the_unit_gives_exactly_two_capabilities(installed_root: DebRoot) -> None:
    prefix = setpriv_argv(installed_root.file(AGENT_UNIT))
    assert "--ambient-caps=+net_admin,+net_raw" in prefix
    assert "--bounding-set=-all,+net_admin,+net_raw" in prefix
    status = installed_root.run([*prefix, "cat", "/proc/self/status"]).stdout
    caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    net_admin_and_raw = f"{(1 << 12) | (1 << 13):016x}"
    assert caps == {"CapInh": net_admin_and_raw, "CapPrm": net_admin_and_raw, "CapEff": net_admin_and_raw,
                    "CapBnd": net_admin_and_raw, "CapAmb": net_admin_and_raw}
    assert installed_root.run([*prefix, "id", "-un"]).stdout.strip() == "leakcheck"


def test_run_under_the_units_sandbox_matches_root_or_says_why(installed_root: DebRoot) -> None:
    """On a laptop with a VPN up (so that every probe has work to do), run as
    the unit runs it (its user, only CAP_NET_ADMIN + CAP_NET_RAW, the OS
    read-only but the state directory): the run completes; no leak that a
    root run finds goes missing; a probe that does less than as root either
    skips with its reason or says in a finding what it could not see."""
    root = installed_root
    prefix = setpriv_argv(root.file(AGENT_UNIT))
    _, as_root = run_json(root, [], tunnel=True)
    _, sandboxed = run_json(root, prefix, tunnel=True, readonly=True, rw=[STATE_DIR])
    assert as_root["tunnel"]["state"] == sandboxed["tunnel"]["state"] == "up"
    assert sandboxed["verdict"] == as_root["verdict"]
    by_name = {p["probe"]: p for p in as_root["probes"]}
    assert set(by_name) == {p["probe"] for p in sandboxed["probes"]}
    for probe in sandboxed["probes"]:
        full = by_name[probe["probe"]]
        assert probe["status"] != "error", probe
        if probe["status"] == "skip":
            skip_reason(probe)
        elif probe["status"] != full["status"]:
            raise AssertionError(f"{probe['probe']}: {full['status']} as root, {probe['status']} sandboxed")
        root_leaks = {f["id"] for f in full["findings"] if f["severity"] != "info"}
        sandbox_ids = {f["id"] for f in probe["findings"]}
        if probe["status"] != "skip":
            assert root_leaks <= sandbox_ids, (probe, full)
        extra = [f for f in probe["findings"] if f["id"] not in {g["id"] for g in full["findings"]}]
        assert all(f["severity"] == "info" for f in extra), extra  # explanations, not new verdicts
    # The capabilities the unit gives are enough for what declares it needs them.
    for name in needs_root_probes(root):
        probe = next(p for p in sandboxed["probes"] if p["probe"] == name)
        assert probe["status"] != "skip" or "privileged" not in skip_reason(probe), probe


def test_without_the_capabilities_probes_say_why(installed_root: DebRoot) -> None:
    """The same user without capabilities: what needs them skips with the
    reason, and the active checks fall back to inference."""
    root = installed_root
    prefix = ["setpriv", "--reuid=leakcheck", "--regid=leakcheck", "--clear-groups", "--inh-caps=-all",
              "--bounding-set=-all", "--no-new-privs", "--"]
    _, report = run_json(root, prefix)
    for probe in report["probes"]:
        if probe["status"] == "skip":
            skip_reason(probe)
    for name in needs_root_probes(root):
        probe = next(p for p in report["probes"] if p["probe"] == name)
        assert probe["status"] == "skip" and "CAP_NET" in skip_reason(probe), probe
    routes = next(p for p in report["probes"] if p["probe"] == "routes")
    assert routes["status"] == "leak"  # still caught from the routing table


def test_agent_from_the_units_execstart(installed_root: DebRoot) -> None:
    """`leakcheck agent` as ExecStart= names it, under the unit's identity,
    capabilities and read-only OS: it runs the probes at start, spools the
    report in its state directory, and stops cleanly on SIGTERM."""
    root = installed_root
    unit = root.file(AGENT_UNIT)
    settings = unit_settings(unit)
    execstart = shlex.split(settings["ExecStart"][-1])
    assert execstart == ["/usr/bin/leakcheck", "agent"]
    # ExecStartPre=+...: as root, outside the sandbox, before the agent.
    root.sh("printf tok > /etc/leakcheck/token && chmod 0600 /etc/leakcheck/token")
    for pre in settings.get("ExecStartPre", []):
        root.run(shlex.split(pre.lstrip("+-")))
    assert root.run(["stat", "-c", "%U:%G %a", "/etc/leakcheck/token"]).stdout.strip() == "root:leakcheck 640"
    root.sh(f"rm -rf {STATE_DIR}/spool /etc/leakcheck/token")

    command = shlex.join([*setpriv_argv(unit), *execstart])
    script = f"""
        {command} & pid=$!
        for i in $(seq 240); do
            ls {STATE_DIR}/spool/*.json >/dev/null 2>&1 && break
            kill -0 $pid 2>/dev/null || break
            sleep 0.25
        done
        kill -TERM $pid
        rc=0; wait $pid || rc=$?
        echo "agent-exit=$rc"
    """
    done = root.sh(script, laptop=True, readonly=True, rw=[STATE_DIR], timeout=120)
    assert "agent-exit=0" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    spooled = sorted(root.file(f"{STATE_DIR}/spool").glob("*.json"))
    assert spooled, done.stderr
    report = check_report(spooled[0].read_text())
    assert report["trigger"] in ("schedule", "network-change") and report["verdict"] == "leak"
    owners = root.run(["stat", "-c", "%U", *[f"{STATE_DIR}/spool/{p.name}" for p in spooled]]).stdout.split()
    assert set(owners) == {"leakcheck"}


# -- upgrade, removal, purge ---------------------------------------------------------------

def test_upgrade_keeps_the_administrators_choices(fresh_root: DebRoot) -> None:
    root = fresh_root
    deb = str(root.debs["leakcheck"])
    root.run(["dpkg", "-i", deb])
    config = root.file("/etc/leakcheck/leakcheck.toml")
    config.write_text(config.read_text().replace('#interval = "15m"', 'interval = "5m"'))
    root.run(["systemctl", "disable", "leakcheck-agent.service"])
    root.sh(f"install -d -o leakcheck -m 0700 {STATE_DIR}/spool && echo '{{}}' > {STATE_DIR}/spool/kept.json")
    uid = root.run(["id", "-u", "leakcheck"]).stdout

    root.run(["dpkg", "-i", deb])  # same package again: the upgrade path of every script

    assert 'interval = "5m"' in config.read_text()
    assert not root.file("/etc/systemd/system/multi-user.target.wants/leakcheck-agent.service").exists()
    assert root.file(f"{STATE_DIR}/spool/kept.json").exists()
    assert root.run(["id", "-u", "leakcheck"]).stdout == uid
    assert root.dpkg_status("leakcheck") == "install ok installed"


def test_remove_keeps_configuration_and_purge_leaves_nothing(fresh_root: DebRoot) -> None:
    root = fresh_root
    before = snapshot(root.path)
    root.run(["dpkg", "-i", str(root.debs["leakcheck"])])
    # What a real installation accumulates: a token, a spooled report.
    root.sh("printf tok > /etc/leakcheck/token && "
            f"install -d -o leakcheck -m 0700 {STATE_DIR}/spool && echo '{{}}' > {STATE_DIR}/spool/r.json")

    root.run(["dpkg", "--remove", "leakcheck"])
    assert root.dpkg_status("leakcheck") == "deinstall ok config-files"
    assert root.file("/etc/leakcheck/leakcheck.toml").exists() and root.file("/etc/leakcheck/token").exists()
    assert root.file(f"{STATE_DIR}/spool/r.json").exists()
    assert not root.file("/usr/bin/leakcheck").exists() and not root.file("/opt/leakcheck").exists()
    assert root.run(["getent", "passwd", "leakcheck"], check=False).returncode == 0

    root.run(["dpkg", "--purge", "leakcheck"])
    assert root.dpkg_status("leakcheck") in ("not-installed", "unknown ok not-installed")
    after = snapshot(root.path)
    added = sorted(set(after) - set(before))
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert (added, gone, changed) == ([], [], []), f"left behind {added}, lost {gone}, changed {changed}"


# -- under systemd itself ---------------------------------------------------------------------

CHECK_SCRIPT = r"""#!/bin/sh
# Runs in the booted container once leakcheck-agent.service has started.
out=/root/unit-check.txt
for i in $(seq 240); do
    ls /var/lib/leakcheck/spool/*.json >/dev/null 2>&1 && break
    sleep 0.25
done
{
    systemctl show leakcheck-agent.service -p ActiveState -p SubState -p NRestarts
    pid=$(systemctl show -p MainPID --value leakcheck-agent.service)
    grep -E '^(Uid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/$pid/status | sed 's/:\t*/=/; s/\t/ /g'
    echo "token=$(stat -c '%U:%G %a' /etc/leakcheck/token)"
    systemctl stop leakcheck-agent.service
    systemctl show leakcheck-agent.service -p Result -p ExecMainStatus | sed 's/^/stop_/'
    rm -f /etc/leakcheck/token
    systemctl start leakcheck-run.service
    systemctl show leakcheck-run.service -p Result -p ExecMainStatus | sed 's/^/run_/'
} >$out 2>&1
journalctl --no-pager -u leakcheck-agent.service -u leakcheck-run.service >/root/unit-journal.txt 2>&1
systemctl poweroff --no-block
"""

CHECK_UNIT = """[Unit]
Description=packaging test: inspect leakcheck-agent.service, then power off
After=leakcheck-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/leakcheck-unit-check

[Install]
WantedBy=multi-user.target
"""


def test_agent_unit_under_systemd(fresh_root: DebRoot) -> None:
    """The installed, enabled unit started by systemd (PID 1 of a container
    sharing the test's private "laptop" network, VPN up): the agent runs with the
    unit's user, exactly two capabilities, no new privileges and its
    system-call filter; completes a run; stops cleanly. The timer's service
    succeeds on a leak (exit 1 is a finding, not a failure)."""
    root = fresh_root
    root.run(["dpkg", "-i", str(root.debs["leakcheck"])])
    config = root.file("/etc/leakcheck/leakcheck.toml")
    config.write_text(config.read_text().replace('#url = ""', 'url = "http://127.0.0.1:9"'))
    root.sh("printf tok > /etc/leakcheck/token && chmod 0600 /etc/leakcheck/token")
    script = root.file("/usr/local/sbin/leakcheck-unit-check")
    script.write_text(CHECK_SCRIPT)
    script.chmod(0o755)
    root.file("/etc/systemd/system/leakcheck-unit-check.service").write_text(CHECK_UNIT)
    root.file("/etc/systemd/system/multi-user.target.wants/leakcheck-unit-check.service").symlink_to(
        "/etc/systemd/system/leakcheck-unit-check.service")

    booted = subprocess.run(["bash", str(NSROOT), str(root.path), "--tunnel", "--boot"],
                            capture_output=True, text=True, timeout=240)
    result_file = root.file("/root/unit-check.txt")
    assert result_file.exists(), f"the container did not get to the check:\n{booted.stdout[-3000:]}\n{booted.stderr[-3000:]}"
    journal = root.file("/root/unit-journal.txt").read_text()
    result = dict(line.split("=", 1) for line in result_file.read_text().splitlines() if "=" in line)
    uid = root.run(["id", "-u", "leakcheck"]).stdout.strip()
    two = f"{(1 << 12) | (1 << 13):016x}"
    assert result["ActiveState"] == "active" and result["NRestarts"] == "0", (result, journal)
    assert result["Uid"].split() == [uid] * 4
    assert {result[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {two}
    assert result["NoNewPrivs"] == "1" and result["Seccomp"] == "2"
    assert result["token"] == "root:leakcheck 640"  # ExecStartPre=+ ran
    assert (result["stop_Result"], result["stop_ExecMainStatus"]) == ("success", "0"), journal
    # A leak found (exit 1) still counts as success for the unit.
    assert result["run_Result"] == "success" and "VERDICT: LEAK" in journal, journal

    spooled = sorted(root.file(f"{STATE_DIR}/spool").glob("*.json"))
    assert spooled, journal
    reports = [check_report(p.read_text()) for p in spooled]
    assert {r["verdict"] for r in reports} == {"leak"}, journal  # LocalNet: the LAN is public space
    assert {r["tunnel"]["state"] for r in reports} == {"up"}
    for report in reports:
        for probe in report["probes"]:
            assert probe["status"] != "error", probe
            if probe["status"] == "skip":
                skip_reason(probe)
    assert "Traceback" not in journal, journal
