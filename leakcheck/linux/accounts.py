"""User accounts (uid -> name, primary gid), read once per run so that probes
name users and the firewall evaluator knows a user's group without asking
the password database themselves."""

from __future__ import annotations

import pwd

MAX_ACCOUNTS = 20000  # a directory-backed database can be huge: enough for every local user


def read() -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    for entry in pwd.getpwall():
        if len(out) >= MAX_ACCOUNTS:
            break
        out.setdefault(entry.pw_uid, (entry.pw_name, entry.pw_gid))
    return out
