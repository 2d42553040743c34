"""The raw rtnetlink dump parser on dumps recorded in the lab
(tests/unit/data/rtnl/README.md says how): the dataclasses it builds equal
pyroute2's view of the same namespace, recorded at the same moment."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import pytest

from leakcheck import rtnl
from leakcheck.linux import netlink

DATA = Path(__file__).parent / "data" / "rtnl"


def parse_recorded(name: str, parse: Callable[[bytes, int, int], object]) -> list[object]:
    results: list[object] = []
    done, interrupted = rtnl.take_dump((DATA / f"{name}.bin").read_bytes(), None, parse, results)
    assert done and not interrupted  # the recording holds the whole dump, NLMSG_DONE included
    return results


def pyroute2_lines(part: str) -> list[str]:
    return (DATA / f"{part}.pyroute2.txt").read_text().splitlines()


def recorded_names() -> dict[int, str]:
    return {link.index: link.name for link in parse_recorded("links", netlink.parse_link)}  # type: ignore[attr-defined]


def test_links_as_pyroute2_saw_them() -> None:
    links = parse_recorded("links", netlink.parse_link)
    assert [repr(link) for link in links] == pyroute2_lines("links")
    assert any(link.kind == "bridge" for link in links)  # type: ignore[attr-defined]


def test_addresses_as_pyroute2_saw_them() -> None:
    parse = lambda data, offset, end: netlink.parse_address(data, offset, end, recorded_names())  # noqa: E731
    assert [repr(a) for a in parse_recorded("addresses", parse)] == pyroute2_lines("addresses")


def test_routes_of_every_table_as_pyroute2_saw_them() -> None:
    parser = netlink.RouteParser(recorded_names())
    routes = parse_recorded("routes4", parser) + parse_recorded("routes6", parser)
    assert [repr(r) for r in routes] == pyroute2_lines("routes")
    tables = {r.table for r in routes}  # type: ignore[attr-defined]
    assert {254, 255, 51820, 100000} <= tables
    assert any(len(r.nexthops) == 2 for r in routes)  # type: ignore[attr-defined]


def test_rules_as_pyroute2_saw_them() -> None:
    rules = parse_recorded("rules4", netlink.parse_rule) + parse_recorded("rules6", netlink.parse_rule)
    assert [repr(r) for r in rules] == pyroute2_lines("rules")
    described = [r.describe() for r in rules]  # type: ignore[attr-defined]
    assert "32765: not from all fwmark 0xca6c lookup 51820" in described
    assert "32764: from all lookup main suppress_prefixlength 0" in described


def _with_flags(data: bytes, flags: int) -> bytes:
    """The first message of a recorded chunk with extra header flags."""
    length, kind, old, seq, pid = rtnl.NLMSGHDR.unpack_from(data)
    return rtnl.NLMSGHDR.pack(length, kind, old | flags, seq, pid) + data[16:]


def test_an_interrupted_dump_is_flagged() -> None:
    data = _with_flags((DATA / "rules4.bin").read_bytes(), rtnl.NLM_F_DUMP_INTR)
    done, interrupted = rtnl.take_dump(data, None, netlink.parse_rule, [])
    assert done and interrupted


def test_a_refused_dump_raises_with_its_errno() -> None:
    error = rtnl.NLMSGHDR.pack(36, rtnl.NLMSG_ERROR, 0, 9, 0) + struct.pack("=i", -1) + bytes(16)
    with pytest.raises(rtnl.DumpError) as raised:
        rtnl.take_dump(error, 9, netlink.parse_rule, [])
    assert raised.value.errno == 1


def test_other_sequence_numbers_are_ignored() -> None:
    results: list[object] = []
    done, _ = rtnl.take_dump((DATA / "rules4.bin").read_bytes(), 12345, netlink.parse_rule, results)
    assert not done and results == []


def test_real_kernel_dump_of_this_namespace() -> None:
    links, addresses, routes, rules = netlink.dump_all()
    loopback = next(link for link in links if link.name == "lo")
    assert loopback.index == 1 and loopback.admin_up
    assert any(str(a.address) == "127.0.0.1" for a in addresses)
    assert any(r.table == 255 and r.type == "local" for r in routes)
    assert {(r.priority, r.table) for r in rules if r.family == 4} >= {(0, 255), (32766, 254)}
