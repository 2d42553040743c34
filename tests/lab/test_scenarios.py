"""Every leak scenario and its correct twin, through the real CLI (--json)
inside the lab's laptop namespace. Each asserts the verdict, the exit
status, the probe status, the finding id and the evidence a technician
needs (interface, route, resolver)."""

from __future__ import annotations

import pytest

from tests.lab import CANARY_V4, LAN_ROUTER, LAPTOP_LAN_V6, VPN_SERVER

EXIT = {"pass": 0, "warn": 0, "leak": 1, "error": 3}


def run(lab, config=None, *args):
    result = lab.run_cli(*args, config=config)
    assert result.report is not None, f"no JSON report:\n{result}"
    assert result.returncode == EXIT[result.report["verdict"]], str(result)
    return result.report


def brief(report):
    """What a failed assertion shows: verdict, tunnel and every finding in one line each."""
    lines = [f"verdict={report['verdict']} tunnel={report['tunnel']}"]
    for p in report["probes"]:
        lines.append(f"  {p['probe']}: {p['status']} {p['error'] or ''}")
        lines += [f"    {f['id']}: {f['summary']}" for f in p["findings"]]
    return "\n".join(lines)


def probe(report, name):
    (found,) = [p for p in report["probes"] if p["probe"] == name]
    assert found["error"] is None, found
    return found


def finding(report, finding_id):
    hits = [f for p in report["probes"] for f in p["findings"] if f["id"] == finding_id]
    assert hits, f"{finding_id} not in {[f['id'] for p in report['probes'] for f in p['findings']]}"
    return hits[0]


def finding_free(report, name):
    return probe(report, name)["findings"] == []


def ids(report):
    return {f["id"] for p in report["probes"] for f in p["findings"]}


# -- correct tunnels: no false positives ----------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick", "def1", "default"], indirect=True)
def test_correct_interface_tunnel_passes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert report["tunnel"] == {"state": "up", "kind": "wireguard", "interfaces": ["wg0"]}
    for name in ("routes", "split", "dns", "ipv6"):
        assert probe(report, name)["status"] == "pass"


@pytest.mark.parametrize("lab", ["def1", "default"], indirect=True)
def test_server_host_route_is_only_the_serverip_note(lab):
    report = run(lab)
    note = finding(report, "routes.server-route-any-process")
    assert note["severity"] == "low" and note["evidence"]["endpoint"] == VPN_SERVER
    assert note["evidence"]["interface"] == "eth0"
    split_map = finding(report, "split.egress-map")
    assert any(entry.startswith(f"{VPN_SERVER}/32") for entry in split_map["evidence"]["vpn_server"])
    assert "routes.default-route-outside-tunnel" not in ids(report)


@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_wg_quick_marks_keep_the_server_inside_policy(lab):
    report = run(lab, None, "--trigger", "schedule")
    assert "routes.server-route-any-process" not in ids(report)
    assert report["trigger"] == "schedule"  # timers and schedulers say what started the run


@pytest.mark.parametrize("lab", ["ipsec"], indirect=True)
def test_policy_based_ipsec_passes_as_ipsec(lab):
    report = run(lab)
    assert report["tunnel"]["kind"] == "ipsec" and report["tunnel"]["state"] == "up"
    assert report["verdict"] == "pass", brief(report)
    assert probe(report, "routes")["status"] == "pass"
    assert probe(report, "dns")["status"] == "pass"


@pytest.mark.parametrize("lab", ["ipsec+tunnelvision"], indirect=True)
def test_ipsec_policies_are_not_fooled_by_dhcp_routes(lab):
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)


@pytest.mark.parametrize("lab", ["wg-quick+managed-exception"], indirect=True)
def test_managed_exception_passes_and_is_accounted(lab):
    report = run(lab, {"policy": {"allowed_direct": ["198.51.100.128/25"]}})
    assert report["verdict"] == "pass", brief(report)
    accounted = finding(report, "split.egress-map")["evidence"]["allowed_exceptions"]
    assert accounted == ["198.51.100.128/25 (eth0)"]


@pytest.mark.parametrize("lab", ["wg-quick+split"], indirect=True)
def test_split_tunnel_allowed_by_policy_passes(lab):
    report = run(lab, {"policy": {"allow_split": True}})
    assert report["verdict"] == "pass", brief(report)
    split = finding(report, "split.prefixes-outside-tunnel")
    assert split["severity"] == "info"


# -- leaks: each caught with its evidence -----------------------------------------------

@pytest.mark.parametrize("lab", ["wg-quick+tunnelvision", "def1+tunnelvision", "default+tunnelvision"],
                         indirect=True)
def test_tunnelvision_route_is_caught(lab):
    report = run(lab)
    assert report["verdict"] == "leak"
    assert probe(report, "routes")["status"] == "leak"
    found = finding(report, "routes.more-specific-route-outside-tunnel")
    evidence = found["evidence"]
    assert evidence["prefix"] == "198.51.100.0/24"
    assert evidence["route_protocol"] == "dhcp" and evidence["interface"] == "eth0"
    assert evidence["canaries_affected"] == [CANARY_V4]
    assert evidence["method"] == "observed", evidence
    assert evidence["observed"]["seen_in_clear_on"] == ["eth0"]
    assert "covering_route" in evidence
    assert "CVE-2024-3661" in found["summary"]
    # the same prefix shows in the exact egress map
    assert "198.51.100.0/24" in finding(report, "split.prefixes-outside-tunnel")["evidence"]["prefixes"]


