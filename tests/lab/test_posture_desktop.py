"""Posture against real NetworkManager (the desktop container of
tests/lab/desktop.py): the agent runs inside the container and reads the
profiles NetworkManager itself loaded.

Each case states NetworkManager's own view first (`nmcli -g` of the profile
it loaded), then asserts leakcheck's:
- the OpenVPN profile with connection.autoconnect=no, listed nowhere as a
  secondary: posture-autoconnect.manual naming the profile and its file;
- the twin with autoconnect=yes: posture-autoconnect.automatic;
- autoconnect=no but the Wi-Fi profile lists it in connection.secondaries:
  automatic, through the Wi-Fi profile;
- NetworkManager's connectivity check as NetworkManager reports its own
  configuration (`NetworkManager --print-config`), and the profile with no
  connection.permissions reported as one any user may disconnect (Debian's
  NetworkManager policy: network-control allow_active=yes; its shipped
  polkit rule touches only settings.modify.system).
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.lab import LAB_CONFIG
from tests.lab.desktop import DesktopLab, vpn_profile, wifi_profile
from tests.lab.reports import EXIT
from tests.lab.test_desktop import desktop, probe, reset  # noqa: F401  (desktop: the module fixture)
from tests.lab.topology import merge_config, to_toml

CORP_UUID = "0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
PROFILE_FILE = "/etc/NetworkManager/system-connections/corp.nmconnection"
# the NCSC defaults, which the lab's leak scenarios turn off
CONFIG = to_toml(merge_config(LAB_CONFIG, {"posture": {"require_lockdown": True, "require_autoconnect": True,
                                                       "require_captive_helper": True}}))
POSTURE = ("--passive", "--probe", "posture-autoconnect", "--probe", "posture-forced", "--probe", "posture-captive")


@pytest.fixture
def nm(desktop: DesktopLab) -> Iterator[DesktopLab]:  # noqa: F811
    reset(desktop)
    yield desktop
    # never leave an autoconnecting VPN profile behind for the next test
    desktop.add_connection("corp", vpn_profile())
    desktop.add_connection("wifi", wifi_profile())
    desktop.nmcli("connection", "reload")


def load(lab: DesktopLab, *, autoconnect: bool, secondary: bool = False) -> None:
    lab.add_connection("corp", vpn_profile().replace("autoconnect=false", f"autoconnect={str(autoconnect).lower()}"))
    wifi = wifi_profile()
    if secondary:
        wifi = wifi.replace("autoconnect=true\n", f"autoconnect=true\nsecondaries={CORP_UUID};\n")
    lab.add_connection("wifi", wifi)
    lab.nmcli("connection", "reload")


def cli(lab: DesktopLab, *args: str) -> dict:
    result = lab.run_cli(*args, config=CONFIG)
    assert result.report is not None, f"no JSON report:\n{result}"
    assert result.returncode == EXIT[result.report["verdict"]], str(result)
    return result.report


def nm_says(lab: DesktopLab, field: str, profile: str) -> str:
    return lab.inside(["nmcli", "-g", field, "connection", "show", profile]).stdout.strip()


def test_vpn_profile_without_autoconnect_is_manual(nm: DesktopLab) -> None:
    load(nm, autoconnect=False)
    assert nm_says(nm, "connection.autoconnect", "corp") == "no"
    assert nm_says(nm, "connection.secondaries", "wifi") == ""
    report = cli(nm, *POSTURE)
    auto = probe(report, "posture-autoconnect")
    assert auto["status"] == "warn" and [f["id"] for f in auto["findings"]] == ["posture-autoconnect.manual"], auto
    manual = auto["findings"][0]["evidence"]["manual"]
    assert [(m["profile"]["id"], m["profile"]["file"], m["profile"]["autoconnect"]) for m in manual] == \
        [("corp", PROFILE_FILE, False)]


def test_vpn_profile_with_autoconnect_is_automatic(nm: DesktopLab) -> None:
    load(nm, autoconnect=True)
    assert nm_says(nm, "connection.autoconnect", "corp") == "yes"
    auto = probe(cli(nm, *POSTURE), "posture-autoconnect")
    assert auto["status"] == "pass" and [f["id"] for f in auto["findings"]] == ["posture-autoconnect.automatic"], auto
    assert "connection.autoconnect=yes" in auto["findings"][0]["summary"]


def test_vpn_as_secondary_of_the_wifi_is_automatic(nm: DesktopLab) -> None:
    load(nm, autoconnect=False, secondary=True)
    assert nm_says(nm, "connection.secondaries", "wifi") == CORP_UUID
    auto = probe(cli(nm, *POSTURE), "posture-autoconnect")
    assert [f["id"] for f in auto["findings"]] == ["posture-autoconnect.automatic"], auto
    assert "with 'wifi'" in auto["findings"][0]["summary"]


def test_connectivity_check_and_who_may_disconnect_as_nm_has_them(nm: DesktopLab) -> None:
    load(nm, autoconnect=False)
    config = nm.inside(["NetworkManager", "--print-config"]).stdout
    section = config.split("[connectivity]", 1)[1].split("\n[", 1)[0] if "[connectivity]" in config else ""
    uri = next((line.split("=", 1)[1].strip() for line in section.splitlines()
                if line.strip().startswith("uri=")), "")
    enabled = "enabled=false" not in section
    report = cli(nm, *POSTURE)
    captive = probe(report, "posture-captive")
    (found,) = captive["findings"]
    if uri and enabled:
        assert found["id"] == "posture-captive.helper" and uri in found["summary"], (config, found)
    else:
        assert found["id"] == "posture-captive.no-helper", (config, found)
    assert nm_says(nm, "connection.permissions", "corp") == ""
    forced = probe(report, "posture-forced")
    user = [f for f in forced["findings"] if f["id"] == "posture-forced.user-can-disable"]
    assert user and user[0]["evidence"]["user_can_disable"]["profiles"][0]["id"] == "corp", \
        [(f["id"], f["evidence"].get("user_can_disable")) for f in forced["findings"]]
    assert user[0]["evidence"]["user_can_disable"]["polkit"]["allow_active"] == "yes"
