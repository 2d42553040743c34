"""The posture probes and what they read, without a lab: recorded vici
streams (tests/unit/data/vici/README), OpenVPN configs and log lines,
NetworkManager keyfiles, dpkg status paragraphs, the advisory table, the
NCSC grading; and every posture probe over generated client facts (no
crash, well-formed findings, the contract holds)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakcheck import advisories, config
from leakcheck import cryptoprofile as cp
from leakcheck.collector.contract import ReportIn
from leakcheck.errors import ConfigError
from leakcheck.linux import vici
from leakcheck.linux import vpnclients as linux
from leakcheck.netstate import NetState
from leakcheck.oracle import Oracle
from leakcheck.probe import ProbeContext
from leakcheck.probes.posture_auth import PostureAuthProbe
from leakcheck.probes.posture_crypto import PostureCryptoProbe
from leakcheck.probes.posture_updates import PostureUpdatesProbe
from leakcheck.report import Report, Status, utcnow
from leakcheck.runner import run_one
from leakcheck.tunnel import Tunnel
from leakcheck.vpnclients import (AUTH_CLASSES, PROTOCOLS, Algorithms, ClientFacts, Distribution, InstalledPackage,
                                  KeyStore, TunnelConfig, recorded)

DATA = Path(__file__).parent / "data" / "vici"
POSTURE = (PostureAuthProbe, PostureCryptoProbe, PostureUpdatesProbe)
BOOKWORM = Distribution("debian", "bookworm", "12")


def stream_events(name: str) -> list[dict]:
    data, pos, out = (DATA / name).read_bytes(), 0, []
    while pos < len(data):
        (length,) = struct.unpack("!I", data[pos:pos + 4])
        operation, _, message = vici.decode_packet(data[pos + 4:pos + 4 + length])
        pos += 4 + length
        if operation == vici.EVENT:
            out.append(message)
    return out


def ctx(facts: ClientFacts, policy: dict | None = None, tmp: Path | None = None) -> ProbeContext:
    state, tunnel = NetState(), Tunnel("absent", "none", ())
    values = {"posture": policy or {}}
    if tmp is not None:
        values["agent"] = {"state_dir": str(tmp)}
    return ProbeContext(config=config.from_mapping(values), state=state, tunnel=tunnel, oracle=Oracle(state, tunnel),
                        is_root=True, active=False, clients=recorded(facts))


def ids(result) -> list[str]:
    return [f.id for f in result.findings]


# ---------------------------------------------------------------- strongSwan from recorded vici

def test_recorded_list_conns_and_legacy_sas_give_the_connections_their_auth_and_algorithms() -> None:
    tunnels = linux.strongswan_tunnels(stream_events("list-conns-stream.bin"),
                                       stream_events("list-sas-legacy-stream.bin"), "vici test", 42, "ipsec0")
    by_name = {t.name: t for t in tunnels}
    assert set(by_name) == {"full", "split", "legacy", "psk"}
    assert by_name["psk"].auth == ("psk",) and by_name["full"].auth == ("certificate",)
    assert by_name["legacy"].active and not by_name["full"].active
    ike, esp = by_name["legacy"].algorithms
    assert ike.items == {"version": "2", "encr-alg": "3DES_CBC", "integ-alg": "HMAC_SHA1_96",
                         "prf-alg": "PRF_HMAC_SHA1", "dh-group": "MODP_1024"}
    assert esp.layer == "esp" and esp.items["encr-alg"] == "AES_CBC" and esp.items["encr-keysize"] == "128"
    result = run_one(PostureCryptoProbe, ctx(ClientFacts(tunnels=tuple(tunnels))))
    assert result.status is Status.WARN and result.checks == ("crypto-profile",)
    (weak,) = [f for f in result.findings if f.id == "posture-crypto.weak-algorithm"]
    named = {a["algorithm"] for a in weak.evidence["algorithms"]}
    assert {"3DES_CBC", "HMAC_SHA1_96", "PRF_HMAC_SHA1", "MODP_1024"} <= named
    # AES-CBC for ESP is Foundation, not weak: under PRIME it is outside the profile
    (outside,) = [f for f in result.findings if f.id == "posture-crypto.outside-profile"]
    assert [a["algorithm"] for a in outside.evidence["algorithms"]] == ["AES_CBC-128"]


def test_recorded_psk_connection_up_is_blamed_and_the_certificate_ones_loaded_beside_it_are_not() -> None:
    tunnels = linux.strongswan_tunnels(stream_events("list-conns-stream.bin"),
                                       stream_events("list-sas-psk-stream.bin"), "vici test")
    facts = ClientFacts(tunnels=tuple(tunnels))
    result = run_one(PostureAuthProbe, ctx(facts, {"allowed_auth": ["certificate"]}))
    bad = [f for f in result.findings if f.id == "posture-auth.auth-not-allowed"]
    assert [f.evidence["connection"] for f in bad] == ["psk"] and bad[0].severity.value == "high"
    assert result.status is Status.WARN
    # the organisation that accepts PSKs passes the same device
    assert run_one(PostureAuthProbe, ctx(facts, {"allowed_auth": ["certificate", "psk"]})).status is Status.PASS
    crypto = run_one(PostureCryptoProbe, ctx(facts))
    assert crypto.status is Status.PASS, [f.summary for f in crypto.findings]


# ---------------------------------------------------------------- kernel SAs (no vici to ask)

# `ip xfrm state` as iproute2 prints it (the layout of its output; keys replaced by obviously
# fake ones: real keys do not belong in a repository): an AES-GCM-256 pair (36-byte key with
# the RFC 4106 salt, 128-bit ICV) and a legacy 3DES + HMAC-MD5 pair.
XFRM_STATES = """\
src 192.0.2.10 dst 203.0.113.1
\tproto esp spi 0xc0000001 reqid 1 mode tunnel
\treplay-window 0 flag af-unspec
\taead rfc4106(gcm(aes)) 0x""" + "ab" * 36 + """ 128
\tanti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000
src 203.0.113.1 dst 192.0.2.10
\tproto esp spi 0xc0000002 reqid 1 mode tunnel
\treplay-window 32 flag af-unspec
\taead rfc4106(gcm(aes)) 0x""" + "cd" * 36 + """ 128
src 192.0.2.10 dst 198.51.100.7
\tproto esp spi 0xc0000003 reqid 2 mode tunnel
\treplay-window 0 flag af-unspec
\tauth-trunc hmac(md5) 0x""" + "ef" * 16 + """ 96
\tenc cbc(des3_ede) 0x""" + "01" * 24 + """
"""


def test_kernel_sas_are_graded_when_no_daemon_answers_and_their_keys_never_kept() -> None:
    from leakcheck.linux import xfrm

    states = xfrm.parse_states(XFRM_STATES)
    assert states[0].algorithms == (("aead", "rfc4106(gcm(aes))", 128),)
    assert states[2].algorithms == (("auth-trunc", "hmac(md5)", 96), ("enc", "cbc(des3_ede)", 192))
    assert "abab" not in repr(states)
    tunnels = {t.name: t for t in linux.xfrm_tunnels(states)}
    assert set(tunnels) == {"IPsec SAs 192.0.2.10 <-> 203.0.113.1", "IPsec SAs 192.0.2.10 <-> 198.51.100.7"}
    facts = ClientFacts(tunnels=tuple(tunnels.values()))
    result = run_one(PostureCryptoProbe, ctx(facts))
    (weak,) = [f for f in result.findings if f.id == "posture-crypto.weak-algorithm"]
    assert weak.evidence["connection"].endswith("198.51.100.7")
    assert {a["algorithm"] for a in weak.evidence["algorithms"]} == {"3DES_CBC-192", "HMAC_MD5_96"}
    gcm = [f for f in result.findings if f.id == "posture-crypto.negotiated" and "203.0.113.1" in f.evidence["connection"]]
    assert {a["algorithm"] for a in gcm[0].evidence["algorithms"]} == {"AES_GCM_16"}
    # how IKE authenticated is unknown here: listed, not blamed
    auth = run_one(PostureAuthProbe, ctx(facts, {"allowed_auth": ["certificate"]}))
    assert auth.status is Status.PASS and "posture-auth.tunnels" in ids(auth)


# ---------------------------------------------------------------- OpenVPN

CLIENT_CONF = """\
client
dev tun0
remote 203.0.113.1 1194   # comment
ca /etc/openvpn/ca.crt
cert /etc/openvpn/client.crt
key /etc/openvpn/client.key
data-ciphers AES-256-GCM:BF-CBC
tls-version-min 1.0
"""
LOG = """\
2026-12-02 13:00:00 Control Channel: TLSv1.3, cipher TLSv1.3 TLS_AES_256_GCM_SHA384, peer certificate: 256 bits ECprime256v1, signature: ecdsa-with-SHA256
2026-12-02 13:00:00 Data Channel: cipher 'AES-256-GCM', peer-id: 0
"""


def test_openvpn_options_auth_and_negotiated_ciphers() -> None:
    options = linux.parse_openvpn_options(["openvpn", "--config", "c.conf", "--auth-user-pass", "up.txt"],
                                          CLIENT_CONF + "<tls-crypt>\nxyz\n</tls-crypt>\n")
    assert options["remote"][:2] == ["203.0.113.1", "1194"]
    assert options["tls-crypt"] == ["[[INLINE]]"] and options["auth-user-pass"] == ["up.txt"]
    tunnel = linux.openvpn_tunnel(options, "/etc/openvpn/client.conf", LOG, 7, "tun0", "client")
    assert tunnel.auth == ("certificate", "password")
    assert tunnel.keys == (KeyStore("file", "/etc/openvpn/client.key"),)
    negotiated = {a.layer: a.items for a in tunnel.algorithms if a.state == "negotiated"}
    assert negotiated == {"data-channel": {"cipher": "AES-256-GCM"},
                          "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}}
    result = run_one(PostureCryptoProbe, ctx(ClientFacts(tunnels=(tunnel,))))
    (weak,) = [f for f in result.findings if f.id == "posture-crypto.weak-algorithm"]
    # negotiated AES-256-GCM is fine; what the configuration still allows is not
    assert {a["algorithm"] for a in weak.evidence["algorithms"]} == {"BF-CBC", "TLS 1.0"}
    assert all(a["state"] == "configured" for a in weak.evidence["algorithms"])


def test_openvpn_static_key_pkcs11_and_no_log() -> None:
    static = linux.openvpn_tunnel(linux.parse_openvpn_options(["openvpn", "--secret", "static.key", "1",
                                                               "--cipher", "AES-256-CBC"]), "cmd")
    assert static.auth == ("psk",)
    # static-key mode negotiates nothing: --cipher with the default SHA1 digest is in use, and weak
    in_use = [a for a in static.algorithms if a.state == "negotiated"]
    assert in_use[0].items == {"cipher": "AES-256-CBC", "auth": "SHA1"}
    crypto = run_one(PostureCryptoProbe, ctx(ClientFacts(tunnels=(static,))))
    assert "posture-crypto.weak-algorithm" in ids(crypto)
    unlogged = linux.openvpn_tunnel(linux.parse_openvpn_options(["openvpn", "--tls-client"]), "cmd")
    assert unlogged.notes
    token = linux.openvpn_tunnel(linux.parse_openvpn_options(
        ["openvpn"], "pkcs11-providers /usr/lib/p11-kit-proxy.so\npkcs11-id 'pkcs11:token=vpn'\n"), "conf")
    assert token.auth == ("certificate",) and token.keys[0].kind == "hardware"
    result = run_one(PostureCryptoProbe, ctx(ClientFacts(tunnels=(unlogged,))))
    assert "posture-crypto.not-observable" in ids(result)
    # a config the agent may not read: nothing is claimed about what it allows or how it authenticates
    hidden = linux.openvpn_tunnel(linux.parse_openvpn_options(["openvpn", "--config", "/etc/openvpn/c.conf"]),
                                  "/etc/openvpn/c.conf", config_read=False)
    assert hidden.algorithms == () and hidden.auth == ("unknown",) and "not readable" in hidden.notes[-1]
    assert run_one(PostureAuthProbe, ctx(ClientFacts(tunnels=(hidden,)))).status is Status.PASS


def test_openconnect_password_versus_pkcs11_certificate() -> None:
    plain = linux.openconnect_tunnel(["openconnect", "--protocol=gp", "vpn.example"])
    assert plain.protocol == "tls" and plain.auth == ("password",) and "gp" in plain.name
    cert = linux.openconnect_tunnel(["openconnect", "-c", "pkcs11:object=vpn", "vpn.example"])
    assert cert.auth == ("certificate",) and cert.keys[0].kind == "hardware"


# ---------------------------------------------------------------- NetworkManager keyfiles

NM_OPENVPN = """\
[connection]
id=Office
type=vpn