@pytest.mark.parametrize("lab", ["wg-quick+public-lan"], indirect=True)
def test_public_local_network_is_caught(lab):
    report = run(lab)
    assert report["verdict"] == "leak"
    found = finding(report, "routes.public-local-network")
    assert found["evidence"]["prefix"] == "192.0.2.0/24" and found["evidence"]["interface"] == "eth0"


@pytest.mark.parametrize("lab", ["wg-quick+managed-exception"], indirect=True)
def test_direct_route_without_the_exception_is_a_leak(lab):
    report = run(lab)
    found = finding(report, "routes.more-specific-route-outside-tunnel")
    assert found["evidence"]["prefix"] == "198.51.100.128/25"
    assert found["evidence"]["route_protocol"] == "static"


@pytest.mark.parametrize("lab", ["wg-quick+split"], indirect=True)
def test_split_tunnel_is_a_leak(lab):
    report = run(lab)
    assert report["verdict"] == "leak"
    assert probe(report, "split")["status"] == "leak"
    found = finding(report, "split.prefixes-outside-tunnel")
    assert found["evidence"]["interfaces"] == ["eth0"]
    assert found["evidence"]["public_share"].startswith("99.")  # all but 198.18.0.0/15
    assert "198.18.0.0/15" not in found["evidence"]["prefixes"]
    assert finding(report, "routes.default-route-outside-tunnel")["evidence"]["interface"] == "eth0"


@pytest.mark.parametrize("lab", ["wg-quick+dns-outside"], indirect=True)
def test_resolver_outside_the_tunnel_is_caught_and_observed(lab):
    report = run(lab)
    assert report["verdict"] == "leak"
    assert probe(report, "dns")["status"] == "leak"
    evidence = finding(report, "dns.resolver-outside-tunnel")["evidence"]
    assert evidence["resolver"] == LAN_ROUTER and evidence["interface"] == "eth0"
    assert evidence["method"] == "observed" and evidence["observed"]["sent_to"] == LAN_ROUTER
    assert any(q["qname"].startswith("lc-") for q in lab.dns_log("isp")), "the ISP resolver saw no query"


@pytest.mark.parametrize("lab", ["wg-quick"], indirect=True)
def test_corporate_resolver_query_stays_in_the_tunnel(lab):
    report = run(lab)
    assert probe(report, "dns")["status"] == "pass"
    corp = [q for q in lab.dns_log("vpn") if q["qname"].startswith("lc-")]
    assert corp, "the corporate resolver saw no query"
    assert not any(q["qname"].startswith("lc-") for q in lab.dns_log("isp"))
    assert finding_free(report, "dns")


@pytest.mark.parametrize("lab", ["wg-quick+ipv6-beside-ipv4-tunnel"], indirect=True)
def test_ipv6_beside_ipv4_only_tunnel_is_caught(lab):
    report = run(lab)
    assert report["verdict"] == "leak"
    assert probe(report, "ipv6")["status"] == "leak"
    evidence = finding(report, "ipv6.ipv6-outside-ipv4-only-tunnel")["evidence"]
    assert evidence["interface"] == "eth0" and LAPTOP_LAN_V6 in evidence["addresses"]
    assert evidence["method"] == "observed"
    # IPv4 still passes: the tunnel carries it
    assert "routes.default-route-outside-tunnel" not in ids(report)


@pytest.mark.parametrize("lab", ["wg-quick+tunnel-down"], indirect=True)
def test_tunnel_down_with_direct_default_is_a_leak(lab):
    report = run(lab)
    assert report["verdict"] == "leak"
    assert report["tunnel"]["state"] in ("down", "absent")
    evidence = finding(report, "routes.default-route-outside-tunnel")["evidence"]
    assert evidence["interface"] == "eth0" and evidence["gateway"] == LAN_ROUTER
    assert evidence["route"].startswith("default via 100.64.0.1 dev eth0")


@pytest.mark.parametrize("lab", ["none"], indirect=True)
def test_no_vpn_says_so_plainly_and_exits_1(lab):
    report = run(lab, None)
    assert report["tunnel"] == {"state": "absent", "kind": "none", "interfaces": []}
    assert report["verdict"] == "leak"
    assert finding(report, "routes.default-route-outside-tunnel")["evidence"]["interface"] == "eth0"
    assert finding(report, "dns.resolver-outside-tunnel")["evidence"]["resolver"] == LAN_ROUTER
    # posture probes read the host's configuration files (shared by every lab namespace), not the lab's
    skipped = {p["probe"]: p for p in report["probes"] if p["status"] == "skip" and not p["probe"].startswith("posture-")}
    assert set(skipped) == {"split", "ipv6"}
    assert all(p["findings"][0]["evidence"]["reason"] for p in skipped.values())
    text = lab.agent("run")
    assert text.returncode == 1
    assert "not connected to a VPN" in text.stdout and "VERDICT: LEAK" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80
