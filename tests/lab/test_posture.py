"""Posture probes against real clients in the lab, each with its twin:

- strongSwan IKEv2 (tests/lab/strongswan.py): the `full` connection (NCSC
  profile: aes256gcm16-prfsha384-ecp384, ESP aes256gcm16, certificates)
  passes posture-crypto and posture-auth; `legacy` (IKE 3des-sha1-modp1024,
  ESP aes128-sha1) is `posture-crypto.weak-algorithm` naming each; `psk`
  (a pre-shared key) is `posture-auth.auth-not-allowed` under the NCSC
  policy (certificates only) - read from charon's vici socket;
- OpenVPN 2.6 (tests/lab/openvpn.py): the def1 client negotiating
  AES-256-GCM passes, the `legacy` server/client pair negotiating
  AES-128-CBC with HMAC-SHA1 is `posture-crypto.weak-algorithm`;
- the real dpkg status of this host against the advisory table: the
  shipped table passes for the installed Debian openvpn, a table whose
  bookworm fix is one revision above the installed version (made from
  `dpkg-query`, not from leakcheck's own reader) is
  `posture-updates.client-outdated`.

The runs are passive and select the posture probes: what they read is the
clients' own state, no packets are needed.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.lab import strongswan as ss
from tests.lab.reports import brief, finding, ids, probe, run
from tests.lab.test_openvpn import ovpn_lab  # noqa: F401 - the OpenVPN client fixture
from tests.lab.test_strongswan import initiator, responder  # noqa: F401 - the strongSwan fixtures
from tests.lab.topology import Lab

pytestmark = pytest.mark.lab

POSTURE = ("--passive", "--probe", "posture-auth", "--probe", "posture-crypto", "--probe", "posture-updates")
NCSC_POLICY = {"posture": {"allowed_auth": ["certificate"], "crypto_profile": "ncsc-prime"}}


def strongswan_tunnel(report: dict, name: str) -> dict:
    rows = finding(report, "posture-auth.tunnels")["evidence"]["tunnels"]
    (row,) = [r for r in rows if r["client"] == "strongswan" and r["connection"] == name]
    return row


# -- strongSwan: profile and authentication -------------------------------------------------

@pytest.mark.scenario("none")
@pytest.mark.parametrize("initiator", ["full"], indirect=True)
def test_strongswan_ncsc_proposal_with_certificates_passes(initiator: Lab) -> None:
    report = run(initiator, NCSC_POLICY, *POSTURE)
    assert probe(report, "posture-crypto")["status"] == "pass", brief(report)
    assert probe(report, "posture-auth")["status"] == "pass", brief(report)
    assert probe(report, "posture-crypto")["checks"] == ["crypto-profile"]
    negotiated = [f for f in probe(report, "posture-crypto")["findings"] if f["id"] == "posture-crypto.negotiated"
                  and f["evidence"]["connection"] == "full"]
    assert negotiated, brief(report)
    algorithms = {(a["layer"], a["kind"]): a for a in negotiated[0]["evidence"]["algorithms"]}
    assert algorithms[("ike", "encryption")]["algorithm"] == "AES_GCM_16-256", algorithms
    assert algorithms[("ike", "prf")]["algorithm"] == "PRF_HMAC_SHA2_384", algorithms
    assert algorithms[("ike", "dh-group")]["algorithm"] == "ECP_384", algorithms
    assert algorithms[("esp", "encryption")]["algorithm"] == "AES_GCM_16-256", algorithms
    assert all(a["grade"] == "prime" for a in algorithms.values()), algorithms
    row = strongswan_tunnel(report, "full")
    assert row["auth"] == ["certificate"] and row["active"] is True, row
    assert "posture-crypto.weak-algorithm" not in ids(report)


@pytest.mark.scenario("none")
@pytest.mark.parametrize("initiator", ["legacy"], indirect=True)
def test_strongswan_legacy_proposal_names_3des_sha1_and_modp1024(initiator: Lab) -> None:
    report = run(initiator, NCSC_POLICY, *POSTURE)
    assert report["verdict"] == "warn", brief(report)
    assert probe(report, "posture-crypto")["status"] == "warn", brief(report)
    weak = [f for f in probe(report, "posture-crypto")["findings"]
            if f["id"] == "posture-crypto.weak-algorithm" and f["evidence"]["connection"] == "legacy"]
    assert weak, brief(report)
    named = {a["algorithm"] for a in weak[0]["evidence"]["algorithms"]}
    assert any(n.startswith("3DES_CBC") for n in named), named
    assert {"PRF_HMAC_SHA1", "MODP_1024", "HMAC_SHA1_96"} <= named, named
    layers = {a["layer"] for a in weak[0]["evidence"]["algorithms"]}
    assert layers == {"ike", "esp"}, weak  # ESP's HMAC-SHA1 too, through kernel-libipsec
    assert weak[0]["guidance"].startswith("NCSC VPN guidance: configure the VPN to NCSC's cryptographic profiles")
    assert probe(report, "posture-auth")["status"] == "pass", brief(report)  # still certificates


@pytest.mark.scenario("none")
@pytest.mark.parametrize("initiator", ["psk"], indirect=True)
def test_strongswan_pre_shared_key_is_not_certificate_authentication(initiator: Lab) -> None:
    report = run(initiator, NCSC_POLICY, *POSTURE)
    assert probe(report, "posture-auth")["status"] == "warn", brief(report)
    bad = [f for f in probe(report, "posture-auth")["findings"] if f["id"] == "posture-auth.auth-not-allowed"]
    (psk,) = [f for f in bad if f["evidence"]["connection"] == "psk"]
    assert psk["evidence"]["auth"] == ["psk"] and psk["severity"] == "high", psk
    assert any("pre-shared key" in d and ss.PSK_ID in d for d in psk["evidence"]["detail"]), psk
    assert strongswan_tunnel(report, "psk")["active"] is True
    # the same daemon's certificate connection, loaded but not up, is not blamed
    assert not [f for f in bad if f["evidence"]["connection"] == "full"], brief(report)
    assert probe(report, "posture-crypto")["status"] == "pass", brief(report)  # NCSC proposals


# -- OpenVPN: data channel ------------------------------------------------------------------

@pytest.mark.parametrize("ovpn_lab", ["openvpn"], indirect=True)
def test_openvpn_aes_256_gcm_passes(ovpn_lab: Lab) -> None:
    report = run(ovpn_lab, NCSC_POLICY, *POSTURE)
    assert probe(report, "posture-crypto")["status"] == "pass", brief(report)
    assert probe(report, "posture-auth")["status"] == "pass", brief(report)
    negotiated = finding(report, "posture-crypto.negotiated")["evidence"]["algorithms"]
    data = [a for a in negotiated if a["kind"] == "data-cipher"]
    assert [a["algorithm"] for a in data] == ["AES-256-GCM"] and data[0]["grade"] == "prime", negotiated
    assert data[0]["read_from"].startswith("log: Data Channel: cipher 'AES-256-GCM'"), data
    tls = {a["kind"]: a for a in negotiated if a["layer"] == "tls"}
    assert tls["tls-version"]["grade"] == "prime", tls
    key = finding(report, "posture-auth.key-in-file")  # a note: the client key is a file in the lab
    assert key["severity"] == "low" and key["evidence"]["keys"][0]["where"].endswith("client.key"), key


@pytest.mark.parametrize("ovpn_lab", ["openvpn-legacy"], indirect=True)
def test_openvpn_aes_128_cbc_with_sha1_is_a_weak_data_channel(ovpn_lab: Lab) -> None:
    report = run(ovpn_lab, NCSC_POLICY, *POSTURE)
    assert probe(report, "posture-crypto")["status"] == "warn", brief(report)
    weak = finding(report, "posture-crypto.weak-algorithm")
    rows = weak["evidence"]["algorithms"]
    negotiated = [a for a in rows if a["state"] == "negotiated"]
    assert negotiated and negotiated[0]["algorithm"].startswith("AES-128-CBC (auth SHA1"), rows
    assert any(a["state"] == "configured" for a in rows), rows  # data-ciphers allows it, too
    assert "AES-128-CBC" in weak["summary"] and weak["recommendation"], weak


# -- the installed client against the advisory table -----------------------------------------

def _installed(package: str) -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


@pytest.mark.scenario("none")
def test_installed_openvpn_passes_the_shipped_advisory_table(lab: Lab) -> None:
    report = run(lab, None, "--passive", "--probe", "posture-updates")
    assert probe(report, "posture-updates")["status"] == "pass", brief(report)
    clients = finding(report, "posture-updates.clients")["evidence"]
    assert {"name": "openvpn", "version": _installed("openvpn"), "source": "openvpn", "manager": "dpkg"} \
        in clients["packages"], clients
    assert clients["distribution"] == "debian bookworm" and "CVE-2024-5594" in clients["fixed"], clients


@pytest.mark.scenario("none")
def test_installed_openvpn_below_the_tables_fix_is_outdated(lab: Lab) -> None:
    installed = _installed("openvpn")
    fixed = installed + "+lc1"  # dpkg orders it just above the installed version
    check = subprocess.run(["dpkg", "--compare-versions", installed, "lt", fixed])
    assert check.returncode == 0
    table = {"schema": "leakcheck.advisories/1", "date": "2099-01-01", "advisories": [{
        "id": "CVE-2099-0001", "package": "openvpn", "severity": "high", "summary": "A lab advisory.",
        "introduced": "2.0", "fixed_upstream": "99.0", "fixed": {"debian": {"bookworm": fixed}},
        "sources": ["tests/lab/test_posture.py"]}]}
    path = lab.workdir / "advisories-test.json"
    path.write_text(json.dumps(table))
    report = run(lab, {"posture": {"advisories_file": str(path)}}, "--passive", "--probe", "posture-updates")
    assert report["verdict"] == "warn" and probe(report, "posture-updates")["status"] == "warn", brief(report)
    outdated = finding(report, "posture-updates.client-outdated")
    assert outdated["severity"] == "high" and outdated["evidence"]["installed"] == installed, outdated
    assert outdated["evidence"]["cve"] == "CVE-2099-0001" and fixed in outdated["evidence"]["compared"], outdated
    assert outdated["guidance"] == "NCSC VPN guidance: keep VPN clients up to date with security patches"