[vpn]
connection-type=password-tls
key=/home/u/.cert/office.key
remote=vpn.example.com
service-type=org.freedesktop.NetworkManager.openvpn
"""
NM_STRONGSWAN = """\
[connection]
id=Corp IPsec
type=vpn

[vpn]
address=gw.example.com
method=smartcard
service-type=org.freedesktop.NetworkManager.strongswan
"""


def test_networkmanager_vpn_profiles() -> None:
    office = linux.networkmanager_profile(NM_OPENVPN, "/etc/NetworkManager/system-connections/Office.nmconnection")
    assert office is not None and office.protocol == "openvpn" and office.auth == ("certificate", "password")
    assert office.keys == (KeyStore("file", "/home/u/.cert/office.key"),) and not office.active
    corp = linux.networkmanager_profile(NM_STRONGSWAN, "corp.nmconnection")
    assert corp is not None and corp.protocol == "ipsec" and corp.keys[0].kind == "hardware"
    assert linux.networkmanager_profile("[connection]\ntype=ethernet\n", "eth.nmconnection") is None
    result = run_one(PostureAuthProbe, ctx(ClientFacts(tunnels=(office, corp)), {"allowed_auth": ["certificate"],
                                                                                 "require_hardware_keys": True}))
    assert sorted(ids(result)) == ["posture-auth.auth-not-allowed", "posture-auth.key-in-file",
                                   "posture-auth.tunnels"]
    assert result.status is Status.WARN


# ---------------------------------------------------------------- packages and the advisory table

DPKG = """\
Package: openvpn
Status: install ok installed
Priority: optional
Version: 2.6.3-1+deb12u2
Depends: libc6
Description: virtual private network daemon
 continuation line: Version: 9.9

