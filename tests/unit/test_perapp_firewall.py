"""Firewall reading (recorded `nft -j list ruleset` and `iptables-save` output)
and the small evaluator the perapp and tethering probes use."""

from __future__ import annotations

import json
from pathlib import Path

from leakcheck.linux.firewall import (Flow, effective_mark, filter_verdict, mark_setters, marks_for, nat_rules,
                                      parse_iptables_save, parse_nft_json, rule_matches)
from leakcheck.netstate import Firewall

DATA = Path(__file__).parent / "data"


def load_nft(name: str, **kw) -> Firewall:
    chains, rules = parse_nft_json((DATA / name).read_text(), **kw)
    return Firewall(chains=tuple(chains), rules=tuple(rules), sources=("nftables",))


def load_ipt() -> Firewall:
    chains, rules = parse_iptables_save((DATA / "iptables-save-split-tether.txt").read_text(), "iptables")
    return Firewall(chains=tuple(chains), rules=tuple(rules), sources=("iptables",))


# -- nftables ------------------------------------------------------------------------------

def test_nft_rules_keep_owner_selectors_marks_and_actions():
    fw = load_nft("nft-split-tether.json")
    by_text = {r.text: r for r in fw.rules}
    uid = by_text["meta skuid 1234 meta mark set 0x00001234"]
    assert uid.uids == ((1234, 1234),) and uid.set_mark == 0x1234 and uid.chain == "out"
    assert by_text["meta skuid 1000-2000 meta mark set 0x00000010"].uids == ((1000, 2000),)
    gid = by_text["meta skgid { 100, 200 } ct mark set 0x00000020"]
    assert gid.gids == ((100, 100), (200, 200)) and gid.set_ct_mark == 0x20 and gid.set_mark is None
    assert by_text["meta cgroup 1048577 meta mark set 0x6d6f6c65"].cgroups == ("classid:0x100001",)
    assert by_text["ip daddr 198.51.100.0/24 meta mark set 0x00000030"].daddrs == ("198.51.100.0/24",)
    # a mark copied from conntrack is not a constant: nothing to evaluate
    assert by_text["meta mark set ct mark"].set_mark is None
    wg = by_text["meta l4proto udp meta mark 0x0000ca6c ct mark set meta mark"]
    assert wg.marks == ((51820, 0xFFFFFFFF),) and wg.l4protos == ("udp",)
    neg = by_text['meta skuid != 0 oifname "eth0" ip daddr { 1.1.1.1, 9.9.9.0/24 } meta mark set 0x00000007']
    assert neg.negated == ("uids",) and neg.daddrs == ("1.1.1.1/32", "9.9.9.0/24")
    nat = by_text['ip saddr 192.168.42.0/24 oifname "eth0" masquerade']
    assert nat.action == "masquerade" and nat.oifnames == ("eth0",)
    assert by_text['oifname "wg0" snat to 100.100.0.2'].target == "100.100.0.2"
    jump = by_text['iifname != "wg*" oifname "eth0" ip saddr != 10.0.0.0/8 jump sub']
    assert jump.action == "jump" and jump.target == "sub" and set(jump.negated) == {"iifnames", "saddrs"}
    # ports are understood (and imply the protocol): no longer opaque
    port = by_text["tcp dport 443 drop"]
    assert port.opaque == () and port.dports == ((443, 443),) and port.l4protos == ("tcp",)


def test_nft_chains_carry_hook_type_priority_and_policy():
    fw = load_nft("nft-split-tether.json")
    out = fw.chain("nftables", "inet", "split", "out")
    assert (out.type, out.hook, out.priority, out.policy) == ("route", "output", -150, "accept")
    assert fw.chain("nftables", "inet", "split", "sub").hook is None


def test_mark_setters_and_the_mark_a_users_packet_gets():
    fw = load_nft("nft-split-tether.json")
    setters = {r.set_mark for r in mark_setters(fw, 4)}
    assert setters == {0x1234, 0x10, 0x6d6f6c65, 0x30, 7}
    as_1234 = marks_for(fw, Flow(4, daddr="198.51.100.1", uid=1234, gid=1234))
    # 0x1234 for uid 1234, 0x10 for 1000-2000, then the rule for 198.51.100.0/24: the last one wins
    assert [m.mark for m in as_1234 if m.certain] == [0x1234, 0x10, 0x30]
    assert effective_mark(as_1234) == 0x30
    as_1500 = marks_for(fw, Flow(4, daddr="192.0.2.1", uid=1500, gid=1500))
    assert effective_mark(as_1500) == 0x10
    # the cgroup rule may match (the flow's cgroup is unknown): listed, never applied
    assert any(m.mark == 0x6d6f6c65 and not m.certain for m in as_1500)


def test_forward_chain_verdicts():
    fw = load_nft("nft-split-tether.json")
    to_wg = Flow(4, daddr="198.51.100.1", saddr="192.168.42.2", iif="usb0", oif="wg0")
    assert filter_verdict(fw, "forward", to_wg).result == "accept"
    to_eth = Flow(4, daddr="198.51.100.1", saddr="192.168.42.2", iif="usb0", oif="eth0")
    verdict = filter_verdict(fw, "forward", to_eth)
    assert verdict.result == "drop" and verdict.rule.action == "reject"  # via the jump to 'sub'
    from_corp = Flow(4, daddr="198.51.100.1", saddr="10.1.1.1", iif="usb0", oif="eth0")
    assert filter_verdict(fw, "forward", from_corp).result == "drop"  # falls to the policy
    assert filter_verdict(fw, "forward", from_corp).rule is None


