"""The macOS LaunchDaemon and the Windows Scheduled Task: parsed as their
platforms parse them (plist, Task Scheduler XML), checked for the command
line, the schedule, the network-change trigger and restart on failure."""

from __future__ import annotations

import plistlib
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.packaging.debroot import REPO

PLIST = REPO / "packaging" / "macos" / "com.leakcheck.agent.plist"
TASK = REPO / "packaging" / "windows" / "leakcheck-task.xml"
NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def iso_minutes(duration: str) -> int:
    """'PT15M' -> 15, 'PT1H' -> 60 (the subset Task Scheduler files use)."""
    import re

    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?", duration)
    assert match, duration
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 60 + minutes + seconds // 60


# -- macOS -------------------------------------------------------------------------------------

def load_plist() -> dict:
    with PLIST.open("rb") as handle:
        return plistlib.load(handle)


def test_launchd_runs_leakcheck_as_root_with_upload() -> None:
    job = load_plist()
    assert job["Label"] == PLIST.name.removesuffix(".plist")
    assert job["ProgramArguments"] == ["/opt/leakcheck/venv/bin/leakcheck", "run", "--upload",
                                       "--trigger", "schedule"]
    assert job.get("UserName", "root") == "root" and job["RunAtLoad"] is True


def test_launchd_calendar_interval_every_15_minutes() -> None:
    # StartCalendarInterval (not StartInterval): missed runs during sleep coalesce into one.
    entries = load_plist()["StartCalendarInterval"]
    assert "StartInterval" not in load_plist()
    assert sorted(e["Minute"] for e in entries) == [0, 15, 30, 45]
    assert all(set(e) == {"Minute"} for e in entries)


def test_launchd_restarts_crashes_not_leaks_and_is_throttled() -> None:
    job = load_plist()
    # Exit status 1 is a finding ("leak"), so only a crash is relaunched.
    assert job["KeepAlive"] == {"Crashed": True}
    assert 30 <= job["ThrottleInterval"] <= 300


def test_launchd_network_change_trigger() -> None:
    paths = load_plist()["WatchPaths"]
    assert "/private/var/run/resolv.conf" in paths


def test_macos_postinstall_is_valid_shell() -> None:
    subprocess.run(["sh", "-n", str(PLIST.with_name("postinstall"))], check=True)
    text = PLIST.with_name("postinstall").read_text()
    assert f"launchctl bootstrap system \"$PLIST\"" in text and PLIST.name in text


# -- Windows -----------------------------------------------------------------------------------

def task() -> ET.Element:
    return ET.parse(TASK).getroot()


def text(element: ET.Element, path: str) -> str:
    found = element.find(path, NS)
    assert found is not None and found.text is not None, path
    return found.text.strip()


def test_task_runs_leakcheck_as_system() -> None:
    root = task()
    assert root.tag == "{%s}Task" % NS["t"]
    principal = root.find("t:Principals/t:Principal", NS)
    assert principal is not None and text(principal, "t:UserId") == "S-1-5-18"  # LocalSystem
    actions = root.find("t:Actions", NS)
    assert actions is not None and actions.get("Context") == principal.get("id")
    assert text(root, "t:Actions/t:Exec/t:Command").strip('"').endswith("\\leakcheck.exe")
    arguments = shlex.split(text(root, "t:Actions/t:Exec/t:Arguments"), posix=False)
    assert arguments[:4] == ["run", "--upload", "--trigger", "schedule"]
    assert arguments[4:] == ["--config", r'"C:\ProgramData\leakcheck\leakcheck.toml"']


def test_task_every_15_minutes_with_catch_up() -> None:
    root = task()
    calendar = root.find("t:Triggers/t:CalendarTrigger", NS)
    assert calendar is not None
    assert iso_minutes(text(calendar, "t:Repetition/t:Interval")) == 15
    assert text(calendar, "t:ScheduleByDay/t:DaysInterval") == "1"
    assert iso_minutes(text(calendar, "t:RandomDelay")) <= 5
    assert text(root, "t:Settings/t:StartWhenAvailable") == "true"
    assert text(root, "t:Settings/t:MultipleInstancesPolicy") == "IgnoreNew"
    assert root.find("t:Triggers/t:BootTrigger", NS) is not None


def test_task_restarts_on_failure() -> None:
    restart = task().find("t:Settings/t:RestartOnFailure", NS)
    assert restart is not None
    assert int(text(restart, "t:Count")) >= 1 and iso_minutes(text(restart, "t:Interval")) >= 1


def test_task_network_change_trigger() -> None:
    subscription = text(task(), "t:Triggers/t:EventTrigger/t:Subscription")
    query = ET.fromstring(subscription)  # itself an XML event query
    select = query.find("Query/Select")
    assert select is not None and select.get("Path") == "Microsoft-Windows-NetworkProfile/Operational"
    assert "EventID=10000" in (select.text or "") and "EventID=10001" in (select.text or "")


def test_intune_script_registers_the_task_file() -> None:
    script = TASK.with_name("install-task.ps1").read_text()
    assert TASK.name in script and "Register-ScheduledTask" in script and "-Xml" in script
