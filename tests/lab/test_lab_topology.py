"""The lab itself: every style is a working, correct full tunnel, every fault does
what its name says, captures see what leaves (and prove what does not), the
resolvers log who asked. If these fail, no scenario test can be trusted."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.lab import (CANARY_V4, CANARY_V6, CORP_RESOLVER, DNS_ANSWER_V4, DNS_ANSWER_V6, ISP_RESOLVER, LAB_CONFIG,
                       LAN_ROUTER, LAPTOP_LAN, LAPTOP_LAN_V6, TUNNEL_LAPTOP, TUNNEL_LAPTOP_V6, VPN_PORT, VPN_SERVER)
from tests.lab import linux, pcap
from tests.lab.scenarios import FAULTS, STYLES, Scenario, ScenarioError
from tests.lab.topology import ETC_NETNS, merge_config, remove_stale_labs, to_toml

pytestmark = pytest.mark.lab

TUNNEL_STYLES = ["wg-quick", "def1", "default"]
FAMILIES = pytest.mark.parametrize("canary,tunnel_src,lan_src", [
    (CANARY_V4, TUNNEL_LAPTOP, LAPTOP_LAN), (CANARY_V6, TUNNEL_LAPTOP_V6, LAPTOP_LAN_V6)], ids=["v4", "v6"])


# ---------------------------------------------------------------- without the lab

def test_toml_writer_round_trips_through_tomllib():
    config = {"canaries": {"ipv4": ["198.51.100.1"], "dns_zone": 'we"ird\\zone\n'},
              "policy": {"allow_split": True, "allowed_direct": []}, "odd section": {"a.b": "x\ty"}}
    assert tomllib.loads(to_toml(config)) == config


def test_config_merge_keeps_lab_canaries_under_the_callers_keys():
    merged = merge_config(LAB_CONFIG, {"policy": {"allowed_direct": ["198.51.100.128/25"]},
                                       "canaries": {"ipv6": []}})
    assert merged == {"canaries": {"ipv4": [CANARY_V4], "ipv6": []},
                      "policy": {"allowed_direct": ["198.51.100.128/25"]},
                      "posture": LAB_CONFIG["posture"]}
    assert LAB_CONFIG["canaries"]["ipv6"] == [CANARY_V6]  # the default is not mutated


def test_scenarios_parse_and_reject_unknown_names():
    assert Scenario.parse("def1+tunnelvision") == Scenario("def1", ("tunnelvision",))
    assert Scenario.parse(("ipsec", "split")) == Scenario("ipsec", ("split",))
    assert str(Scenario.parse(None)) == "wg-quick"
    with pytest.raises(ScenarioError, match="unknown fault"):
        Scenario.parse("def1+no-such-fault")
    with pytest.raises(ScenarioError, match="unknown style"):
        Scenario.parse("no-such-style")
    # Client modules (tests/lab/openvpn.py, ...) add their styles when imported.
    assert {"wg-quick", "def1", "default", "ipsec", "none"} <= set(STYLES)
    assert {"tunnelvision", "public-lan", "managed-exception", "split", "dns-outside",
            "ipv6-beside-ipv4-tunnel", "tunnel-down"} <= set(FAULTS)


# ---------------------------------------------------------------- correct tunnels

@FAMILIES
@pytest.mark.parametrize("lab", TUNNEL_STYLES, indirect=True)
def test_full_tunnel_carries_the_datagram_through_the_gateway(lab, canary, tunnel_src, lan_src):
    trace = lab.trace_udp(canary)
    assert trace.arrived_from == tunnel_src, trace  # it came out of the gateway with its tunnel address
    assert trace.tunnel, trace  # decrypted at vpn wgvpn
    assert trace.wan, trace  # and went on from the vpn side over isp wan0
    assert not trace.clear_on_lan, trace
    assert any(p.dst == VPN_SERVER and p.dport == VPN_PORT for p in trace.wireguard_on_lan), trace
    assert not trace.other_on_lan, trace  # nothing but WireGuard (and ND/MLD) on the LAN


@pytest.mark.parametrize("lab", TUNNEL_STYLES, indirect=True)
def test_tunnel_handshake_is_visible_to_commands_inside_the_laptop(lab):
    """wg (and the agent) inside the laptop reach wireguard-go's UAPI socket."""
    shown = lab.exec("wg show wg0 latest-handshakes").stdout.split()
    assert len(shown) == 2 and int(shown[1]) > 0, shown
    assert lab.allowed_ips() == ["0.0.0.0/0", "::/0"]


@FAMILIES
@pytest.mark.scenario("none")
def test_no_vpn_sends_the_datagram_in_clear(lab, canary, tunnel_src, lan_src):
    trace = lab.trace_udp(canary)
    assert trace.clear_on_lan, trace
    assert trace.arrived_from == lan_src, trace
    assert not trace.tunnel and not trace.wan, trace
    assert not lab.link_exists("wg0")


