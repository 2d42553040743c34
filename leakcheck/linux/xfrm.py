"""IPsec policies and states (xfrm), parsed from `ip xfrm` output.

Policy-based IPsec has no tunnel interface: the route says eth0 but an out
policy with a tunnel-mode template encapsulates the packet as ESP.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from leakcheck.netstate import XfrmPolicy, XfrmState, XfrmTemplate


def read(notes: list[str]) -> tuple[tuple[XfrmPolicy, ...], tuple[XfrmState, ...]]:
    if not shutil.which("ip"):
        notes.append("xfrm: the `ip` tool is missing; IPsec policies not read")
        return (), ()
    policies = _run(["ip", "xfrm", "policy", "list"], notes)
    states = _run(["ip", "xfrm", "state", "list"], notes)
    return parse_policies(policies), parse_states(states)


def _run(argv: list[str], notes: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"xfrm: {' '.join(argv)} failed: {exc}")
        return ""
    if done.returncode != 0:
        notes.append(f"xfrm: {' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return ""
    return done.stdout


def _blocks(text: str) -> list[list[str]]:
    """Split `ip xfrm` output into one block per entry (a line at column 0 starts one)."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            blocks.append([])
        if blocks:
            blocks[-1].append(line.strip())
    return blocks


def _field(tokens: list[str], name: str) -> str | None:
    for i, tok in enumerate(tokens[:-1]):
        if tok == name:
            return tokens[i + 1]
    return None


def parse_policies(text: str) -> tuple[XfrmPolicy, ...]:
    out = []
    for block in _blocks(text):
        head = block[0].split()
        src, dst = _field(head, "src"), _field(head, "dst")
        if src is None or dst is None:
            continue  # socket policies ("src ::/0 dst ::/0" always present otherwise)
        body = [tok for line in block[1:] for tok in line.split()]
        direction = _field(body, "dir")
        if direction not in ("out", "in", "fwd"):
            continue
        out.append(XfrmPolicy(
            direction=direction,
            src=ipaddress.ip_network(src, strict=False),
            dst=ipaddress.ip_network(dst, strict=False),
            priority=int(_field(body, "priority") or 0),
            action=_field(body, "action") or "allow",
            templates=_templates(block[1:]),
            ipproto=_field(head, "proto"),
        ))
    return tuple(out)


def _templates(lines: list[str]) -> tuple[XfrmTemplate, ...]:
    templates = []
    for i, line in enumerate(lines):
        if not line.startswith("tmpl "):
            continue
        tokens = line.split() + (lines[i + 1].split() if i + 1 < len(lines) else [])
        templates.append(XfrmTemplate(src=_field(tokens, "src") or "", dst=_field(tokens, "dst") or "",
                                      proto=_field(tokens, "proto") or "", mode=_field(tokens, "mode") or ""))
    return tuple(templates)


def parse_states(text: str) -> tuple[XfrmState, ...]:
    out = []
    for block in _blocks(text):
        tokens = " ".join(block).split()
        if tokens[:1] != ["src"]:
            continue
        out.append(XfrmState(src=_field(tokens, "src") or "", dst=_field(tokens, "dst") or "",
                             proto=_field(tokens, "proto") or "", spi=_field(tokens, "spi") or "",
                             mode=_field(tokens, "mode") or "", algorithms=_algorithms(block[1:])))
    return tuple(out)


ALGORITHM_LINES = ("aead", "enc", "auth", "auth-trunc", "comp")


def _algorithms(lines: list[str]) -> tuple[tuple[str, str, int], ...]:
    """(kind, name, bits) of an SA's transforms (posture-crypto grades them). `ip xfrm
    state` prints the keys on these lines; only their length is kept: for enc the key
    bits, for aead and auth-trunc the ICV/truncation bits iproute2 prints last."""
    out = []
    for line in lines:
        words = line.split()
        if len(words) < 2 or words[0] not in ALGORITHM_LINES:
            continue
        bits = 0
        if words[0] in ("aead", "auth-trunc") and len(words) >= 4 and words[3].isdigit():
            bits = int(words[3])
        elif len(words) >= 3 and words[2].startswith("0x"):
            bits = (len(words[2]) - 2) * 4
        out.append((words[0], words[1], bits))
    return tuple(out)


