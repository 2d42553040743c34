import ipaddress

import pytest

from leakcheck import addrspace
from leakcheck.probes.split import merged_cidrs, pieces


@pytest.mark.parametrize("addr, public", [
    ("1.1.1.1", True), ("198.51.100.1", True), ("10.1.2.3", False), ("100.64.0.1", False),
    ("169.254.1.1", False), ("127.0.0.1", False), ("224.0.0.1", False), ("2001:db8::1", True),
    ("2606:4700::1", True), ("fd00::1", False), ("fe80::1", False), ("::1", False), ("::ffff:1.2.3.4", False),
])
def test_is_public(addr, public):
    assert addrspace.is_public(ipaddress.ip_address(addr)) is public


def test_first_public_address_skips_private_parts():
    assert str(addrspace.first_public_address(ipaddress.ip_network("198.51.100.0/24"))) == "198.51.100.1"
    assert addrspace.first_public_address(ipaddress.ip_network("10.0.0.0/8")) is None
    # 8.0.0.0/6 contains 10/8 later on: the first public address is at its start
    assert str(addrspace.first_public_address(ipaddress.ip_network("8.0.0.0/6"))) == "8.0.0.1"
    assert str(addrspace.first_public_address(ipaddress.ip_network("::/0"))) == "2000::1"


def test_public_v4_size_excludes_private_space():
    size = addrspace.public_size(4)
    assert 3_000_000_000 < size < 4_000_000_000
    assert addrspace.public_size(6) == 1 << 125


def test_pieces_cut_at_every_boundary():
    assert pieces([0, 5, 10, 20], [(0, 12), (15, 25)]) == [(0, 5), (5, 10), (10, 12), (15, 20), (20, 25)]


def test_merged_cidrs_joins_neighbours_on_the_same_interface():
    base = int(ipaddress.ip_address("198.51.100.0"))
    parts = [(base, base + 128, "eth0"), (base + 128, base + 256, "eth0"), (base + 256, base + 260, "wlan0")]
    assert merged_cidrs(4, parts) == [("198.51.100.0/24", "eth0"), ("198.51.101.0/30", "wlan0")]