@pytest.mark.parametrize("lab", [f"{style}+tunnelvision" for style in TUNNEL_STYLES], indirect=True)
def test_tunnelvision_route_sends_the_canary_in_clear(lab):
    trace = lab.trace_udp(CANARY_V4)
    assert trace.clear_on_lan, trace
    assert trace.arrived_from == LAPTOP_LAN, trace
    assert not trace.tunnel, trace
    # The pushed route is IPv4 only: IPv6 still goes through the tunnel.
    trace6 = lab.trace_udp(CANARY_V6)
    assert trace6.arrived_from == TUNNEL_LAPTOP_V6 and not trace6.clear_on_lan, trace6


@pytest.mark.scenario("ipsec")
@pytest.mark.parametrize("canary", [CANARY_V4, CANARY_V6], ids=["v4", "v6"])
def test_ipsec_policy_holds_back_what_it_covers(lab, canary):
    """Acceptance point: with policies but no ESP state, the datagram never leaves in clear."""
    trace = lab.trace_udp(canary)
    assert trace.held_back, trace  # the laptop's xfrm counters saw it held
    assert not trace.clear_on_lan, trace  # the synced eth0 capture proves it never left
    assert not [p for p in trace.lan if p.dst == canary], trace
    assert not trace.arrived and not trace.wan, trace
    assert not lab.link_exists("wg0")
    # The same capture does see what the bypass policy lets out in clear (the VPN server).
    bypass = lab.trace_udp(VPN_SERVER)
    assert bypass.clear_on_lan and not bypass.held_back, bypass


# ---------------------------------------------------------------- faults

EXPECTED_PATHS = {
    "wg-quick+split": [(CANARY_V4, "clear"), ("198.18.0.1", "tunnel"), (CANARY_V6, "clear")],
    "def1+ipv6-beside-ipv4-tunnel": [(CANARY_V4, "tunnel"), (CANARY_V6, "clear")],
    "wg-quick+ipv6-beside-ipv4-tunnel": [(CANARY_V4, "tunnel"), (CANARY_V6, "clear")],
    "default+tunnel-down": [(CANARY_V4, "clear"), (CANARY_V6, "clear")],
    "wg-quick+managed-exception": [("198.51.100.200", "clear"), (CANARY_V4, "tunnel")],
    "ipsec+split": [("198.18.0.1", "held"), (CANARY_V4, "clear")],
    "ipsec+tunnel-down": [(CANARY_V4, "clear"), (CANARY_V6, "clear")],
    "ipsec+managed-exception": [("198.51.100.200", "clear"), (CANARY_V4, "held")],
    "ipsec+ipv6-beside-ipv4-tunnel": [(CANARY_V4, "held"), (CANARY_V6, "clear")],
    "ipsec+tunnelvision": [(CANARY_V4, "held")],  # policies do not care about routes
}


@pytest.mark.parametrize("lab,expected", list(EXPECTED_PATHS.items()), indirect=["lab"],
                         ids=list(EXPECTED_PATHS))
def test_fault_changes_where_traffic_goes(lab, expected):
    for dst, path in expected:
        trace = lab.trace_udp(dst)
        assert trace.path == path, trace
        if path == "clear" and trace.arrived:
            assert trace.arrived_from in (LAPTOP_LAN, LAPTOP_LAN_V6), trace
        if path == "tunnel" and trace.arrived:
            assert trace.arrived_from in (TUNNEL_LAPTOP, TUNNEL_LAPTOP_V6), trace


@pytest.mark.scenario("wg-quick", "ipv6-beside-ipv4-tunnel")
def test_ipv4_only_tunnel_has_no_ipv6_on_wg0(lab):
    assert not any(link.get("addr_info") for link in lab.ip_json("-6 addr show dev wg0"))
    assert not lab.ip_json("-6 route show table all dev wg0")
    assert all(":" not in prefix for prefix in lab.allowed_ips())
    assert not lab.ip_json("-6 rule show table 51820")
    assert any(r.get("gateway") == "2001:db8:1::1" for r in lab.ip_json("-6 route show default"))


@pytest.mark.scenario("wg-quick", "public-lan")
def test_public_lan_prefix_is_added_and_removed_with_the_scenario(lab):
    assert "192.0.2.10/24" in lab.ip("-4 addr show dev eth0").stdout
    assert "192.0.2.1/24" in lab.ip("-4 addr show dev lan0", ns="isp").stdout
    assert lab.trace_udp(CANARY_V4).path == "tunnel"
    lab.reset("wg-quick")
    assert "192.0.2.1/" not in lab.ip("-4 addr", ns="isp").stdout
    assert "192.0.2.10/" not in lab.ip("-4 addr").stdout


@pytest.mark.scenario("none")
def test_faults_that_need_a_tunnel_refuse_the_none_style(lab):
    for fault in ("split", "tunnel-down", "ipv6-beside-ipv4-tunnel"):
        with pytest.raises(Exception, match="does not apply"):
            lab.reset("none", fault)


# ---------------------------------------------------------------- DNS

