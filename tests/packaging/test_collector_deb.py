"""Both packages in one clean root, booted with its own systemd: the
collector as leakcheck-collector.service runs it (its user, no
capabilities, its credentials and system-call filter), the device enrolled,
a report uploaded by leakcheck-run.service under the agent's sandbox and
read back with an analyst token; then both purged, nothing left."""

from __future__ import annotations

import json
import subprocess

from tests.packaging.debroot import NSROOT, DebRoot, snapshot

CHECK_SCRIPT = r"""#!/bin/sh
# Runs in the booted container after leakcheck-collector.service started.
exec >/root/collector-check.txt 2>&1
secret=/etc/leakcheck-collector/enroll-secret
healthz=down
for i in $(seq 240); do
    if /opt/leakcheck/venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8443/healthz', timeout=1)" 2>/dev/null; then
        healthz=up
        break
    fi
    sleep 0.25
done
echo "healthz=$healthz"
systemctl show leakcheck-collector.service -p ActiveState -p NRestarts | sed 's/^/started_/'
pid=$(systemctl show -p MainPID --value leakcheck-collector.service)
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/$pid/status | sed 's/:\t*/=/'
echo "collector_user=$(stat -c %U /proc/$pid)"
leakcheck enroll --secret-file $secret
systemctl start leakcheck-run.service
systemctl show leakcheck-run.service -p Result | sed 's/^/run_/'
leakcheck-collector token create --label packaging-test >/tmp/analyst
echo "devices=$(leakcheck fleet devices --collector http://127.0.0.1:8443 --token-file /tmp/analyst --format json | tr -d '\n')"
systemctl stop leakcheck-collector.service
systemctl show leakcheck-collector.service -p Result -p NRestarts | sed 's/^/collector_/'
journalctl --no-pager -u leakcheck-collector.service -u leakcheck-run.service >/root/collector-journal.txt 2>&1
systemctl poweroff --no-block
"""

CHECK_UNIT = """[Unit]
Description=packaging test: collector and agent end to end, then power off
After=leakcheck-collector.service leakcheck-agent.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/leakcheck-collector-check

[Install]
WantedBy=multi-user.target
"""


def test_collector_and_agent_packages_under_systemd(fresh_root: DebRoot) -> None:
    root = fresh_root
    before = snapshot(root.path)
    root.run(["dpkg", "-i", str(root.debs["leakcheck"]), str(root.debs["leakcheck-collector"])])
    assert root.run(["stat", "-c", "%U %a", "/etc/leakcheck-collector/enroll-secret"]).stdout.strip() == "root 600"
    config = root.file("/etc/leakcheck/leakcheck.toml")
    config.write_text(config.read_text().replace('#url = ""', 'url = "http://127.0.0.1:8443"'))
    script = root.file("/usr/local/sbin/leakcheck-collector-check")
    script.write_text(CHECK_SCRIPT)
    script.chmod(0o755)
    unit = root.file("/etc/systemd/system/leakcheck-collector-check.service")
    unit.write_text(CHECK_UNIT)
    root.file("/etc/systemd/system/multi-user.target.wants/leakcheck-collector-check.service").symlink_to(
        "/etc/systemd/system/leakcheck-collector-check.service")

    booted = subprocess.run(["bash", str(NSROOT), str(root.path), "--laptop", "--boot"],
                            capture_output=True, text=True, timeout=300)
    output = root.file("/root/collector-check.txt")
    assert output.exists(), f"the container did not get to the check:\n{booted.stdout[-3000:]}\n{booted.stderr[-3000:]}"
    journal_file = root.file("/root/collector-journal.txt")
    journal = journal_file.read_text() if journal_file.exists() else ""
    text = output.read_text()
    result = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line.split("=")[0])
    assert result.get("healthz") == "up", (text, journal)
    assert result["started_NRestarts"] == "0", (text, journal)
    assert result.get("collector_user") == "leakcheck-collector", (text, journal)
    assert result["CapEff"] == result["CapBnd"] == "0" * 16
    assert result["NoNewPrivs"] == "1" and result["Seccomp"] == "2"
    assert result["run_Result"] == "success", (text, journal)
    devices = json.loads(result["devices"])
    assert len(devices) == 1 and devices[0]["verdict"] == "leak", (devices, text, journal)
    assert (result["collector_Result"], result["collector_NRestarts"]) == ("success", "0"), journal
    assert "Traceback" not in journal, journal

    # The test's own files are not the packages' to clean up.
    for path in (script, unit, root.file("/etc/systemd/system/multi-user.target.wants/leakcheck-collector-check.service"),
                 output, journal_file):
        path.unlink(missing_ok=True)
    root.run(["dpkg", "--purge", "leakcheck-collector", "leakcheck"])
    after = snapshot(root.path)
    # Booting leaves the system's own traces (timer stamps, journal, random
    # seed); none may be leakcheck's, and the accounts must be as before.
    added = sorted(p for p in set(after) - set(before) if "leakcheck" in p)
    gone = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert (added, gone, changed) == ([], [], []), f"left behind {added}, lost {gone}, changed {changed}"