def test_an_accept_that_may_match_makes_a_later_drop_uncertain():
    body = {"nftables": [
        {"chain": {"family": "inet", "table": "k", "name": "fwd", "type": "filter", "hook": "forward", "prio": 0,
                   "policy": "drop"}},
        {"rule": {"family": "inet", "table": "k", "chain": "fwd", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
            {"accept": None}]}}]}
    chains, rules = parse_nft_json(json.dumps(body))
    fw = Firewall(chains=tuple(chains), rules=tuple(rules), sources=("nftables",))
    verdict = filter_verdict(fw, "forward", Flow(4, daddr="198.51.100.1", iif="usb0", oif="eth0"))
    assert verdict.result == "uncertain" and "udp dport 53" in verdict.note


def test_wg_quick_tables_and_an_output_kill_switch_leave_forwarding_open():
    fw = load_nft("nft-wg-quick-output-killswitch.json")
    assert mark_setters(fw, 4) == []  # wg-quick only copies marks to and from conntrack
    flow = Flow(4, daddr="198.51.100.1", saddr="192.168.42.2", iif="usb0", oif="eth0")
    assert filter_verdict(fw, "forward", flow).result == "accept"
    out = Flow(4, daddr="198.51.100.1", oif="eth0")
    assert filter_verdict(fw, "output", out).result == "drop"
    assert filter_verdict(fw, "output", Flow(4, daddr="198.51.100.1", oif="wg0")).result == "accept"


def test_nat_rules_for_a_forwarded_flow():
    fw = load_nft("nft-split-tether.json")
    flow = Flow(4, daddr="198.51.100.1", saddr="192.168.42.2", iif="usb0", oif="eth0")
    matching = [r.text for r in nat_rules(fw, 4) if rule_matches(r, flow) is not False]
    assert matching == ['ip saddr 192.168.42.0/24 oifname "eth0" masquerade']
    assert nat_rules(fw, 6) == []  # an `ip` table says nothing about IPv6


def test_iptables_nft_tables_are_read_once():
    fw = load_nft("nft-split-tether.json", skip_iptables_tables=True)
    assert not any(r.table == "nat" for r in fw.rules)  # ip nat: owned by iptables-nft, read via iptables-save


def test_cgroupv2_selector():
    body = {"nftables": [{"rule": {"family": "inet", "table": "t", "chain": "c", "expr": [
        {"match": {"op": "==", "left": {"socket": {"key": "cgroupv2", "level": 2}},
                   "right": "user.slice/app.scope"}},
        {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1}}]}}]}
    (rule,) = parse_nft_json(json.dumps(body))[1]
    assert rule.cgroups == ("cgroupv2:user.slice/app.scope",)
    assert rule.text == 'socket cgroupv2 level 2 "user.slice/app.scope" meta mark set 0x00000001'
    assert rule_matches(rule, Flow(4, cgroup="/user.slice/app.scope/sub")) is True
    assert rule_matches(rule, Flow(4, cgroup="/user.slice/other.scope")) is False
    assert rule_matches(rule, Flow(4)) is None


# -- iptables-save ---------------------------------------------------------------------------

def test_iptables_save_marks_by_owner_cgroup_and_destination():
    fw = load_ipt()
    setters = mark_setters(fw, 4)
    assert [(r.uids, r.cgroups, r.daddrs, r.set_mark) for r in setters] == [
        (((1234, 1234),), (), (), 0x1234),
        ((), ("cgroupv2:user.slice/app-torrent.scope",), (), 0x6d6f6c65),
        ((), ("classid:0x100001",), (), 0x11),
        ((), (), ("192.0.2.0/24",), 0x30),
    ]
    connmark = [r for r in fw.rules if r.set_ct_mark == 0x40][0]
    assert connmark.uids == ((0, 999),) and connmark.negated == ("uids",) and connmark.opaque
    assert mark_setters(fw, 6) == []  # iptables (IPv4) rules do not apply to IPv6
    assert effective_mark(marks_for(fw, Flow(4, daddr="198.51.100.1", uid=1234, gid=1234))) == 0x1234


def test_iptables_save_forward_policy_and_nat():
    fw = load_ipt()
    usb_wg = Flow(4, daddr="198.51.100.1", saddr="192.168.42.2", iif="usb0", oif="wg0")
    assert filter_verdict(fw, "forward", usb_wg).result == "accept"  # wg+ is a prefix match
    usb_eth = Flow(4, daddr="198.51.100.1", saddr="192.168.42.2", iif="usb0", oif="eth0")
    verdict = filter_verdict(fw, "forward", usb_eth)
    assert verdict.result == "drop" and verdict.evidence()["rule"] == "policy drop"
    texts = [r.text for r in nat_rules(fw, 4) if rule_matches(r, usb_eth) is not False]
    assert texts == ["-s 192.168.42.0/24 -o eth0 -j MASQUERADE"]
