"""The reconnect probe without a network: the nftables cut against a fake
backend, the live-counter logic, the passive half on recorded state and
history, the active half's gates and how an outcome becomes findings."""

from __future__ import annotations

import ipaddress
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path as FsPath

import pytest

from leakcheck import config, disrupt
from leakcheck.active import Observation
from leakcheck.active import Probe as ActivePacket
from leakcheck.errors import ConfigError
from leakcheck.linux import nftcut
from leakcheck.netstate import Link, NetState, WireGuardInfo, XfrmPolicy, XfrmTemplate
from leakcheck.oracle import Egress, Path
from leakcheck.probe import ProbeContext, validate_probe
from leakcheck.report import Status, rfc3339, status_from_findings
from leakcheck.tunnel import Tunnel
from leakcheck.probes.reconnect import ReconnectProbe

CANARY = "198.51.100.1"
SERVER = "203.0.113.1"


# ---------------------------------------------------------------- the cut

class FakeNft:
    """Records commands; `fail` maps a substring of a command to the error it raises."""

    owner_capable = True

    def __init__(self, fail: dict[str, str] | None = None, owner_capable: bool = True):
        self.commands: list[str] = []
        self.fail = dict(fail or {})
        self.closed = False
        self.owner_capable = owner_capable

    def run(self, commands: str) -> str:
        self.commands.append(commands)
        for needle, error in list(self.fail.items()):
            if needle in commands:
                raise nftcut.CutError(error)
        return ""

    def close(self) -> None:
        self.closed = True


NO_TABLE = {"delete table": "Error: Could not process rule: No such file or directory"}


def test_ruleset_drops_both_ways_with_expiring_elements():
    text = nftcut.ruleset([SERVER, "2001:db8:2::1"], 4.5, owner=True)
    assert f"table inet {nftcut.TABLE} {{" in text and "flags owner" in text
    assert "ip daddr @servers4 drop" in text and "ip saddr @servers4 drop" in text
    assert "ip6 daddr @servers6 drop" in text and "ip6 saddr @servers6 drop" in text
    assert "hook output" in text and "hook input" in text
    assert f"add element inet {nftcut.TABLE} servers4 {{ {SERVER} timeout 4500ms }}" in text
    assert "servers6 { 2001:db8:2::1 timeout 4500ms }" in text
    assert "flags owner" not in nftcut.ruleset([SERVER], 1, owner=False)
    assert "servers6 {" in nftcut.ruleset([SERVER], 1, owner=False)  # the set exists, no element added


def test_cut_removes_a_leftover_and_lifts_by_deleting_the_table():
    backend = FakeNft()
    cut = nftcut.cut([SERVER, SERVER], 3.0, backend=backend)
    assert cut.removed_leftover and cut.owner and cut.addresses == (SERVER,)
    assert cut.element_timeout_s == 3.0 + nftcut.LIFT_GRACE_S
    assert "owner flag" in cut.safety
    assert backend.commands[0].startswith("delete table") and "flags owner" in backend.commands[1]
    cut.lift()
    cut.lift()  # idempotent
    assert backend.commands[-1] == f"delete table inet {nftcut.TABLE}\n" and len(backend.commands) == 3
    assert backend.closed and cut.lifted_at is not None


def test_cut_without_a_leftover_and_owner_flag_refused_falls_back_to_timeouts():
    backend = FakeNft(fail={**NO_TABLE, "flags owner": "Error: Could not process rule: Operation not supported"})
    cut = nftcut.cut([SERVER], 2.0, backend=backend)
    assert not cut.removed_leftover and not cut.owner
    assert "flags owner" not in backend.commands[-1] and "timeout 3000ms" in backend.commands[-1]
    assert "removed at the next run" in cut.safety


def test_cut_held_by_a_live_process_is_busy():
    backend = FakeNft(fail={"delete table": "Error: Could not process rule: Operation not permitted"})
    with pytest.raises(nftcut.CutBusy):
        nftcut.cut([SERVER], 2.0, backend=backend)
    assert backend.closed


