"""strongSwan IKEv2 with certificates in the lab (tests/lab/strongswan.py has
the diagram): charon's kernel-libipsec full tunnel must pass, the same
tunnel carrying only the corporate prefixes must be caught (a split: under
kernel-libipsec a passthrough shunt installs nothing, so it cannot make the
leak), through the
real CLI (`leakcheck run --json`) in the laptop.

The responder charon starts once for the module; each test starts from the
plain laptop ("none") and starts the initiator charon there, which sets its
routes (table 220), virtual IPs and resolv.conf its own way."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.lab import CANARY_V4, LAN_ROUTER, VPN_SERVER
from tests.lab import strongswan as ss
from tests.lab.reports import brief, finding, ids, probe, run
from tests.lab.topology import Lab

CUT_S, BOUND_S = 3.0, 5.0  # short cut and bound, as tests/lab/test_reconnect.py uses


@pytest.fixture(scope="module")
def responder(lab_session: Lab) -> Iterator[ss.Responder]:
    gateway = ss.Responder(lab_session).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def initiator(lab: Lab, responder: ss.Responder, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The laptop's charon with the connection named by the test's parameter initiated."""
    charon = ss.connect(lab, responder, request.param)
    yield lab
    charon.stop()



@pytest.mark.scenario("none")
@pytest.mark.parametrize("initiator", ["full"], indirect=True)
def test_strongswan_libipsec_full_tunnel_passes_with_the_serverip_note(initiator: Lab) -> None:
    lab = initiator
    table = {r["dst"]: r for r in lab.ip_json(f"-4 route show table {ss.TABLE}")}
    assert table["default"]["dev"] == ss.TUN, table
    assert table[VPN_SERVER]["type"] == "throw", table  # kernel-libipsec's exclude route for the peer
    report = run(lab)
    assert report["verdict"] == "pass", brief(report)
    assert report["tunnel"] == {"state": "up", "kind": "ipsec", "interfaces": [ss.TUN]}
    for name in ("routes", "split", "dns", "ipv6"):
        assert probe(report, name)["status"] == "pass", brief(report)
    # The server is known from charon's vici socket (its IKE/ESP sockets are unconnected):
    # the path to it outside the tunnel is the ServerIP note, not a split prefix.
    note = finding(report, "routes.server-route-any-process")
    assert note["evidence"]["endpoint"] == VPN_SERVER and note["evidence"]["interface"] == "eth0"
    assert finding(report, "split.egress-map")["evidence"]["vpn_server"] == [f"{VPN_SERVER}/32 (eth0)"]
    assert "split.prefixes-outside-tunnel" not in ids(report)
    assert not any(f["severity"] in ("critical", "high") for p in report["probes"] for f in p["findings"]), \
        brief(report)
    assert any(q["qname"].startswith("lc-") for q in lab.dns_log("vpn")), "the corporate resolver saw no query"


@pytest.mark.scenario("none")
@pytest.mark.parametrize("initiator", ["split"], indirect=True)
def test_strongswan_split_selectors_leak_public_space(initiator: Lab) -> None:
    lab = initiator
    table = {r["dst"] for r in lab.ip_json(f"-4 route show table {ss.TABLE}")}
    assert "198.18.0.0/15" in table and "default" not in table, table
    report = run(lab)
    assert report["verdict"] == "leak", brief(report)
    assert report["tunnel"] == {"state": "up", "kind": "ipsec", "interfaces": [ss.TUN]}
    assert probe(report, "split")["status"] == "leak"
    split = [f for p in report["probes"] for f in p["findings"] if f["id"] == "split.prefixes-outside-tunnel"]
    assert {f["evidence"]["family"] for f in split} == {"IPv4", "IPv6"}, brief(report)
    v4 = next(f for f in split if f["evidence"]["family"] == "IPv4")["evidence"]
    assert v4["interfaces"] == ["eth0"] and "198.18.0.0/15" not in v4["prefixes"]
    default = finding(report, "routes.default-route-outside-tunnel")["evidence"]
    assert default["interface"] == "eth0" and default["destination"] == CANARY_V4
    assert default["method"] == "observed", default
    # charon's resolve plugin put the corporate resolver first but kept the LAN's:
    # that one is reached in clear outside the split tunnel.
    dns = finding(report, "dns.resolver-outside-tunnel")["evidence"]
    assert dns["resolver"] == LAN_ROUTER and dns["interface"] == "eth0"


@pytest.mark.scenario("none")
@pytest.mark.parametrize("initiator", ["full"], indirect=True)
def test_strongswan_disruptive_cut_finds_the_server_and_nothing_leaks(initiator: Lab) -> None:
    """The reconnect probe's real cut needs the server's address: it must come from the
    client (charon's vici socket). While cut, the routes stay in the dead tunnel: no clear packet."""
    lab = initiator
    config = {"agent": {"reconnect_cut": f"{CUT_S:g}s", "reconnect_bound": f"{BOUND_S:g}s",
                        "state_dir": str(lab.workdir / "state")}}
    report = run(lab, config, "--disruptive", "--probe", "reconnect")
    assert report["verdict"] == "pass", brief(report)
    assert "reconnect.cut-test-skipped" not in ids(report)
    evidence = finding(report, "reconnect.reconnected")["evidence"]
    assert evidence["endpoints"] == [VPN_SERVER] and evidence["cut_s"] == CUT_S
    assert 0 < evidence["reconnect_s"] < BOUND_S, evidence
    assert evidence["received_on"] == [ss.TUN]
    outcomes = {o for span in evidence["looks"] for o in span["outcomes"].values()}
    assert outcomes and "clear" not in outcomes, evidence
    assert "reconnect.leak-while-down" not in ids(report)
