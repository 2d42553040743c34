"""Debian package version ordering (dpkg's, reimplemented): which of two
installed versions is newer, so an advisory's "fixed in 2.6.3-1+deb12u3"
can be compared with what dpkg says is installed.

A version is `[epoch:]upstream[-revision]` (Debian Policy 5.6.12). Epochs
compare as integers; upstream and revision compare with dpkg's algorithm:
alternate non-digit and digit runs; non-digit runs compare character by
character where `~` sorts before everything (even the end of the string),
letters before non-letters; digit runs compare as integers. The revision
is everything after the last hyphen, so the upstream part may hold
hyphens; without one the revision is empty (equal to "0" for dpkg).
"""

from __future__ import annotations

import functools
import re

class VersionError(ValueError):
    """Not a Debian version string."""


def split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of `version`."""
    text = version.strip()
    epoch = 0
    if ":" in text:
        head, _, rest = text.partition(":")
        if not head.isdigit():
            raise VersionError(f"{version!r}: epoch {head!r} is not a number")
        epoch, text = int(head), rest
    upstream, hyphen, revision = text.rpartition("-")
    if not hyphen:
        upstream, revision = text, ""
    if not upstream or not upstream[0].isdigit():
        raise VersionError(f"{version!r}: the upstream version must start with a digit")
    if re.search(r"[^A-Za-z0-9.+~:-]", upstream) or re.search(r"[^A-Za-z0-9.+~]", revision):
        raise VersionError(f"{version!r}: characters dpkg does not allow")
    return epoch, upstream, revision


def _order(char: str) -> int:
    """dpkg's weight of one character of a non-digit run."""
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(left: str, right: str) -> int:
    """dpkg's verrevcmp on one part (upstream or revision)."""
    i = j = 0
    while i < len(left) or j < len(right):
        first_diff = 0
        while (i < len(left) and not left[i].isdigit()) or (j < len(right) and not right[j].isdigit()):
            lw = _order(left[i]) if i < len(left) and not left[i].isdigit() else 0
            rw = _order(right[j]) if j < len(right) and not right[j].isdigit() else 0
            if lw != rw:
                return -1 if lw < rw else 1
            i += 1
            j += 1
        while i < len(left) and left[i] == "0":
            i += 1
        while j < len(right) and right[j] == "0":
            j += 1
        while i < len(left) and left[i].isdigit() and j < len(right) and right[j].isdigit():
            if not first_diff:
                first_diff = (left[i] > right[j]) - (left[i] < right[j])
            i += 1
            j += 1
        if i < len(left) and left[i].isdigit():
            return 1
        if j < len(right) and right[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def compare(left: str, right: str) -> int:
    """-1, 0 or 1 as `left` is older than, equal to or newer than `right` (dpkg --compare-versions)."""
    le, lu, lr = split(left)
    re_, ru, rr = split(right)
    if le != re_:
        return -1 if le < re_ else 1
    return _compare_part(lu, ru) or _compare_part(lr, rr)


def upstream(version: str) -> str:
    """The upstream part: what the software itself calls its version."""
    return split(version)[1]


sort_key = functools.cmp_to_key(compare)

__all__ = ["compare", "split", "upstream", "sort_key", "VersionError"]