def test_cut_failure_closes_the_backend_and_lift_errors_are_kept():
    backend = FakeNft(fail={**NO_TABLE, "table inet leakcheck_cut {": "Error: permission denied"},
                      owner_capable=False)
    with pytest.raises(nftcut.CutError):
        nftcut.cut([SERVER], 2.0, backend=backend)
    assert backend.closed
    with pytest.raises(nftcut.CutError):
        nftcut.cut([], 2.0, backend=FakeNft())
    backend = FakeNft(fail=NO_TABLE)
    cut = nftcut.cut([SERVER], 2.0, backend=backend)
    backend.fail = {"delete table": "Error: netlink gone"}
    cut.lift()
    assert cut.lift_error == "Error: netlink gone" and backend.closed


# ---------------------------------------------------------------- live counters and looks

def test_received_since_counts_a_recreated_interface_from_zero():
    before = disrupt.Pulse(rx={"wg0": (7, 100)}, handshake=None)
    assert disrupt.received_since(before, disrupt.Pulse(rx={"wg0": (7, 100)}, handshake=None)) == []
    assert disrupt.received_since(before, disrupt.Pulse(rx={"wg0": (7, 101)}, handshake=None)) == ["wg0"]
    assert disrupt.received_since(before, disrupt.Pulse(rx={"wg0": (9, 3)}, handshake=None)) == ["wg0"]
    assert disrupt.received_since(before, disrupt.Pulse(rx={}, handshake=None)) == []


def canary_look(outcome: str) -> disrupt.CanaryLook:
    dst = ipaddress.ip_address(CANARY)
    obs = Observation(ActivePacket("udp", CANARY, 33434))
    if outcome == "clear":
        obs.clear_on = ["eth0"]
        return disrupt.CanaryLook(Egress(dst, Path.CLEAR, interface="eth0", gateway="100.64.0.1"), obs,
                                  True, "observed")
    if outcome == "blocked":
        obs.send_error = "PermissionError: Operation not permitted"
        return disrupt.CanaryLook(Egress(dst, Path.CLEAR, interface="eth0"), obs, False, "observed")
    obs.tunnel_on = ["wg0"]
    return disrupt.CanaryLook(Egress(dst, Path.TUNNEL, interface="wg0"), obs, False, "observed")


def test_canary_outcomes_and_spans():
    assert canary_look("clear").outcome == "clear"
    assert canary_look("blocked").outcome == "blocked-by-firewall"
    assert canary_look("tunnel").outcome == "into-dead-tunnel"
    looks = [disrupt.Look(0.5, "cut", "up", [canary_look("tunnel")]),
             disrupt.Look(1.0, "cut", "up", [canary_look("tunnel")]),
             disrupt.Look(1.5, "cut", "down", [canary_look("clear")])]
    spans = disrupt.summarize(looks)
    assert [(s["from_s"], s["to_s"], s["looks"]) for s in spans] == [(0.5, 1.0, 2), (1.5, 1.5, 1)]
    assert spans[1]["outcomes"] == {CANARY: "clear"} and spans[1]["tunnel_state"] == "down"


# ---------------------------------------------------------------- the probe

class FakeOracle:
    """Answers egress questions from a table: destination -> (path, interface)."""

    def __init__(self, paths: dict[str, tuple[Path, str]]):
        self.paths = paths

    def query(self, dst, **_):
        return ipaddress.ip_address(dst)

    def egress_many(self, queries, explain=True):
        return [Egress(q, *self.paths.get(str(q), (Path.CLEAR, "eth0"))) for q in queries]


def make_ctx(tmp_path, *, tunnel_up=True, handshake_age=5, history=None, disruptive=False, is_root=True,
             active=False, trigger="manual", endpoints=(SERVER,), agent=None, paths=None):
    values = {"agent": {"state_dir": str(tmp_path), **(agent or {})},
              "canaries": {"ipv4": [CANARY], "ipv6": []}}
    if history is not None:
        (tmp_path / "tunnel-history.json").write_text(json.dumps(history))
    links = (Link(1, "eth0", "veth", True, "UP"),)
    wireguard = ()
    if tunnel_up:
        links += (Link(2, "wg0", "wireguard", True, "UNKNOWN"),)
        stamp = int(time.time()) - handshake_age if handshake_age is not None else None
        wireguard = (WireGuardInfo("wg0", 51820, tuple(endpoints), ("0.0.0.0/0",), stamp),)
    state = NetState(links=links, wireguard=wireguard)
    tunnel = Tunnel("up", "wireguard", ("wg0",)) if tunnel_up else Tunnel("absent", "none", ())
    oracle = FakeOracle(paths if paths is not None else ({CANARY: (Path.TUNNEL, "wg0")} if tunnel_up else {}))
    return ProbeContext(config=config.from_mapping(values), state=state, tunnel=tunnel, oracle=oracle,
                        is_root=is_root, disruptive=disruptive, trigger=trigger, active=active)