def test_corporate_resolver_logs_the_laptops_query_through_the_tunnel(lab):
    assert lab.dns_query(CORP_RESOLVER, "direct.corp.example") == [DNS_ANSWER_V4]
    assert lab.dns_query(CORP_RESOLVER, "direct.corp.example", "AAAA") == [DNS_ANSWER_V6]
    # resolv.conf is wired: the C library's resolver inside the laptop asks the corporate resolver.
    looked_up = lab.exec(["getent", "ahostsv4", "libc.corp.example"]).stdout
    assert DNS_ANSWER_V4 in looked_up
    queries = {(q["name"], q["qtype"], q["src"]) for q in lab.dns_log("vpn")}
    assert ("direct.corp.example", "A", TUNNEL_LAPTOP) in queries
    assert ("direct.corp.example", "AAAA", TUNNEL_LAPTOP) in queries
    assert ("libc.corp.example", "A", TUNNEL_LAPTOP) in queries
    assert lab.dns_log("isp") == []


@pytest.mark.scenario("wg-quick", "dns-outside")
def test_dns_outside_sends_queries_to_the_lan_resolver(lab):
    looked_up = lab.exec(["getent", "ahostsv4", "leaked.corp.example"]).stdout
    assert DNS_ANSWER_V4 in looked_up
    isp = [(q["name"], q["dst"], q["src"]) for q in lab.dns_log("isp")]
    assert ("leaked.corp.example", LAN_ROUTER, LAPTOP_LAN) in isp
    assert lab.dns_query(LAN_ROUTER, "direct.lan.example") == [DNS_ANSWER_V4]
    assert lab.dns_query(ISP_RESOLVER, "isp.example") is not None  # 198.51.100.53 answers too (via the tunnel)
    assert not any(q["name"] == "leaked.corp.example" for q in lab.dns_log("vpn"))


@pytest.mark.scenario("wg-quick", "tunnel-down")
def test_corporate_resolver_is_unreachable_outside_the_tunnel(lab):
    assert lab.dns_query(CORP_RESOLVER, "nowhere.corp.example", timeout=0.5) is None
    assert lab.dns_log("vpn") == []


# ---------------------------------------------------------------- captures, the agent, housekeeping

def test_capture_sync_proves_completeness(lab):
    """A capture sees its own marker frame, and a datagram sent before sync is in the file."""
    with lab.capture("lap", "eth0", f"udp and host {LAN_ROUTER}") as cap:
        sock = lab.socket("lap")
        sock.sendto(b"capture-me", (LAN_ROUTER, 9))
        cap.sync()
        seen = [p for p in cap.packets() if p.payload == b"capture-me"]
    assert len(seen) == 1 and seen[0].dst == LAN_ROUTER and seen[0].dport == 9
    assert all(isinstance(p, pcap.Packet) for p in cap.packets())


def test_agent_runs_inside_the_laptop(lab):
    version = lab.agent("--version")
    assert version.returncode == 0, version
    assert "leakcheck" in version.stdout + version.stderr
    # run_cli writes LAB_CONFIG merged with the test's config and passes it; --help proves the plumbing
    # without depending on what the agent reports.
    run = lab.run_cli("--help", config={"policy": {"allowed_direct": ["198.51.100.128/25"]}})
    assert run.returncode == 0 and "--config" in run.stdout, run
    written = tomllib.loads(run.config_path.read_text())
    assert written["canaries"] == LAB_CONFIG["canaries"]
    assert written["policy"]["allowed_direct"] == ["198.51.100.128/25"]
    assert run.argv[:5] == [sys.executable, "-m", "leakcheck", "run", "--json"]


def test_stale_lab_namespaces_of_dead_runs_are_removed(lab_session):
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not linux.pid_alive(dead.pid)
    name = f"lc{dead.pid}-lap"
    subprocess.run(["ip", "netns", "add", name], check=True)
    (ETC_NETNS / name).mkdir(parents=True, exist_ok=True)
    try:
        removed = remove_stale_labs(keep_pid=None)
        assert name in removed
        assert not (linux.NETNS_RUN_DIR / name).exists() and not (ETC_NETNS / name).exists()
        assert lab_session.lap not in removed and lab_session.isp not in removed
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_reset_speed(lab_session, capsys):
    """Prints seconds per laptop reset for each style; asserts each reset left a working laptop."""
    timings = {}
    for spec in ["wg-quick", "def1", "default", "ipsec", "none", "wg-quick+tunnel-down"]:
        started = time.monotonic()
        lab_session.reset(spec)
        timings[spec] = time.monotonic() - started
        if Scenario.parse(spec).has_tunnel_interface and "tunnel-down" not in spec:
            assert lab_session.latest_handshake() > 0
        assert (ETC_NETNS / lab_session.lap / "resolv.conf").exists()
    lab_session.end_scenario()
    with capsys.disabled():
        print("\nlab reset seconds: " + ", ".join(f"{spec} {seconds:.3f}" for spec, seconds in timings.items()))
