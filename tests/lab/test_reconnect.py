"""The reconnect probe through the real CLI (`leakcheck run --json
--disruptive`) in the lab's laptop: a real nftables cut of the path to the
WireGuard server, real clients reacting to it (tests/lab/supervisor.py),
and the guarantee that a cut never outlives the run, even a killed one.

Short cuts and bounds keep every disruptive scenario to a few seconds:
cut 3 s, bound 5 s (the defaults are 10 s and 60 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from leakcheck.linux import nftcut
from leakcheck.report import rfc3339
from tests.lab import CANARY_V4, CANARY_V6, LAB_CONFIG, LAN_ROUTER, VPN_SERVER
from tests.lab.topology import REPO_ROOT, merge_config, poll, to_toml

EXIT = {"pass": 0, "warn": 0, "leak": 1, "error": 3}
CUT_S, BOUND_S = 3.0, 5.0


def agent_config(lab, **agent) -> dict:
    return {"agent": {"reconnect_cut": f"{CUT_S:g}s", "reconnect_bound": f"{BOUND_S:g}s",
                      "state_dir": str(lab.workdir / "state"), **agent}}


def run(lab, *args, config=None):
    result = lab.run_cli(*args, config=config or agent_config(lab))
    assert result.report is not None, f"no JSON report:\n{result}"
    assert result.returncode == EXIT[result.report["verdict"]], str(result)
    return result.report


def reconnect(report) -> dict:
    (found,) = [p for p in report["probes"] if p["probe"] == "reconnect"]
    assert found["error"] is None, found
    return found


def finding(report, finding_id) -> dict:
    hits = [f for f in reconnect(report)["findings"] if f["id"] == finding_id]
    assert hits, f"{finding_id} not in {ids(report)}"
    return hits[0]


def ids(report) -> set[str]:
    return {f["id"] for p in report["probes"] for f in p["findings"]}


def outcomes(evidence) -> set[str]:
    """Every canary outcome seen while the tunnel was down."""
    return {o for span in evidence["looks"] for o in span["outcomes"].values()}


def cut_table_present(lab) -> bool:
    return nftcut.TABLE in lab.exec(["nft", "list", "tables"]).stdout


def footprint(lab) -> dict:
    """What a run must leave as it found it: nftables, rules, routes, IP sysctls."""
    sysctls = {}
    with lab.in_netns("lap"):
        for root in (Path("/proc/sys/net/ipv4/conf"), Path("/proc/sys/net/ipv6/conf")):
            for path in sorted(root.glob("*/*")):
                try:
                    sysctls[str(path)] = path.read_text().strip()
                except OSError:
                    pass  # write-only or unreadable entries (stable_secret)
        sysctls["ip_forward"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    return {"nft": lab.exec(["nft", "list", "ruleset"]).stdout,
            "rules": [lab.ip_json(f"-{v} rule show") for v in (4, 6)],
            "routes": [lab.ip_json(f"-{v} route show table all") for v in (4, 6)],
            "sysctls": sysctls}


# -- a tunnel that comes back, and nothing left behind --------------------------------

@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_supervised_tunnel_comes_back_and_the_cut_leaves_nothing(lab):
    before = footprint(lab)
    # A cut as an old kernel (no owner flag) makes it: only the element timeouts guard it.
    started = time.monotonic()
    with lab.in_netns("lap"):
        old = nftcut.cut([VPN_SERVER], 2.0, backend=nftcut.NftCommand())
    assert not old.owner and cut_table_present(lab)
    assert lab.trace_udp(CANARY_V4, timeout=0.5).path == "lost", "the cut did not hold traffic back"
    poll(lambda: lab.trace_udp(CANARY_V4, timeout=0.5).path == "tunnel", 6.0,
         "the kernel to expire the cut's elements")
    assert time.monotonic() - started < old.element_timeout_s + 1.5
    assert cut_table_present(lab), "an expired cut leaves an empty, inert table for the next run"

    report = run(lab, "--disruptive")
    assert report["verdict"] == "pass", report
    assert reconnect(report)["status"] == "pass"
    back = finding(report, "reconnect.reconnected")
    evidence = back["evidence"]
    assert 0 < evidence["reconnect_s"] < 1.5, evidence
    assert evidence["decided_by"] in ("reply-through-tunnel", "wireguard-handshake")
    assert evidence["routes"] == {CANARY_V4: "wg0", CANARY_V6: "wg0"}
    assert evidence["endpoints"] == [VPN_SERVER] and evidence["cut_s"] == CUT_S
    assert abs(evidence["held_s"] - CUT_S) < 0.5
    assert outcomes(evidence) == {"into-dead-tunnel"}  # routes stayed: held in the dead tunnel, no leak
    assert "owner flag" in evidence["cut_safety"]
    assert evidence["removed_leftover_table"] is True
    assert "reconnect.leak-while-down" not in ids(report)
    assert footprint(lab) == before


# -- kill switch or not, while a client that fails open is down ------------------------

@pytest.mark.parametrize("lab", ["wg-quick+fail-open-client"], indirect=True)
def test_client_that_fails_open_leaks_while_down(lab):
    report = run(lab, "--disruptive", "--probe", "reconnect")
    assert report["verdict"] == "leak"
    assert reconnect(report)["status"] == "leak"
    leak = finding(report, "reconnect.leak-while-down")
    evidence = leak["evidence"]
    assert leak["severity"] == "critical"
    assert evidence["method"] == "observed" and evidence["observed"]["seen_in_clear_on"] == ["eth0"]
    assert evidence["interface"] == "eth0" and evidence["route"].startswith(f"default via {LAN_ROUTER} dev eth0")
    assert evidence["phase"] == "cut" and 0 < evidence["first_leak_at_s"] < CUT_S
    assert set(evidence["destinations"]) == {CANARY_V4, CANARY_V6}
    # it does come back: the client's 4 s retry, counted from its loss ~1 s into the cut
    back = finding(report, "reconnect.reconnected")["evidence"]
    assert 0.8 < back["reconnect_s"] < 4.0, back
    assert "tunnel lost" in lab.supervisor_log()


@pytest.mark.parametrize("lab", ["wg-quick+fail-open-client+kill-switch"], indirect=True)
def test_kill_switch_blocks_everything_while_down(lab):
    report = run(lab, "--disruptive")
    assert report["verdict"] == "pass", report
    assert reconnect(report)["status"] == "pass"
    back = finding(report, "reconnect.reconnected")
    evidence = back["evidence"]
    assert "blocked-by-firewall" in outcomes(evidence) and "clear" not in outcomes(evidence)
    assert "kill switch" in back["summary"]
    assert 0.8 < evidence["reconnect_s"] < 4.0, evidence
    assert "reconnect.leak-while-down" not in ids(report)


# -- a tunnel that stays down ----------------------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick+give-up-client"], indirect=True)
def test_client_that_gives_up_stays_down_and_leaks(lab):
    report = run(lab, "--disruptive", "--probe", "reconnect")
    assert report["verdict"] == "leak"
    assert reconnect(report)["status"] == "leak"
    down = finding(report, "reconnect.no-auto-reconnect")
    evidence = down["evidence"]
    assert down["severity"] == "high"
    assert evidence["waited_s"] == BOUND_S and evidence["tunnel_interfaces_present"] == []
    assert evidence["final_routes"] == {CANARY_V4: "eth0", CANARY_V6: "eth0"}
    assert evidence["looks"][-1]["phase"] == "after-bound"
    assert finding(report, "reconnect.leak-while-down")["evidence"]["interface"] == "eth0"
    assert "reconnect.reconnected" not in ids(report)


@pytest.mark.parametrize("lab", ["wg-quick+give-up-client+kill-switch"], indirect=True)
def test_tunnel_that_stays_down_behind_a_kill_switch_is_a_warning(lab):
    report = run(lab, "--disruptive", "--probe", "reconnect", config=agent_config(lab, reconnect_bound="3s"))
    assert report["verdict"] == "warn"
    assert reconnect(report)["status"] == "warn"
    evidence = finding(report, "reconnect.no-auto-reconnect")["evidence"]
    assert evidence["waited_s"] == 3.0
    assert "clear" not in outcomes(evidence) and "blocked-by-firewall" in outcomes(evidence)
    assert "reconnect.leak-while-down" not in ids(report)


# -- SIGKILL in the middle of the cut --------------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_sigkill_during_the_cut_the_kernel_lifts_it(lab):
    before = footprint(lab)
    path = lab.workdir / "sigkill.toml"
    path.write_text(to_toml(merge_config(LAB_CONFIG, agent_config(lab, reconnect_cut="20s"))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH")))))
    proc = subprocess.Popen(["ip", "netns", "exec", lab.lap, sys.executable, "-m", "leakcheck", "run", "--json",
                             "--disruptive", "--probe", "reconnect", "--config", str(path)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        poll(lambda: proc.poll() is not None or cut_table_present(lab), 20.0, "the cut to be in place")
        assert proc.poll() is None, proc.communicate()
        assert lab.trace_udp(CANARY_V4, timeout=0.5).path == "lost", "the cut did not hold traffic back"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        killed = time.monotonic()
        poll(lambda: not cut_table_present(lab), 20.0 + nftcut.LIFT_GRACE_S, "the kernel to lift the cut")
        lifted_s = time.monotonic() - killed
        # The owner flag: the table goes with the process, long before the 21 s element timeout.
        assert lifted_s < 2.0, lifted_s
        poll(lambda: lab.trace_udp(CANARY_V4, timeout=0.5).path == "tunnel", 5.0,
             "traffic to pass through the tunnel again")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert footprint(lab) == before


# -- the passive half: history and the skip note ---------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick+tunnel-down"], indirect=True)
def test_history_shows_outages_and_one_that_never_ended(lab):
    state = lab.workdir / "state"
    state.mkdir(exist_ok=True)
    def ago(seconds: float) -> str:
        return rfc3339(datetime.now(timezone.utc) - timedelta(seconds=seconds))
    history = [
        {"interface": "wg0", "down_at": ago(3600), "up_at": ago(3597.5), "outage_s": 2.5},
        {"interface": "wg0", "down_at": ago(1800), "up_at": ago(1705), "outage_s": 95.0},
        {"interface": "wg0", "down_at": ago(600), "up_at": None, "outage_s": None},
    ]
    (state / "tunnel-history.json").write_text(json.dumps(history))
    report = run(lab, "--probe", "reconnect", config=agent_config(lab, reconnect_bound="60s"))
    assert reconnect(report)["status"] == "warn"
    notes = finding(report, "reconnect.tunnel-history")["evidence"]
    assert notes["outages_recorded"] == 3 and notes["longest_outage_s"] == 95.0
    assert notes["outages_over_bound"] == 1 and notes["open_outage"] == history[-1]
    stuck = finding(report, "reconnect.no-auto-reconnect")["evidence"]
    assert stuck["method"] == "history" and stuck["down_at"] == history[-1]["down_at"]
    assert 600 <= stuck["down_for_s"] < 700
    skipped = finding(report, "reconnect.cut-test-skipped")["evidence"]["reason"]
    assert "disruptive test not enabled" in skipped