def by_id(findings):
    return {f.id: f for f in findings}


def ago(seconds: float) -> str:
    return rfc3339(datetime.now(timezone.utc) - timedelta(seconds=seconds))


def test_probe_metadata_is_valid():
    validate_probe(ReconnectProbe)
    # ordered after every other probe; the passive half always runs, the cut gates itself
    assert ReconnectProbe.disruptive and ReconnectProbe.passive_half


def test_default_run_passes_with_history_and_says_why_no_cut(tmp_path):
    history = [{"interface": "wg0", "down_at": ago(100), "up_at": ago(96), "outage_s": 4.0},
               {"interface": "wg0", "down_at": ago(50), "up_at": ago(48.5), "outage_s": 1.5},
               "garbage", {"interface": "wg0"}]
    findings = ReconnectProbe().run(make_ctx(tmp_path, history=history))
    found = by_id(findings)
    assert set(found) == {"reconnect.tunnel-history", "reconnect.cut-test-skipped"}
    assert status_from_findings(findings) is Status.PASS
    notes = found["reconnect.tunnel-history"].evidence
    assert notes["outages_recorded"] == 2 and notes["longest_outage_s"] == 4.0 and notes["open_outage"] is None
    assert notes["latest_handshake"]["wg0"]["age_s"] in (5, 6)
    assert "longest lasted 4 s" in found["reconnect.tunnel-history"].summary
    assert "disruptive test not enabled" in found["reconnect.cut-test-skipped"].evidence["reason"]


def test_open_outage_older_than_the_bound_with_no_tunnel_is_no_auto_reconnect(tmp_path):
    history = [{"interface": "wg0", "down_at": ago(120), "up_at": None, "outage_s": None}]
    found = by_id(ReconnectProbe().run(make_ctx(tmp_path, tunnel_up=False, history=history)))
    stuck = found["reconnect.no-auto-reconnect"]
    assert stuck.evidence["method"] == "history" and 119 <= stuck.evidence["down_for_s"] < 130
    assert status_from_findings(list(found.values())) is Status.WARN
    # within the bound, or with the tunnel back up: nothing to say
    young = [{"interface": "wg0", "down_at": ago(10), "up_at": None, "outage_s": None}]
    assert "reconnect.no-auto-reconnect" not in by_id(ReconnectProbe().run(
        make_ctx(tmp_path, tunnel_up=False, history=young)))
    assert "reconnect.no-auto-reconnect" not in by_id(ReconnectProbe().run(make_ctx(tmp_path, history=history)))


def test_stale_handshake_without_test_packets_is_only_a_note(tmp_path):
    found = by_id(ReconnectProbe().run(make_ctx(tmp_path, handshake_age=600)))
    stale = found["reconnect.stale-handshake"]
    assert stale.evidence["method"] == "inferred" and stale.evidence["age_s"] in (600, 601)
    assert status_from_findings(list(found.values())) is Status.PASS
    never = by_id(ReconnectProbe().run(make_ctx(tmp_path, handshake_age=None)))["reconnect.stale-handshake"]
    assert never.evidence["age_s"] is None and "never" in never.summary


def test_stale_handshake_confirmed_by_test_packets_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(ReconnectProbe, "_revive", lambda self, ctx, name: False)
    found = by_id(ReconnectProbe().run(make_ctx(tmp_path, handshake_age=600)))
    assert found["reconnect.stale-handshake"].evidence["method"] == "observed"
    assert status_from_findings(list(found.values())) is Status.WARN
    monkeypatch.setattr(ReconnectProbe, "_revive", lambda self, ctx, name: True)
    assert "reconnect.stale-handshake" not in by_id(ReconnectProbe().run(make_ctx(tmp_path, handshake_age=600)))


