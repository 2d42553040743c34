"""openconnect against ocserv in the lab (tests/lab/ocserv.py has the diagram):
a full tunnel that must pass and a split tunnel that must be caught, through
the real CLI (`leakcheck run --json`) in the laptop.

ocserv starts once for the module (both users on one server); each test
starts from the plain laptop ("none": default via eth0, the LAN router's
resolver) and connects openconnect with the packaged vpnc-script, which
sets the routes and resolv.conf its own way."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.lab import CORP_RESOLVER, LAN_ROUTER, VPN_SERVER
from tests.lab import ocserv as oc
from tests.lab.reports import brief, finding, ids, probe, run
from tests.lab.topology import Lab

CUT_S, BOUND_S = 3.0, 5.0  # short cut and bound, as tests/lab/test_reconnect.py uses


@pytest.fixture(scope="module")
def ocserv_server(lab_session: Lab) -> Iterator[oc.Ocserv]:
    server = oc.Ocserv(lab_session).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def openconnect(lab: Lab, ocserv_server: oc.Ocserv, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The laptop connected as the user named by the test's parameter ("full" or "split")."""
    oc.connect(lab, ocserv_server, request.param)
    yield lab
    oc.disconnect(lab)



@pytest.mark.scenario("none")
@pytest.mark.parametrize("openconnect", ["full"], indirect=True)
def test_openconnect_full_tunnel_passes_with_the_serverip_note(openconnect: Lab) -> None:
    lab = openconnect
    routes = {r["dst"]: r.get("dev") for r in lab.ip_json("-4 route show")}
    assert routes.get("default") == oc.TUN, routes  # vpnc-script replaced the default route
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert report["tunnel"] == {"state": "up", "kind": "tun", "interfaces": [oc.TUN]}
    for name in ("routes", "split", "dns", "ipv6"):
        assert probe(report, name)["status"] == "pass", brief(report)
    # vpnc-script's host route to the server via the LAN router: ServerIP, a note, not TunnelVision.
    note = finding(report, "routes.server-route-any-process")
    assert note["severity"] == "low" and note["evidence"]["endpoint"] == VPN_SERVER
    assert note["evidence"]["interface"] == "eth0"
    assert "routes.more-specific-route-outside-tunnel" not in ids(report)
    assert not any(f["severity"] in ("critical", "high") for p in report["probes"] for f in p["findings"]), \
        brief(report)
    # the pushed resolver answered through the tunnel; the ISP's saw nothing
    assert any(q["qname"].startswith("lc-") for q in lab.dns_log("vpn")), "the corporate resolver saw no query"
    assert not any(q["qname"].startswith("lc-") for q in lab.dns_log("isp"))


@pytest.mark.scenario("none")
@pytest.mark.parametrize("openconnect", ["split"], indirect=True)
def test_openconnect_split_routes_leak_public_space(openconnect: Lab) -> None:
    lab = openconnect
    routes = {r["dst"]: r.get("dev") for r in lab.ip_json("-4 route show")}
    assert routes.get("198.18.0.0/15") == oc.TUN and routes.get("default") == "eth0", routes
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    assert report["tunnel"] == {"state": "up", "kind": "tun", "interfaces": [oc.TUN]}
    assert probe(report, "split")["status"] == "leak"
    split = finding(report, "split.prefixes-outside-tunnel")
    assert split["evidence"]["interfaces"] == ["eth0"]
    assert "198.18.0.0/15" not in split["evidence"]["prefixes"]
    default = finding(report, "routes.default-route-outside-tunnel")["evidence"]
    assert default["interface"] == "eth0" and default["gateway"] == LAN_ROUTER
    assert default["method"] == "observed", default
    # the corporate prefixes (and the resolver in them) still go through the tunnel
    assert probe(report, "dns")["status"] == "pass", brief(report)
    assert CORP_RESOLVER in (lab.exec(["cat", "/etc/resolv.conf"]).stdout)



@pytest.mark.scenario("none")
@pytest.mark.parametrize("openconnect", ["full"], indirect=True)
def test_openconnect_disruptive_cut_finds_the_server_and_nothing_leaks(openconnect: Lab) -> None:
    """The reconnect probe's real cut needs the server's address: it must come from the
    client (its TLS socket). While cut, the routes stay in the dead tunnel: no clear packet."""
    lab = openconnect
    config = {"agent": {"reconnect_cut": f"{CUT_S:g}s", "reconnect_bound": f"{BOUND_S:g}s",
                        "state_dir": str(lab.workdir / "state")}}
    report = run(lab, config, "--disruptive", "--probe", "reconnect")
    assert report["verdict"] == "pass", brief(report)
    assert "reconnect.cut-test-skipped" not in ids(report)
    evidence = finding(report, "reconnect.reconnected")["evidence"]
    assert evidence["endpoints"] == [VPN_SERVER] and evidence["cut_s"] == CUT_S
    assert 0 < evidence["reconnect_s"] < BOUND_S, evidence
    assert evidence["received_on"] == [oc.TUN]
    outcomes = {o for span in evidence["looks"] for o in span["outcomes"].values()}
    assert outcomes and "clear" not in outcomes, evidence
    assert "reconnect.leak-while-down" not in ids(report)
