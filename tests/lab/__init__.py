"""The lab: network namespaces in which every leak scenario runs for real.

Constants here are the lab's fixed addresses (see the diagram in
tests/lab/topology.py); the `lab` and `lab_session` pytest fixtures live in
tests/lab/fixtures.py and are registered by tests/conftest.py.
"""

from __future__ import annotations

# The "internet" host: addresses on the isp namespace's lo.
CANARY_V4 = "198.51.100.1"
CANARY_V6 = "2001:db8:ffff::1"
# The WireGuard (and IPsec) gateway, reached over the isp.
VPN_SERVER = "203.0.113.1"
VPN_SERVER_V6 = "2001:db8:2::1"
VPN_PORT = 51820
# The hostile LAN's router (isp side of the laptop's veth); it also answers DNS.
LAN_ROUTER = "100.64.0.1"
LAN_ROUTER_V6 = "2001:db8:1::1"
LAPTOP_LAN = "100.64.0.2"
LAPTOP_LAN_V6 = "2001:db8:1::2"
# Resolvers: the ISP's (on isp lo; LAN_ROUTER answers too) and the corporate one (vpn ns).
ISP_RESOLVER = "198.51.100.53"
CORP_RESOLVER = "100.100.0.1"
CORP_RESOLVER_V6 = "fd00:100::1"
# Inside the tunnel.
TUNNEL_LAPTOP = "100.100.0.2"
TUNNEL_LAPTOP_V6 = "fd00:100::2"
TUNNEL_GATEWAY = CORP_RESOLVER
TUNNEL_GATEWAY_V6 = CORP_RESOLVER_V6
# Prefixes the `split` fault keeps in the tunnel.
CORP_PREFIXES = ("198.18.0.0/15", "100.100.0.0/24", "fd00:100::/64")
# What both lab resolvers answer for any A / AAAA query.
DNS_ANSWER_V4 = CANARY_V4
DNS_ANSWER_V6 = CANARY_V6

# Merged under the config a test passes to Lab.run_cli (the test's keys win).
LAB_CONFIG: dict[str, dict[str, object]] = {
    "canaries": {"ipv4": [CANARY_V4], "ipv6": [CANARY_V6]},
    # The lab's clients authenticate as their servers are set up (openconnect against ocserv
    # with a password): a leak scenario's correct twin must not turn into a posture warning.
    # A lab laptop has no kill switch, autostart or portal helper unless a scenario gives it
    # one, so those posture gaps are info here. The posture tests (test_posture.py,
    # test_posture_forced.py, test_posture_desktop.py) set the policy they check.
    "posture": {"allowed_auth": ["certificate", "public-key", "password"],
                "require_lockdown": False, "require_autoconnect": False, "require_captive_helper": False},
}

__all__ = [name for name in dir() if name.isupper()]
