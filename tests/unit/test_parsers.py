"""Parsing of recorded tool output: ip xfrm, resolv.conf, resolvectl, WireGuard UAPI."""

import ipaddress

from leakcheck.linux import resolvers, wireguard, xfrm

XFRM_POLICIES = """\
src 0.0.0.0/0 dst 0.0.0.0/0 
\tdir in priority 100 ptype main 
\ttmpl src 203.0.113.1 dst 100.64.0.2
\t\tproto esp reqid 0 mode tunnel
src 0.0.0.0/0 dst 198.51.100.0/24 
\tdir out action block priority 5 ptype main 
src 0.0.0.0/0 dst 203.0.113.1/32 
\tdir out priority 10 ptype main 
src 0.0.0.0/0 dst 0.0.0.0/0 
\tdir out priority 100 ptype main 
\ttmpl src 100.64.0.2 dst 203.0.113.1
\t\tproto esp reqid 0 mode tunnel
src ::/0 dst ::/0 
\tsocket in priority 0 ptype main 
"""

XFRM_STATES = """\
src 100.64.0.2 dst 203.0.113.1
\tproto esp spi 0x00000100 reqid 1 mode tunnel
\treplay-window 0 
\tenc cbc(aes) 0x00112233445566778899aabbccddeeff
"""


def test_xfrm_policies():
    policies = xfrm.parse_policies(XFRM_POLICIES)
    assert [(p.direction, str(p.dst), p.priority, p.action) for p in policies] == [
        ("in", "0.0.0.0/0", 100, "allow"), ("out", "198.51.100.0/24", 5, "block"),
        ("out", "203.0.113.1/32", 10, "allow"), ("out", "0.0.0.0/0", 100, "allow")]
    tunnel = policies[-1]
    assert tunnel.protects and tunnel.templates[0].dst == "203.0.113.1"
    assert not policies[2].protects  # a bypass policy has no template


def test_xfrm_states():
    (state,) = xfrm.parse_states(XFRM_STATES)
    assert (state.src, state.dst, state.proto, state.spi, state.mode) == (
        "100.64.0.2", "203.0.113.1", "esp", "0x00000100", "tunnel")


def test_resolv_conf():
    text = "# generated\nsearch corp.example\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver bogus\n"
    assert resolvers.parse_resolv_conf(text) == [ipaddress.ip_address("192.0.2.53"),
                                                 ipaddress.ip_address("fe80::1")]


RESOLVECTL_DNS = """Global:
Link 2 (eth0): 192.168.1.1 fe80::1%2
Link 5 (wg0): 10.64.0.1#dns.corp.example
"""
RESOLVECTL_DOMAIN = """Global:
Link 2 (eth0): home.lan
Link 5 (wg0): ~.
"""
RESOLVECTL_DEFAULT_ROUTE = """Link 2 (eth0): no
Link 5 (wg0): yes
"""


def test_resolvectl_per_link_servers():
    found = resolvers.parse_resolvectl(RESOLVECTL_DNS, RESOLVECTL_DOMAIN, RESOLVECTL_DEFAULT_ROUTE)
    by_addr = {str(r.address): r for r in found}
    assert set(by_addr) == {"192.168.1.1", "fe80::1", "10.64.0.1"}
    eth = by_addr["192.168.1.1"]
    assert eth.link == "eth0" and eth.domains == ("home.lan",) and eth.default_route is False
    assert not eth.takes_any_query
    assert by_addr["10.64.0.1"].takes_any_query


def test_resolved_stub_is_followed(tmp_path, monkeypatch):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\noptions edns0\n")
    monkeypatch.setattr(resolvers, "read_resolved", lambda notes: resolvers.parse_resolvectl(
        RESOLVECTL_DNS, RESOLVECTL_DOMAIN, RESOLVECTL_DEFAULT_ROUTE))
    found, stub = resolvers.read([], resolv_conf=conf)
    assert stub == "systemd-resolved" and len(found) == 3


UAPI = """private_key=aa
listen_port=46075
fwmark=51820
public_key=bb
endpoint=203.0.113.1:51820
last_handshake_time_sec=1795737906
last_handshake_time_nsec=1
allowed_ip=0.0.0.0/0
allowed_ip=::/0
public_key=cc
endpoint=[2001:db8::1]:51820
last_handshake_time_sec=0
errno=0

"""


def test_wireguard_uapi():
    info = wireguard.parse_uapi("wg0", UAPI)
    assert info.fwmark == 51820
    assert info.endpoints == ("203.0.113.1", "2001:db8::1")
    assert info.allowed_ips == ("0.0.0.0/0", "::/0")
    assert info.latest_handshake == 1795737906


def test_wg_show_dump_converts_to_uapi():
    dump = ("privkey\tpubkey\t51820\t0xca6c\n"
            "peerkey\t(none)\t203.0.113.1:51820\t0.0.0.0/0,::/0\t1795737906\t10\t20\toff\n")
    info = wireguard.parse_uapi("wg0", wireguard.dump_to_uapi(dump))
    assert info.fwmark == 0xCA6C and info.endpoints == ("203.0.113.1",)
    assert info.allowed_ips == ("0.0.0.0/0", "::/0")