Package: libstrongswan
Status: deinstall ok config-files
Source: strongswan
Version: 5.9.8-5+deb12u1

Package: strongswan-charon
Status: install ok installed
Source: strongswan (5.9.8-5+deb12u6)
Version: 5.9.8-5+deb12u6

Package: bash
Status: install ok installed
Version: 5.2.15-2+b2
"""


def test_dpkg_status_keeps_installed_vpn_clients_only() -> None:
    packages = linux.parse_dpkg_status(DPKG)
    assert [(p.name, p.version, p.source) for p in packages] == [
        ("openvpn", "2.6.3-1+deb12u2", "openvpn"), ("strongswan-charon", "5.9.8-5+deb12u6", "strongswan")]


def test_shipped_table_backports_and_fallbacks() -> None:
    table = advisories.load()
    assert table.date and all(a.sources for a in table.advisories)
    (cve,) = [a for a in table.advisories if a.id == "CVE-2024-5594"]
    deb = lambda v: InstalledPackage("openvpn", v, "openvpn", "dpkg", "status")  # noqa: E731
    assert advisories.judge(cve, deb("2.6.3-1+deb12u2"), BOOKWORM).state == "vulnerable"
    assert advisories.judge(cve, deb("2.6.3-1+deb12u3"), BOOKWORM).state == "fixed"  # backported: same upstream
    assert advisories.judge(cve, deb("2.6.14-0+deb12u2"), BOOKWORM).state == "fixed"
    noble = Distribution("ubuntu", "noble")
    assert advisories.judge(cve, deb("2.6.9-1ubuntu4"), noble).state == "undetermined"
    assert advisories.judge(cve, deb("2.6.12-1ubuntu1"), noble).state == "fixed"
    built = InstalledPackage("openvpn", "2.6.9", "openvpn", "binary", "/usr/local/sbin/openvpn")
    assert advisories.judge(cve, built, BOOKWORM).state == "vulnerable"
    facts = ClientFacts(packages=tuple(linux.parse_dpkg_status(DPKG)), distribution=BOOKWORM)
    result = run_one(PostureUpdatesProbe, ctx(facts))
    outdated = [f for f in result.findings if f.id == "posture-updates.client-outdated"]
    assert {f.evidence["cve"] for f in outdated} == {"CVE-2024-5594", "CVE-2025-13086"}
    assert all(f.evidence["sources"] for f in outdated) and result.status is Status.WARN


def test_a_newer_collector_copy_wins_over_the_shipped_table_and_a_broken_one_is_ignored(tmp_path: Path) -> None:
    facts = ClientFacts(packages=(InstalledPackage("openvpn", "2.6.14-0+deb12u2", "openvpn", "dpkg", "s"),),
                        distribution=BOOKWORM)
    assert run_one(PostureUpdatesProbe, ctx(facts, tmp=tmp_path)).status is Status.PASS
    newer = {"schema": advisories.SCHEMA, "date": "2999-01-01", "advisories": [{
        "id": "CVE-2999-1", "package": "openvpn", "severity": "critical", "summary": "s", "introduced": "2.0",
        "fixed_upstream": "3.0", "fixed": {"debian": {"bookworm": "2.6.14-0+deb12u3"}}, "sources": ["test"]}]}
    (tmp_path / "advisories.json").write_text(json.dumps(newer))
    result = run_one(PostureUpdatesProbe, ctx(facts, tmp=tmp_path))
    assert ids(result)[0] == "posture-updates.client-outdated" and result.findings[0].severity.value == "critical"
    (tmp_path / "advisories.json").write_text("{not json")
    assert run_one(PostureUpdatesProbe, ctx(facts, tmp=tmp_path)).status is Status.PASS
    # a configured table that cannot be read is the probe's error, not a silent pass
    broken = run_one(PostureUpdatesProbe, ctx(facts, {"advisories_file": str(tmp_path / "advisories.json")}))
    assert broken.status is Status.ERROR and "cannot read the advisory table" in (broken.error or "")


@pytest.mark.parametrize("doc", [{}, {"schema": advisories.SCHEMA, "date": "x", "advisories": [{"id": "x"}]},
                                 {"schema": advisories.SCHEMA, "date": "x", "advisories": [{
                                     "id": "x", "package": "p", "severity": "urgent", "summary": "",
                                     "fixed_upstream": "1", "sources": ["s"]}]},
                                 {"schema": advisories.SCHEMA, "date": "x", "advisories": [{
                                     "id": "x", "package": "p", "severity": "low", "summary": "",
                                     "fixed_upstream": "not a version", "sources": ["s"]}]}])
def test_malformed_tables_are_refused(doc: dict) -> None:
    with pytest.raises(advisories.AdvisoryError):
        advisories.parse(doc, "t.json")


def test_os_release() -> None:
    assert linux.parse_os_release('ID=debian\nVERSION_CODENAME=bookworm\nVERSION_ID="12"\n') == BOOKWORM
    assert linux.parse_os_release("NAME=x\n") is None


# ---------------------------------------------------------------- NCSC grading and policy keys

@pytest.mark.parametrize("sa,layer,grades", [
    ({"version": "2", "encr-alg": "AES_GCM_16", "encr-keysize": "128", "prf-alg": "PRF_HMAC_SHA2_256",
      "dh-group": "ECP_256"}, "ike", {"prime"}),  # PRIME exactly
    ({"encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA2_256_128"}, "esp", {"foundation", "prime"}),
    ({"version": "1", "encr-alg": "AES_CBC", "encr-keysize": "128", "integ-alg": "HMAC_SHA2_256_128",
      "prf-alg": "PRF_HMAC_SHA2_256", "dh-group": "MODP_2048"}, "ike", {"foundation", "prime"}),
    ({"encr-alg": "CHACHA20_POLY1305", "encr-keysize": "256", "dh-group": "CURVE_25519"}, "esp", {"outside"}),
    ({"encr-alg": "AES_CBC", "encr-keysize": "256", "integ-alg": "HMAC_MD5_96", "dh-group": "MODP_2048_256"},
     "esp", {"foundation", "weak"}),
])
def test_ipsec_grades(sa: dict, layer: str, grades: set) -> None:
    assert {g.grade for g in cp.ipsec_sa(sa, layer)} == grades


def test_openvpn_and_tls_grades() -> None:
    assert cp.openvpn_data_cipher("AES-256-GCM").grade == cp.PRIME
    assert cp.openvpn_data_cipher("AES-256-CBC", "SHA256").grade == cp.FOUNDATION
    assert cp.openvpn_data_cipher("AES-128-CBC").grade == cp.WEAK  # auth SHA1 by default
    assert cp.openvpn_data_cipher("BF-CBC", "SHA256").grade == cp.WEAK
    assert cp.openvpn_data_cipher("CHACHA20-POLY1305").grade == cp.OUTSIDE
    assert cp.tls_version("TLSv1.1").grade == cp.WEAK and cp.tls_version("1.2").grade == cp.PRIME
    assert cp.tls_cipher("ECDHE-RSA-AES128-SHA").grade == cp.WEAK  # CBC with SHA-1, MAC-then-encrypt
    assert cp.tls_cipher("ECDHE-ECDSA-AES256-GCM-SHA384").grade == cp.PRIME


def test_posture_policy_keys_are_validated() -> None:
    assert config.defaults().get("posture", "crypto_profile") == "ncsc-prime"
    for key, bad in (("allowed_protocols", ["pptp"]), ("allowed_auth", "certificate"),
                     ("crypto_profile", "ncsc-gold"), ("require_hardware_keys", "yes")):
        with pytest.raises(ConfigError, match=f"posture.{key}"):
            config.from_mapping({"posture": {key: bad}})
    with pytest.raises(ConfigError, match="posture.allowed_ciphers"):
        config.from_mapping({"posture": {"allowed_ciphers": []}})


def test_nothing_found_is_a_skip_with_its_reason() -> None:
    for probe in POSTURE:
        result = run_one(probe, ctx(ClientFacts(notes=("nothing here",))))
        assert result.status is Status.SKIP and result.findings[0].evidence["reason"]


# ---------------------------------------------------------------- properties over generated facts

NAMES = st.text(alphabet="abcdefghijklmnop-_0123456789", min_size=1, max_size=12)
ALG_VALUES = st.sampled_from(["AES_GCM_16", "AES_CBC", "3DES_CBC", "HMAC_SHA1_96", "HMAC_SHA2_256_128", "ECP_384",
                              "MODP_1024", "MODP_2048", "CURVE_25519", "PRF_HMAC_SHA1", "PRF_HMAC_SHA2_384", "2",
                              "1", "128", "256", "x", "", "AES-256-GCM:BF-CBC", "TLSv1.3", "1.0", "AES-128-CBC",
                              "SHA1", "TLS_AES_256_GCM_SHA384", "RC4-MD5", "ü\u2028"])
ALGORITHMS = st.builds(Algorithms, st.sampled_from(["ike", "esp", "data-channel", "tls", "other"]),
                       st.sampled_from(["negotiated", "configured"]),
                       st.dictionaries(st.sampled_from(["version", "encr-alg", "encr-keysize", "integ-alg", "prf-alg",
                                                        "dh-group", "cipher", "auth", "data-ciphers",
                                                        "tls-version-min", "tls-cipher", "data-ciphers-fallback"]),
                                       ALG_VALUES, max_size=6), NAMES)
TUNNELS = st.builds(TunnelConfig, st.sampled_from(["strongswan", "openvpn", "wireguard", "networkmanager"]), NAMES,
                    st.sampled_from(PROTOCOLS), NAMES, st.one_of(st.none(), NAMES), st.booleans(),
                    st.lists(st.sampled_from([*AUTH_CLASSES, "unknown"]), max_size=3).map(tuple),
                    st.lists(NAMES, max_size=2).map(tuple),
                    st.lists(st.builds(KeyStore, st.sampled_from(["hardware", "file", "inline", "unknown"]), NAMES),
                             max_size=2).map(tuple),
                    st.lists(ALGORITHMS, max_size=4).map(tuple))
VERSIONS = st.sampled_from(["2.6.3-1+deb12u2", "2.6.14-0+deb12u2", "1:2.7.0-1", "5.9.8-5", "2.6.9", "weird version",
                            "0.0.1~rc1", "9.01-3"])
PACKAGES = st.builds(InstalledPackage, st.sampled_from(["openvpn", "libstrongswan", "openconnect"]), VERSIONS,
                     st.sampled_from(["openvpn", "strongswan", "openconnect"]), st.sampled_from(["dpkg", "rpm",
                                                                                                "binary"]), NAMES)
FACTS = st.builds(ClientFacts, st.lists(TUNNELS, max_size=4).map(tuple), st.lists(PACKAGES, max_size=4).map(tuple),
                  st.one_of(st.none(), st.sampled_from([BOOKWORM, Distribution("ubuntu", "noble"),
                                                        Distribution("fedora", "")])))
POLICIES = st.fixed_dictionaries({
    "allowed_protocols": st.lists(st.sampled_from(PROTOCOLS), unique=True),
    "allowed_auth": st.lists(st.sampled_from(AUTH_CLASSES), unique=True),
    "require_hardware_keys": st.booleans(),
    "crypto_profile": st.sampled_from(["ncsc-prime", "ncsc-foundation"])})


@given(FACTS, POLICIES)
@settings(max_examples=150, deadline=None)
def test_any_client_facts_give_well_formed_results_the_collector_accepts(facts: ClientFacts, policy: dict) -> None:
    context = ctx(facts, policy)
    results = [run_one(probe, context) for probe in POSTURE]
    for probe, result in zip(POSTURE, results):
        assert result.status is not Status.ERROR, result.error
        assert result.checks == probe.checks
        for finding in result.findings:
            assert finding.id in probe.finding_ids or finding.id == f"{probe.name}.skipped"
            assert finding.summary.strip() and (finding.guidance or result.status is Status.SKIP)
            json.dumps(finding.evidence, allow_nan=False)
    report = Report(report_id="00000000-0000-4000-8000-000000000000", agent_version="0.0.0",
                    device={"id": "d1", "hostname": "laptop", "os": "linux", "os_version": "t"},
                    started_at=utcnow(), finished_at=utcnow(), trigger="manual",
                    tunnel=Tunnel("absent", "none", ()).summary(), probes=results)
    ReportIn.model_validate(json.loads(json.dumps(report.to_dict())))