@pytest.mark.parametrize("kwargs, reason", [
    (dict(), "disruptive test not enabled"),
    (dict(disruptive=True, trigger="network-change"), "network-change trigger"),
    (dict(disruptive=True, is_root=False), "not privileged"),
    (dict(disruptive=True, active=False), "active checks turned off"),
    (dict(disruptive=True, active=True, tunnel_up=False), "no tunnel is up"),
    (dict(disruptive=True, active=True, endpoints=()), "server's address is not known"),
    (dict(disruptive=True, active=True, paths={CANARY: (Path.CLEAR, "eth0")}), "no canary destination"),
])
def test_cut_test_gates_say_why(tmp_path, monkeypatch, kwargs, reason):
    monkeypatch.setattr(ProbeContext, "active_unavailable",
                        lambda self: None if self.active else "active checks turned off (--passive)")
    monkeypatch.setattr(disrupt, "cut_test", lambda *a: pytest.fail("the cut must not run"))
    found = by_id(ReconnectProbe().run(make_ctx(tmp_path, **kwargs)))
    assert reason in found["reconnect.cut-test-skipped"].evidence["reason"]


def test_policy_ipsec_has_no_interface_to_watch(tmp_path, monkeypatch):
    monkeypatch.setattr(ProbeContext, "active_unavailable", lambda self: None)
    ctx = make_ctx(tmp_path, disruptive=True, active=True)
    policy = XfrmPolicy("out", ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("0.0.0.0/0"), 100,
                        "allow", (XfrmTemplate("100.64.0.2", SERVER, "esp", "tunnel"),))
    ctx.state = NetState(xfrm_policies=(policy,))
    ctx.tunnel = Tunnel("up", "ipsec", (), policy_ipsec=True)
    reason = by_id(ReconnectProbe().run(ctx))["reconnect.cut-test-skipped"].evidence["reason"]
    assert "policy-based IPsec" in reason


def outcome(looks, back_s, decided_by="reply-through-tunnel"):
    plan = disrupt.CutPlan(endpoints=(SERVER,), canaries=(CANARY,), tunnel_names=("wg0",),
                           wireguard_names=("wg0",), cut_s=3.0, bound_s=5.0)
    result = disrupt.CutOutcome(plan=plan, baseline="packets received on wg0", held_s=3.01,
                                safety="owner flag", looks=looks, back_s=back_s,
                                decided_by=decided_by if back_s is not None else None)
    if back_s is None:
        result.back_detail = {"tunnel_interfaces_present": [], "received_on": [], "handshake_after_cut": False}
        result.final_routes = {CANARY: "eth0"}
    else:
        result.back_detail = {"routes": {CANARY: "wg0"}, "received_on": ["wg0"]}
    return result


def test_judging_a_client_that_fails_open(tmp_path):
    looks = [disrupt.Look(0.4, "cut", "up", [canary_look("tunnel")]),
             disrupt.Look(1.3, "cut", "up", [canary_look("clear")])]
    findings = ReconnectProbe()._judge(outcome(looks, 2.2))
    found = by_id(findings)
    leak = found["reconnect.leak-while-down"]
    assert leak.evidence["method"] == "observed" and leak.evidence["first_leak_at_s"] == 1.3
    assert leak.evidence["interface"] == "eth0" and "1.3 s into a 3 s cut" in leak.summary
    assert found["reconnect.reconnected"].evidence["reconnect_s"] == 2.2
    assert status_from_findings(findings) is Status.LEAK


def test_judging_a_kill_switch_and_a_tunnel_that_stays_down(tmp_path):
    blocked = [disrupt.Look(1.0, "cut", "up", [canary_look("blocked")])]
    back = ReconnectProbe()._judge(outcome(blocked, 0.4))
    assert [f.id for f in back] == ["reconnect.reconnected"]
    assert "kill switch" in back[0].summary and status_from_findings(back) is Status.PASS
    down = ReconnectProbe()._judge(outcome(blocked, None))
    assert [f.id for f in down] == ["reconnect.no-auto-reconnect"]
    assert down[0].evidence["final_routes"] == {CANARY: "eth0"} and "wg0 is gone" in down[0].summary
    assert status_from_findings(down) is Status.WARN


def test_config_bounds_the_cut_and_the_wait():
    defaults = config.defaults()
    assert defaults.get("agent", "reconnect_cut") == "10s" and defaults.get("agent", "reconnect_bound") == "60s"
    assert config.from_mapping({"agent": {"reconnect_cut": "1500ms"}}).get("agent", "reconnect_cut") == "1500ms"
    with pytest.raises(ConfigError, match="agent.reconnect_cut"):
        config.from_mapping({"agent": {"reconnect_cut": "5m"}})
    with pytest.raises(ConfigError, match="agent.reconnect_bound"):
        config.from_mapping({"agent": {"reconnect_bound": "0s"}})


