"""The dns probe's unique test name must be one resolvers forward."""

from leakcheck.active import unique_name

# RFC 6761 / RFC 6762 / RFC 7686 / RFC 8375 / RFC 9476 names that stub resolvers
# (systemd-resolved, unbound, dnsmasq, mDNS responders) may answer themselves.
SPECIAL_USE = ("invalid", "test", "localhost", "local", "example", "onion", "alt", "home.arpa")


def test_the_default_name_is_not_special_use_so_it_leaves_the_machine():
    nonce, name = unique_name("")
    labels = name.split(".")
    assert labels[0] == f"lc-{nonce}" and len(labels) >= 2  # never single-label (resolved refuses those)
    assert not any(name == s or name.endswith("." + s) for s in SPECIAL_USE), name


def test_names_are_unique_and_go_under_the_configured_zone():
    first, second = unique_name("dnsleak.corp.example.com"), unique_name("dnsleak.corp.example.com")
    assert first[0] != second[0]
    assert first[1] == f"lc-{first[0]}.dnsleak.corp.example.com"
