"""The posture probes on constructed states and configuration trees.

The what-if (leakcheck/whatif.py) takes the tunnel away from a wg-quick
state and asks the egress verdict with the kernel model; the firewall is
real `nft -j list ruleset` output (tests/unit/data/nft-killswitch-*.json,
see test_verdict.py for how they were recorded). The configuration trees are
written in the formats the programs document: NetworkManager keyfiles
(nm-settings-keyfile(5): [connection] id/uuid/type/autoconnect/secondaries/
permissions, [vpn] service-type), NetworkManager.conf(5) [connectivity]
uri/enabled, systemd unit files and *.wants symlinks (systemd.unit(5)),
swanctl.conf(5) start_action, ipsec.conf(5) auto, openvpn(8) keepalive /
persist-tun.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakcheck import config
from leakcheck.errors import ConfigError, ProbeSkipped
from leakcheck.fibmodel import ModelKernel
from leakcheck.netstate import Firewall, Link, NetState, Rule, WireGuardInfo
from leakcheck.oracle import Oracle, Path as Egress
from leakcheck.platform import posture
from leakcheck.probe import ProbeContext
from leakcheck.report import Status, status_from_findings
from leakcheck.tunnel import detect
from leakcheck.whatif import egress_without_tunnel, without_tunnel
from leakcheck.probes.posture_autoconnect import PostureAutoconnectProbe
from leakcheck.probes.posture_captive import PostureCaptiveProbe
from leakcheck.probes.posture_forced import PostureForcedProbe
from tests.unit.test_verdict import ADDRS, LINKS, ROUTES, firewall

WG_RULES = (Rule(4, 0, "lookup", 255), Rule(4, 32764, "lookup", 254, suppress_prefixlen=0),
            Rule(4, 32765, "lookup", 51820, invert=True, fwmark=51820, fwmask=0xFFFFFFFF),
            Rule(4, 32766, "lookup", 254), Rule(4, 32767, "lookup", 253))
WG = (WireGuardInfo("wg0", 51820, ("203.0.113.1",), ("0.0.0.0/0",), None),)
CANARIES = {"canaries": {"ipv4": ["192.0.2.10"], "ipv6": []}}


def wg_state(fw: Firewall | None) -> NetState:
    return NetState(links=LINKS, addresses=ADDRS, routes=ROUTES, rules=WG_RULES, firewall=fw, wireguard=WG)


def context(state: NetState, facts: posture.PostureFacts | None = None, **cfg: Any) -> ProbeContext:
    cfg_all = {**CANARIES, **cfg}
    conf = config.from_mapping(cfg_all)
    tunnel = detect(state, conf)
    facts = facts if facts is not None else posture.PostureFacts(root="/nonexistent")
    return ProbeContext(config=conf, state=state, tunnel=tunnel, oracle=Oracle(state, tunnel, ModelKernel(state)),
                        is_root=True, active=False, posture_reader=lambda: facts)


def ids(findings: list) -> list[str]:
    return [f.id for f in findings]


# -- the what-if -----------------------------------------------------------------------

def test_what_if_removes_the_tunnel_and_nothing_else():
    state = wg_state(firewall("nft-killswitch-verdict.json"))
    tunnel = detect(state, config.defaults())
    now = Oracle(state, tunnel, ModelKernel(state)).egress("192.0.2.10")
    assert (now.path, now.interface) == (Egress.TUNNEL, "wg0")  # today: into the tunnel
    what, (after,) = egress_without_tunnel(state, tunnel, [ipaddress.ip_address("192.0.2.10")])
    assert what.removed["links_down"] == ["wg0"] and what.removed["routes_count"] == 1
    assert not any("wg0" in r.ifnames for r in what.state.routes)
    assert what.state.firewall is state.firewall and what.state.rules == state.rules  # wg-quick's rules stay
    assert not what.state.link("wg0").admin_up and state.link("wg0").admin_up  # the original is untouched
    assert (after.path, after.interface) == (Egress.BLOCKED, "eth0")
    assert "drop" in after.firewall.evidence()["result"]


def test_no_kill_switch_means_traffic_in_clear_with_the_route_named():
    ctx = context(wg_state(Firewall(sources=("nftables",))))
    findings = PostureForcedProbe().run(ctx)
    assert ids(findings) == ["posture-forced.no-lockdown"]
    first = findings[0].evidence["first_clear"]
    assert (first["interface"], first["gateway"], first["path"]) == ("eth0", "100.64.0.1", "clear")
    assert first["route"].startswith("default via 100.64.0.1 dev eth0")
    assert findings[0].evidence["families"]["IPv4"]["result"] == "clear"
    assert status_from_findings(findings) is Status.WARN


def test_kill_switch_blocks_and_the_rule_is_cited():
    ctx = context(wg_state(firewall("nft-killswitch-verdict.json")))
    findings = PostureForcedProbe().run(ctx)
    assert ids(findings) == ["posture-forced.lockdown"]
    assert "dropped by the firewall's output chain" in findings[0].summary
    dest = findings[0].evidence["families"]["IPv4"]["destinations"][0]
    assert dest["decided_by"] == "firewall" and dest["interface"] == "eth0"
    assert status_from_findings(findings) is Status.PASS


def test_a_kill_switch_that_lets_the_web_out_is_no_lockdown():
    ctx = context(wg_state(firewall("nft-killswitch-tcp443.json")))
    findings = PostureForcedProbe().run(ctx)
    assert ids(findings) == ["posture-forced.no-lockdown"]
    assert findings[0].evidence["first_clear"]["firewall"]["classes"]["TCP/443"]["result"] == "accept"


def test_policy_may_accept_no_lockdown_as_info():
    ctx = context(wg_state(Firewall(sources=("nftables",))), posture={"require_lockdown": False})
    findings = PostureForcedProbe().run(ctx)
    assert ids(findings) == ["posture-forced.no-lockdown"] and status_from_findings(findings) is Status.PASS


def test_without_a_readable_firewall_the_probe_skips():
    with pytest.raises(ProbeSkipped, match="firewall could not be read"):
        PostureForcedProbe().run(context(wg_state(None)))
    with pytest.raises(ProbeSkipped, match="no posture reader"):
        PostureForcedProbe().run(context(wg_state(Firewall(sources=("nftables",))),
                                         posture.PostureFacts(limits=["no posture reader here"])))


def test_xfrm_tunnel_policies_go_block_policies_stay():
    from leakcheck.netstate import XfrmPolicy, XfrmTemplate
    net = ipaddress.ip_network
    protect = XfrmPolicy("out", net("0.0.0.0/0"), net("0.0.0.0/0"), 100, "allow",
                         (XfrmTemplate("100.64.0.2", "203.0.113.1", "esp", "tunnel"),))
    block = XfrmPolicy("out", net("0.0.0.0/0"), net("0.0.0.0/0"), 200, "block")
    state = NetState(links=LINKS[:2], addresses=ADDRS[:1], routes=ROUTES[:1], rules=WG_RULES,
                     xfrm_policies=(protect, block), firewall=Firewall(sources=("nftables",)))
    what = without_tunnel(state, detect(state, config.defaults()))
    assert what.state.xfrm_policies == (block,)
    _, (after,) = egress_without_tunnel(state, detect(state, config.defaults()), [ipaddress.ip_address("192.0.2.10")])
    assert after.path is Egress.BLOCKED and after.decided_by.value == "xfrm"


# -- configuration facts -----------------------------------------------------------------

def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


VPN_KEYFILE = """[connection]
id=corp-vpn
uuid=11111111-2222-3333-4444-555555555555
type=vpn
autoconnect={auto}
{perm}
[vpn]
service-type=org.freedesktop.NetworkManager.openvpn
"""
WIFI_KEYFILE = """[connection]
id=home-wifi
uuid=aaaaaaaa-2222-3333-4444-555555555555
type=wifi
{secondaries}
[wifi]
ssid=home
"""


# polkit(8) action file, the network-control entry as NetworkManager ships it (Debian 12's
# /usr/share/polkit-1/actions/org.freedesktop.NetworkManager.policy, translations left out)
NM_POLICY = """<?xml version="1.0" encoding="UTF-8"?>
<policyconfig>
  <action id="org.freedesktop.NetworkManager.enable-disable-network">
    <defaults><allow_any>no</allow_any><allow_inactive>no</allow_inactive><allow_active>yes</allow_active></defaults>
  </action>
  <action id="org.freedesktop.NetworkManager.network-control">
    <description>Allow control of network connections</description>
    <defaults>
      <allow_any>auth_admin</allow_any>
      <allow_inactive>yes</allow_inactive>
      <allow_active>{active}</allow_active>
    </defaults>
  </action>
