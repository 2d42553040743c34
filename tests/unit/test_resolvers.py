"""systemd-resolved's per-link state as leakcheck reads it, on output recorded
from the real daemons (tests/unit/data/resolvectl-nm/README says where and
what the lookups really did in each state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakcheck.linux import resolvers
from leakcheck.netstate import Resolver

DATA = Path(__file__).parent / "data" / "resolvectl-nm"


def recorded(state: str) -> tuple[str, str, str]:
    dns, domain, default_route = ((DATA / f"{state}.{verb}.txt").read_text()
                                  for verb in ("dns", "domain", "default-route"))
    return dns, domain, default_route


def read(state: str) -> tuple[dict[str, Resolver], list[str]]:
    notes: list[str] = []
    found = resolvers.effective_routing(resolvers.parse_resolvectl(*recorded(state)), notes)
    return {str(r.address): r for r in found}, notes


def test_tunnel_with_tilde_dot_is_the_only_resolver():
    found, _ = read("tunnel-tilde")
    assert set(found) == {"100.100.0.1"}
    tunnel = found["100.100.0.1"]
    assert tunnel.link == "tun0" and tunnel.domains == ("~.",) and tunnel.default_route is True
    assert tunnel.takes_any_query


def test_wifi_keeping_default_route_takes_every_query():
    found, _ = read("wifi-default")
    assert set(found) == {"100.64.0.1"}
    wifi = found["100.64.0.1"]
    assert wifi.link == "wlan0" and wifi.default_route is True and wifi.takes_any_query


def test_default_route_outranked_by_tilde_dot_elsewhere():
    """Recorded: lookups went only to tun0's server though wlan0 says DefaultRoute=yes."""
    raw = {str(r.address): r for r in resolvers.parse_resolvectl(*recorded("outranked"))}
    assert raw["100.64.0.1"].default_route is True  # what resolvectl says of the link
    found, notes = read("outranked")
    assert set(found) == {"100.100.0.1"}  # a server that receives no query is not in use
    assert any("wlan0" in n and "'~.' on tun0" in n for n in notes), notes


def test_scoped_link_keeps_its_domains_under_tilde_dot():
    """A link with its own routing domain still receives those names next to `~.`."""
    dns = "Global:\nLink 2 (wlan0): 100.64.0.1\nLink 3 (tun0): 100.100.0.1\n"
    domain = "Global:\nLink 2 (wlan0): ~hotel.example\nLink 3 (tun0): ~.\n"
    default_route = "Link 2 (wlan0): yes\nLink 3 (tun0): yes\n"
    found = {str(r.address): r for r in resolvers.effective_routing(
        resolvers.parse_resolvectl(dns, domain, default_route), [])}
    wifi = found["100.64.0.1"]
    assert wifi.domains == ("~hotel.example",) and wifi.default_route is False and not wifi.takes_any_query


@pytest.mark.parametrize("flag", ["yes", "no"])
def test_two_catch_all_links_both_take_queries(flag):
    """`~.` on both links: equal matches are asked in parallel, whatever DefaultRoute says."""
    dns = "Global:\nLink 2 (wlan0): 100.64.0.1\nLink 3 (tun0): 100.100.0.1\n"
    domain = "Global:\nLink 2 (wlan0): ~.\nLink 3 (tun0): ~.\n"
    found = resolvers.effective_routing(resolvers.parse_resolvectl(
        dns, domain, f"Link 2 (wlan0): {flag}\nLink 3 (tun0): yes\n"), [])
    assert all(r.takes_any_query for r in found) and len(found) == 2


def test_no_catch_all_leaves_default_route_links_alone():
    dns = "Global:\nLink 2 (wlan0): 100.64.0.1\nLink 3 (tun0): 100.100.0.1\n"
    domain = "Global:\nLink 2 (wlan0):\nLink 3 (tun0): corp.example\n"
    found = {str(r.address): r for r in resolvers.effective_routing(resolvers.parse_resolvectl(
        dns, domain, "Link 2 (wlan0): yes\nLink 3 (tun0): no\n"), [])}
    assert found["100.64.0.1"].takes_any_query and not found["100.100.0.1"].takes_any_query
