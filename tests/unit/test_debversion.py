"""Debian version ordering (leakcheck/debversion.py) against dpkg itself:
Debian Policy's examples, algebraic properties, and `dpkg --compare-versions`
as the oracle on generated versions (dpkg is on every Debian host the suite
runs on; its absence fails loudly)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leakcheck.debversion import VersionError, compare, sort_key, split, upstream

DPKG = shutil.which("dpkg")


def dpkg_compare(left: str, right: str) -> int:
    assert DPKG, "dpkg is needed as the oracle of Debian version ordering"
    for op, value in (("lt", -1), ("eq", 0)):
        if subprocess.run([DPKG, "--compare-versions", left, op, right]).returncode == 0:
            return value
    return 1


@pytest.mark.parametrize("left,right,expected", [
    ("1.0", "1.0", 0),
    ("1.0~rc1", "1.0", -1),  # ~ sorts before the end: a pre-release is older
    ("1.0~~", "1.0~", -1),
    ("1.0", "1.0+", -1),
    ("1.0a", "1.0", 1),
    ("1.0-1", "1.0-1+b1", -1),  # a binNMU is newer
    ("1:0.1", "9.9", 1),  # the epoch decides first
    ("2.6.14-0+deb12u2", "2.6.3-1+deb12u3", 1),  # numeric runs compare as numbers
    ("2.6.3-1+deb12u2", "2.6.3-1+deb12u3", -1),  # a Debian security update of the same upstream
    ("5.9.8-5+deb12u6", "5.9.8-5+deb12u2", 1),
    ("1.0-0", "1.0", 0),  # an absent revision is "0"
    ("1.2-3-4", "1.2-3-5", -1),  # the revision is after the last hyphen
])
def test_policy_examples_agree_with_dpkg(left: str, right: str, expected: int) -> None:
    assert compare(left, right) == expected
    assert compare(right, left) == -expected
    assert dpkg_compare(left, right) == expected


def test_parts() -> None:
    assert split("1:2.6.3-1+deb12u3") == (1, "2.6.3", "1+deb12u3")
    assert split("0.0.20220316") == (0, "0.0.20220316", "")
    assert upstream("2.6.14-0+deb12u2") == "2.6.14"
    for bad in ("", "a1.0", "x:1.0", "1.0-1 2", "1.0-é"):
        with pytest.raises(VersionError):
            split(bad)


PART = st.text(alphabet="0123456789.+~abz", min_size=1, max_size=8)
UPSTREAM = st.builds(lambda d, rest: d + rest, st.sampled_from("0123456789"), PART)
REVISION = st.text(alphabet="0123456789.+~abz", min_size=1, max_size=6)
VERSION = st.builds(lambda epoch, up, rev: (f"{epoch}:" if epoch is not None else "") + up + (f"-{rev}" if rev else ""),
                    st.one_of(st.none(), st.integers(0, 3)), UPSTREAM, st.one_of(st.none(), REVISION))


@given(VERSION, VERSION)
@settings(max_examples=150, deadline=None)
def test_the_order_is_dpkgs(left: str, right: str) -> None:
    assert compare(left, right) == dpkg_compare(left, right), (left, right)


@given(VERSION, VERSION, VERSION)
@settings(max_examples=300)
def test_the_order_is_total_and_transitive(a: str, b: str, c: str) -> None:
    assert compare(a, a) == 0
    assert compare(a, b) == -compare(b, a)
    ordered = sorted([a, b, c], key=sort_key)
    assert compare(ordered[0], ordered[1]) <= 0 and compare(ordered[1], ordered[2]) <= 0
    assert compare(ordered[0], ordered[2]) <= 0