</policyconfig>
"""
# Debian's own rule (same package): it only touches settings.modify.system
DEBIAN_RULE = """polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.NetworkManager.settings.modify.system" &&
        subject.local && subject.active &&
        (subject.isInGroup ("sudo") || subject.isInGroup ("netdev"))) {
        return polkit.Result.YES;
    }
});
"""


def nm_tree(root: Path, auto: str = "false", secondaries: str = "", perm: str = "",
            connectivity: str | None = None, control: str = "yes") -> None:
    write(root, "usr/share/polkit-1/actions/org.freedesktop.NetworkManager.policy", NM_POLICY.format(active=control))
    write(root, "usr/share/polkit-1/rules.d/org.freedesktop.NetworkManager.rules", DEBIAN_RULE)
    write(root, "etc/NetworkManager/system-connections/corp-vpn.nmconnection", VPN_KEYFILE.format(auto=auto, perm=perm))
    write(root, "etc/NetworkManager/system-connections/home.nmconnection", WIFI_KEYFILE.format(secondaries=secondaries))
    write(root, "etc/NetworkManager/NetworkManager.conf", "[main]\nplugins=ifupdown,keyfile\n")
    if connectivity is not None:
        write(root, "usr/lib/NetworkManager/conf.d/20-connectivity.conf",
              "[connectivity]\nuri=http://nmcheck.example.org/check_network_status.txt\n")
        write(root, "etc/NetworkManager/conf.d/99-local.conf", connectivity)


def enable(root: Path, unit: str, text: str, target: str = "multi-user.target") -> None:
    template = unit.split("@")[0] + "@.service" if "@" in unit else unit
    write(root, f"lib/systemd/system/{template}", text)
    wants = root / f"etc/systemd/system/{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink(f"/lib/systemd/system/{template}", wants / unit)


def test_nm_profile_autoconnect_off_is_manual(tmp_path):
    nm_tree(tmp_path)
    facts = posture.read(tmp_path)
    (vpn,) = [p for p in facts.nm_profiles if p.is_vpn]
    assert (vpn.id, vpn.autoconnect, vpn.service_type) == ("corp-vpn", False, "org.freedesktop.NetworkManager.openvpn")
    findings = PostureAutoconnectProbe().run(context(wg_state(None), facts))
    assert ids(findings) == ["posture-autoconnect.manual"]
    assert "connection.autoconnect=no" in findings[0].summary
    assert findings[0].evidence["manual"][0]["profile"]["file"].endswith("corp-vpn.nmconnection")
    assert status_from_findings(findings) is Status.WARN


@pytest.mark.parametrize("auto,secondaries,why", [
    ("true", "", "connection.autoconnect=yes"),
    ("false", "secondaries=11111111-2222-3333-4444-555555555555;", "with 'home-wifi'")])
def test_nm_profile_autoconnect_on_or_secondary_is_automatic(tmp_path, auto, secondaries, why):
    nm_tree(tmp_path, auto=auto, secondaries=secondaries)
    findings = PostureAutoconnectProbe().run(context(wg_state(None), posture.read(tmp_path)))
    assert ids(findings) == ["posture-autoconnect.automatic"] and why in findings[0].summary


def test_enabled_units_strongswan_start_action_and_openvpn_restart(tmp_path):
    enable(tmp_path, "openvpn-client@corp.service", "[Unit]\nAfter=network-online.target\n")
    write(tmp_path, "etc/openvpn/client/corp.conf", "client\nremote vpn.example.org 1194\npersist-key\n")
    facts = posture.read(tmp_path)
    findings = PostureAutoconnectProbe().run(context(wg_state(None), facts))
    assert ids(findings) == ["posture-autoconnect.automatic", "posture-autoconnect.openvpn-no-restart"]
    assert findings[1].evidence["missing"] == ["keepalive (or ping-restart)", "persist-tun"]
    write(tmp_path, "etc/openvpn/client/corp.conf", "client\nkeepalive 10 60\npersist-tun # keep it\n")
    findings = PostureAutoconnectProbe().run(context(wg_state(None), posture.read(tmp_path)))
    assert ids(findings) == ["posture-autoconnect.automatic"]

    swan = tmp_path / "swan"
    enable(swan, "strongswan.service", "[Unit]\nAfter=network-online.target\n")
    write(swan, "etc/swanctl/conf.d/corp.conf", "connections {\n corp {\n  children {\n   net {\n"
                                                 "    start_action = none\n   }\n  }\n }\n}\n")
    findings = PostureAutoconnectProbe().run(context(wg_state(None), posture.read(swan)))
    assert ids(findings) == ["posture-autoconnect.manual"] and "start_action = start" in findings[0].summary
    write(swan, "etc/swanctl/conf.d/corp.conf", "connections {\n corp {\n  children {\n   net {\n"
                                                 "    start_action = start\n   }\n  }\n }\n}\n")
    findings = PostureAutoconnectProbe().run(context(wg_state(None), posture.read(swan)))
    assert ids(findings) == ["posture-autoconnect.automatic"] and "start_action = start" in findings[0].summary


def test_nothing_to_read_skips_autoconnect(tmp_path):
    with pytest.raises(ProbeSkipped, match="no VPN configuration found"):
        PostureAutoconnectProbe().run(context(wg_state(None), posture.read(tmp_path)))


def test_boot_order_and_who_can_disconnect(tmp_path):
    nm_tree(tmp_path)
    enable(tmp_path, "nftables.service", "[Unit]\nWants=network-pre.target\nBefore=network-pre.target shutdown.target\n",
           "sysinit.target")
    ctx = context(wg_state(firewall("nft-killswitch-verdict.json")), posture.read(tmp_path))
    findings = PostureForcedProbe().run(ctx)
    assert ids(findings) == ["posture-forced.lockdown", "posture-forced.user-can-disable"]
    assert findings[0].evidence["at_boot"]["state"] == "yes"
    assert "no connection.permissions" in findings[1].summary and "allow_active=yes" in findings[1].summary
    assert findings[1].evidence["user_can_disable"]["polkit"]["allow_active"] == "yes"

    # the boot ruleset (nft(8) syntax, includes followed) must hold the table that blocks
    write(tmp_path, "etc/nftables.conf", '#!/usr/sbin/nft -f\nflush ruleset\ninclude "/etc/nftables.d/*.nft"\n')
    write(tmp_path, "etc/nftables.d/10-filter.nft", "table inet filter {\n  chain input { type filter hook input "
                                                    "priority 0; }\n}\n")
    ctx = context(wg_state(firewall("nft-killswitch-verdict.json")), posture.read(tmp_path))
    findings = PostureForcedProbe().run(ctx)
    assert ids(findings) == ["posture-forced.lockdown", "posture-forced.lockdown-not-at-boot",
                             "posture-forced.user-can-disable"]
    assert findings[1].evidence["at_boot"]["missing_tables"] == ["inet killswitch"]
    assert "gone after a reboot" in findings[1].summary
    write(tmp_path, "etc/nftables.d/20-killswitch.nft", "table inet killswitch {\n}\n")
    findings = PostureForcedProbe().run(context(wg_state(firewall("nft-killswitch-verdict.json")), posture.read(tmp_path)))
    assert findings[0].evidence["at_boot"]["state"] == "yes"
    assert len(findings[0].evidence["at_boot"]["boot_ruleset"]) == 3

    admin = tmp_path / "admin"
    nm_tree(admin, control="auth_admin_keep")
    findings = PostureForcedProbe().run(context(wg_state(firewall("nft-killswitch-verdict.json")), posture.read(admin)))
    assert ids(findings) == ["posture-forced.lockdown"]
    assert findings[0].evidence["user_can_disable"]["state"] == "no"

    late = tmp_path / "late"
    nm_tree(late, perm="permissions=user:alice;")
    enable(late, "nftables.service", "[Unit]\nAfter=network.target\n")
    write(late, "etc/polkit-1/rules.d/50-nm.rules",
          'polkit.addRule(function(a, s) { if (a.id.indexOf("org.freedesktop.NetworkManager.") == 0) '
          "{ return polkit.Result.AUTH_ADMIN; } });\n")
    findings = PostureForcedProbe().run(context(wg_state(firewall("nft-killswitch-verdict.json")), posture.read(late)))
    assert ids(findings) == ["posture-forced.lockdown", "posture-forced.lockdown-not-at-boot"]
    assert findings[0].evidence["user_can_disable"]["state"] == "unknown"
    assert "50-nm.rules" in findings[0].evidence["user_can_disable"]["reason"]


def test_captive_helper_check_and_broad_exceptions(tmp_path):
    nm_tree(tmp_path, connectivity="")
    write(tmp_path, "usr/libexec/gnome-shell-portal-helper", "")
    state = wg_state(None)
    findings = PostureCaptiveProbe().run(context(state, posture.read(tmp_path)))
    assert ids(findings) == ["posture-captive.helper"]
    assert "nmcheck.example.org" in findings[0].summary and "portal-helper" in findings[0].summary

    off = tmp_path / "off"
    nm_tree(off, connectivity="[connectivity]\nenabled=false\n")
    findings = PostureCaptiveProbe().run(context(state, posture.read(off), policy={
        "allowed_direct": ["0.0.0.0/0", "198.51.100.128/25", "2001:db8::/32"]}))
    assert ids(findings) == ["posture-captive.no-helper", "posture-captive.broad-exception"]
    assert "turned off (enabled=false" in findings[0].summary
    assert [b["prefix"] for b in findings[1].evidence["broad"]] == ["0.0.0.0/0", "2001:db8::/32"]
    assert findings[1].evidence["broad"][0]["everything"] is True

    networkd = tmp_path / "networkd"
    enable(networkd, "systemd-networkd.service", "[Unit]\n")
    findings = PostureCaptiveProbe().run(context(state, posture.read(networkd), posture={
        "require_captive_helper": False, "captive_exception_max_prefix": 16}, policy={"allowed_direct": ["10.0.0.0/16"]}))
    assert ids(findings) == ["posture-captive.no-helper"] and "systemd-networkd" in findings[0].summary
    assert status_from_findings(findings) is Status.PASS


def test_posture_keys_are_validated():
    assert config.defaults().get("posture", "require_lockdown") is True
    with pytest.raises(ConfigError, match="posture.require_lockdwn"):
        config.from_mapping({"posture": {"require_lockdwn": True}})
    with pytest.raises(ConfigError, match="captive_exception_max_prefix"):
        config.from_mapping({"posture": {"captive_exception_max_prefix": 33}})
    with pytest.raises(ConfigError, match="require_autoconnect"):
        config.from_mapping({"posture": {"require_autoconnect": "yes"}})


KEY = st.text("abcdefghijklmnopqrstuvwxyz-_.", min_size=1, max_size=12)
VALUE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["connection", "vpn", "wifi", "ipv4", "connectivity", "x y"]),
                       st.dictionaries(KEY, VALUE, max_size=5), max_size=4),
       st.sampled_from([".nmconnection", ".conf"]))
def test_keyfile_and_conf_reader_never_crashes(sections, suffix):
    """Any well-formed keyfile (sections of key=value) is read or noted, never raised."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text = "".join(f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in body.items()) for name, body in sections.items())
        folder = "etc/NetworkManager/system-connections" if suffix == ".nmconnection" else "etc/NetworkManager/conf.d"
        write(root, f"{folder}/x{suffix}", text)
        facts = posture.read(root)
        if suffix == ".nmconnection":
            assert len(facts.nm_profiles) + len(facts.limits) == 1
            for p in facts.nm_profiles:
                assert isinstance(p.autoconnect, bool)
        PostureCaptiveProbe().run(context(wg_state(None), facts))