# ---------------------------------------------------------------- deciding "back" (no network)

def plan(bound_s=1.0):
    return disrupt.CutPlan(endpoints=(SERVER,), canaries=(CANARY,), tunnel_names=("wg0",),
                           wireguard_names=("wg0",), cut_s=3.0, bound_s=bound_s)


class ScriptedOracle(FakeOracle):
    def close(self) -> None:
        pass


class FakeCut:
    def __init__(self, control: "FakeControl"):
        self.control, self.started, self.started_wall = control, control.monotonic(), control.wall()
        self.lifted_at, self.lift_error, self.removed_leftover, self.safety = None, None, False, "fake"

    def lift(self) -> None:
        self.lifted_at = self.control.monotonic()


class FakeControl:
    """ctx.control scripted: pulses and routes answer from lists (the last answer
    repeats; each fresh read of the routes takes the next), nudges and cuts are
    recorded, the clock moves only when the test sleeps."""

    def __init__(self, pulses, routes, history=()):
        self.pulses, self.routes, self.entries = list(pulses), list(routes), list(history)
        self.clock, self.sent, self.cuts = 0.0, [], []

    @staticmethod
    def _next(answers):
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def pulse(self, names, wireguard_names=()):
        return self._next(self.pulses)

    def nudge(self, targets):
        self.sent.append(list(targets))

    def read_state(self):
        return NetState(links=(Link(1, "eth0", "veth", True, "UP"), Link(2, "wg0", "wireguard", True, "UNKNOWN")))

    def oracle(self, state, tunnel):
        return ScriptedOracle({dst: (Path.TUNNEL if name == "wg0" else Path.CLEAR, name)
                               for dst, name in self._next(self.routes).items()})

    def cut(self, addresses, seconds):
        self.cuts.append((tuple(addresses), seconds))
        return FakeCut(self)

    def history(self, state_dir):
        return FsPath(state_dir) / "tunnel-history.json", list(self.entries)

    def sleep(self, seconds):
        self.clock += max(0.0, seconds)

    def monotonic(self):
        return self.clock

    def wall(self):
        return 2000.0 + self.clock


def scripted_ctx(tmp_path, pulses, routes) -> ProbeContext:
    ctx = make_ctx(tmp_path)
    ctx.control = FakeControl(pulses, routes)
    return ctx


def test_back_needs_routes_and_a_sign_from_the_far_end(tmp_path):
    quiet = disrupt.Pulse(rx={"wg0": (5, 10)}, handshake=1000)
    answered = disrupt.Pulse(rx={"wg0": (5, 12)}, handshake=1000)
    # a reply arrives while the canary still goes out of eth0: not back until it is routed again
    ctx = scripted_ctx(tmp_path, [answered], [{CANARY: "eth0"}, {CANARY: "eth0"}, {CANARY: "wg0"}])
    result = disrupt.CutOutcome(plan=plan(), baseline="")
    disrupt._wait_back(ctx, plan(), 2000.0, 0.0, quiet, result)
    assert result.back and result.decided_by == "reply-through-tunnel"
    assert result.back_detail["routes"] == {CANARY: "wg0"} and result.back_s == pytest.approx(0.2)
    assert ctx.control.sent == []  # nothing nudged while the canary went out of eth0


def test_a_handshake_newer_than_the_cut_decides(tmp_path):
    quiet = disrupt.Pulse(rx={"wg0": (5, 10)}, handshake=1000)
    ctx = scripted_ctx(tmp_path, [disrupt.Pulse(rx={"wg0": (5, 10)}, handshake=2001)], [{CANARY: "wg0"}])
    result = disrupt.CutOutcome(plan=plan(), baseline="")
    disrupt._wait_back(ctx, plan(), 2000.5, 0.0, quiet, result)
    assert result.decided_by == "wireguard-handshake" and result.back_detail["handshake_at"] == 2001
    assert ctx.control.sent == [[CANARY]]


def test_not_back_within_the_bound(tmp_path):
    gone = disrupt.Pulse(rx={}, handshake=None)
    ctx = scripted_ctx(tmp_path, [gone], [{CANARY: "eth0"}])
    result = disrupt.CutOutcome(plan=plan(bound_s=0.5), baseline="")
    disrupt._wait_back(ctx, plan(bound_s=0.5), 2000.0, 0.0, gone, result)
    assert not result.back and result.final_routes == {CANARY: "eth0"}
    assert result.back_detail["tunnel_interfaces_present"] == [] and ctx.control.sent == []  # nothing in clear
    assert ctx.control.clock == pytest.approx(0.5)


def test_no_baseline_reply_means_no_measurement(tmp_path):
    quiet = disrupt.Pulse(rx={"wg0": (5, 10)}, handshake=1000)
    with pytest.raises(disrupt.CannotMeasure, match="no reply"):
        disrupt.baseline(scripted_ctx(tmp_path, [quiet], [{CANARY: "wg0"}]), plan(), wait_s=0.3)
    ctx = scripted_ctx(tmp_path, [quiet, disrupt.Pulse(rx={"wg0": (5, 11)}, handshake=1000)], [{CANARY: "wg0"}])
    assert "received on wg0" in disrupt.baseline(ctx, plan(), wait_s=5)
    assert ctx.control.sent == [[CANARY]]


def test_history_and_the_clock_come_from_the_control(tmp_path):
    entries = [{"interface": "wg0", "down_at": rfc3339(datetime.fromtimestamp(1000, timezone.utc)),
                "up_at": None, "outage_s": None}]
    ctx = make_ctx(tmp_path, tunnel_up=False)
    ctx.control = FakeControl([disrupt.Pulse(rx={}, handshake=None)], [{}], history=entries)
    found = by_id(ReconnectProbe().run(ctx))
    assert found["reconnect.tunnel-history"].evidence["open_outage"] == entries[0]
    assert found["reconnect.no-auto-reconnect"].evidence["down_for_s"] == 1000.0  # wall() says 2000


def test_whole_cut_through_the_control(tmp_path):
    quiet = disrupt.Pulse(rx={"wg0": (5, 10)}, handshake=1000)
    replied = disrupt.Pulse(rx={"wg0": (5, 11)}, handshake=1000)
    # baseline: a reply; the cut: the client falls back to eth0; after the lift: routed and answered
    ctx = scripted_ctx(tmp_path, [quiet, replied, replied, replied, disrupt.Pulse(rx={"wg0": (5, 13)}, handshake=1000)],
                       [{CANARY: "wg0"}, {CANARY: "eth0"}, {CANARY: "eth0"}, {CANARY: "wg0"}])
    result = disrupt.cut_test(ctx, plan())
    assert ctx.control.cuts == [((SERVER,), 3.0)] and result.held_s == pytest.approx(3.0)
    assert result.leak_looks and result.leak_looks[0].leaking[0].method == "inferred"
    assert result.back and result.decided_by == "reply-through-tunnel"
    findings = by_id(ReconnectProbe()._judge(result))
    assert set(findings) == {"reconnect.leak-while-down", "reconnect.reconnected"}


def test_a_packet_seen_in_clear_is_explained_by_the_route_it_took(tmp_path):
    dst = ipaddress.ip_address(CANARY)
    seen = Observation(ActivePacket("udp", CANARY, 33434))
    seen.clear_on = ["eth0"]
    ctx = scripted_ctx(tmp_path, [disrupt.Pulse(rx={}, handshake=None)], [{CANARY: "eth0"}])
    asked_before = [Egress(dst, Path.TUNNEL, interface="wg0")]
    (taken,) = disrupt._route_taken(ctx, asked_before, [seen])
    assert taken.path is Path.CLEAR and taken.interface == "eth0"
    untouched = Observation(ActivePacket("udp", CANARY, 33434))
    assert disrupt._route_taken(ctx, asked_before, [untouched]) == asked_before


def test_pulse_reads_the_interface_counters(tmp_path):
    from leakcheck.linux import control

    (tmp_path / "tun0" / "statistics").mkdir(parents=True)
    (tmp_path / "tun0" / "ifindex").write_text("7\n")
    (tmp_path / "tun0" / "statistics" / "rx_packets").write_text("42\n")
    pulse = control.read_pulse(("tun0", "gone0"), (), sys_net=tmp_path)
    assert pulse.rx == {"tun0": (7, 42)} and pulse.present == ["tun0"] and pulse.handshake is None
