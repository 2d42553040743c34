"""Firewall rules (nftables, iptables) reduced to what decides a leak, and a
small evaluator for them.

Read: `nft -j list ruleset` (structured JSON) and `iptables-save` /
`ip6tables-save` when installed. Each rule keeps the selectors leakcheck
understands (owner uid/gid, cgroup, interfaces, addresses, mark, protocol,
conntrack state) and its action (mark set, accept/drop, jump, NAT). A match
it does not understand is kept as "opaque": the rule then *may* match, and
the evaluator never claims a certain verdict through it.

Both tools need CAP_NET_ADMIN; without it the firewall is reported as
unreadable (with the reason), never as empty.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from leakcheck.netstate import Firewall, FirewallChain, FirewallRule

TIMEOUT_S = 3.0
FULL_MASK = 0xFFFFFFFF
# iptables-nft keeps its tables in nftables too; they are read through iptables-save.
IPTABLES_NFT_TABLES = {"filter", "nat", "mangle", "raw", "security"}
IPT_HOOKS = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
             "POSTROUTING": "postrouting"}
IPT_PRIORITY = {"raw": -300, "mangle": -150, "nat": -100, "filter": 0, "security": 50}
CT_STATES = ("new", "established", "related", "invalid", "untracked")


# ---------------------------------------------------------------- reading

def read(notes: list[str]) -> Firewall:
    """nftables and iptables rules of this network namespace."""
    chains: list[FirewallChain] = []
    rules: list[FirewallRule] = []
    sources: list[str] = []
    unreadable: list[str] = []
    ipt_nft = False
    for tool, source in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        text, problem = _run([tool])
        if text is None:
            if problem:
                unreadable.append(f"{source}: {problem}")
            continue
        ipt_nft = ipt_nft or "nf_tables" in text.split("\n", 1)[0]
        c, r = parse_iptables_save(text, source)
        chains += c
        rules += r
        sources.append(source)
    text, problem = _run(["nft", "-j", "list", "ruleset"])
    if text is not None:
        try:
            c, r = parse_nft_json(text, skip_iptables_tables=ipt_nft)
            chains += c
            rules += r
            sources.append("nftables")
        except ValueError as exc:
            unreadable.append(f"nftables: unreadable JSON ({exc})")
    elif problem:
        unreadable.append(f"nftables: {problem}")
    if unreadable:
        notes.extend(f"firewall: {u}" for u in unreadable)
    return Firewall(chains=tuple(chains), rules=tuple(rules), sources=tuple(sources),
                    unreadable=tuple(unreadable))


def _run(argv: list[str]) -> tuple[str | None, str | None]:
    """(stdout, None), or (None, why not); (None, None) when the tool is not installed."""
    if not shutil.which(argv[0]):
        return None, None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{argv[0]} failed: {exc}"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        if "ermission" in reason or "not permitted" in reason:
            reason += " (needs root)"
        return None, f"{' '.join(argv)}: {reason}"
    return done.stdout, None


# ---------------------------------------------------------------- nftables JSON

def parse_nft_json(text: str, skip_iptables_tables: bool = False) -> tuple[list[FirewallChain], list[FirewallRule]]:
    try:
        items = json.loads(text).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise ValueError(str(exc)) from None
    chains, rules = [], []
    for item in items:
        if not isinstance(item, dict):
            continue
        if "chain" in item:
            c = item["chain"]
            if _skipped_table(c, skip_iptables_tables):
                continue
            chains.append(FirewallChain(source="nftables", family=c.get("family", ""), table=c.get("table", ""),
                                        name=c.get("name", ""), type=c.get("type"), hook=c.get("hook"),
                                        priority=_int(c.get("prio"), 0), policy=c.get("policy")))
        elif "rule" in item:
            r = item["rule"]
            if _skipped_table(r, skip_iptables_tables):
                continue
            rules.append(nft_rule(r))
    return chains, rules


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _skipped_table(obj: dict, skip_iptables_tables: bool) -> bool:
    return (skip_iptables_tables and obj.get("family") in ("ip", "ip6")
            and obj.get("table") in IPTABLES_NFT_TABLES)


@dataclass
class _Draft:
    """Selectors and actions of one rule while it is parsed."""

    sel: dict[str, list[Any]] = field(default_factory=dict)
    negated: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    set_mark: int | None = None
    set_mark_mask: int = FULL_MASK
    set_ct_mark: int | None = None
    action: str | None = None
    target: str | None = None

    def add(self, name: str, values: Iterable[Any], negate: bool = False) -> None:
        self.sel.setdefault(name, []).extend(values)
        if negate and name not in self.negated:
            self.negated.append(name)

    def build(self, source: str, family: str, table: str, chain: str, text: str) -> FirewallRule:
        s = self.sel
        return FirewallRule(
            source=source, family=family, table=table, chain=chain, text=text,
            uids=tuple(s.get("uids", ())), gids=tuple(s.get("gids", ())), cgroups=tuple(s.get("cgroups", ())),
            iifnames=tuple(s.get("iifnames", ())), oifnames=tuple(s.get("oifnames", ())),
            saddrs=tuple(s.get("saddrs", ())), daddrs=tuple(s.get("daddrs", ())),
            marks=tuple(s.get("marks", ())), l4protos=tuple(s.get("l4protos", ())),
            dports=tuple(s.get("dports", ())),
            nfprotos=tuple(s.get("nfprotos", ())), ct_states=tuple(s.get("ct_states", ())),
            negated=tuple(self.negated), opaque=tuple(self.opaque), set_mark=self.set_mark,
            set_mark_mask=self.set_mark_mask, set_ct_mark=self.set_ct_mark, action=self.action,
            target=self.target)


def nft_rule(rule: dict) -> FirewallRule:
    draft = _Draft()
    words = []
    for expr in rule.get("expr", []):
        words.append(_nft_expr(expr, draft))
    return draft.build("nftables", rule.get("family", ""), rule.get("table", ""), rule.get("chain", ""),
                       " ".join(w for w in words if w))


META_SELECTORS = {"skuid": "uids", "skgid": "gids", "iifname": "iifnames", "oifname": "oifnames",
                  "iif": "iifnames", "oif": "oifnames", "l4proto": "l4protos", "nfproto": "nfprotos",
                  "mark": "marks", "cgroup": "cgroups"}


def _nft_expr(expr: dict, draft: _Draft) -> str:
    """Record one expression in the draft; return its text as nft prints it (near enough)."""
    if not isinstance(expr, dict) or len(expr) != 1:
        draft.opaque.append(json.dumps(expr, sort_keys=True))
        return json.dumps(expr)
    kind, body = next(iter(expr.items()))
    if kind == "match":
        return _nft_match(body, draft)
    if kind == "mangle":
        return _nft_mangle(body, draft)
    if kind in ("accept", "drop", "return", "continue"):
        draft.action = kind
        return kind
    if kind == "reject":
        draft.action = "reject"
        return "reject"
    if kind in ("jump", "goto"):
        draft.action, draft.target = kind, str((body or {}).get("target"))
        return f"{kind} {draft.target}"
    if kind == "masquerade":
        draft.action = "masquerade"
        return "masquerade"
    if kind in ("snat", "dnat", "redirect"):
        draft.action = kind
        addr = (body or {}).get("addr") if isinstance(body, dict) else None
        draft.target = _text(addr) if addr is not None else None
        return f"{kind} to {draft.target}" if draft.target else kind
    if kind in ("counter", "log", "comment", "notrack"):
        return "" if kind == "counter" else kind
    # limit, quota, vmap, xt (iptables-nft compatibility), set updates...: not interpreted
    draft.opaque.append(kind)
    if kind == "vmap":
        draft.action = "vmap"
    return f"{kind} {json.dumps(body, sort_keys=True)}" if body is not None else kind


def _nft_match(body: dict, draft: _Draft) -> str:
    op, left, right = body.get("op", "=="), body.get("left"), body.get("right")
    negate = op == "!="
    name, values = _nft_selector(left, right)
    style = {"marks": "hex", "iifnames": "quoted", "oifnames": "quoted"}.get(name or "", "")
    if name == "cgroups" and isinstance(left, dict) and "socket" in left:
        style = "quoted"
    text = f"{_text(left)} {'!= ' if negate else ''}{_text(right, style)}"
    implied = _implied_l4proto(left)
    if (implied is not None and op in ("==", "!=", "in") and "l4protos" not in draft.negated
            and implied not in draft.sel.get("l4protos", [])):
        draft.add("l4protos", [implied])  # even `udp dport != 53` needs a UDP packet
    if name is None or op not in ("==", "!=", "in"):
        draft.opaque.append(text)
        return text
    draft.add(name, values, negate)
    return text


def _nft_selector(left: Any, right: Any) -> tuple[str | None, list[Any]]:
    """(selector name, values) for a match leakcheck understands, else (None, [])."""
    if not isinstance(left, dict):
        return None, []
    if "meta" in left:
        key = left["meta"].get("key")
        name = META_SELECTORS.get(key)
        if name in ("uids", "gids"):
            return _ids(right, name)
        if name == "marks":
            return name, [(v, FULL_MASK) for v in _ints(right)] if _ints(right) is not None else []
        if name == "cgroups":
            values = _ints(right)
            return (name, [f"classid:{v:#x}" for v in values]) if values is not None else (None, [])
        if name is not None:
            return name, [str(v) for v in _flat(right)]
        return None, []
    if "&" in left:  # meta mark & MASK == VALUE
        inner = left["&"]
        if (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[0], dict)
                and inner[0].get("meta", {}).get("key") == "mark" and isinstance(inner[1], int)):
            values = _ints(right)
            if values is not None:
                return "marks", [(v, inner[1]) for v in values]
        return None, []
    if "socket" in left and left["socket"].get("key") == "cgroupv2":
        return "cgroups", [f"cgroupv2:{str(v).strip('/')}" for v in _flat(right)]
    if "ct" in left and left["ct"].get("key") == "state":
        return "ct_states", [str(v) for v in _flat(right)]
    if "payload" in left:
        proto, fld = left["payload"].get("protocol"), left["payload"].get("field")
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            prefixes = _prefixes(right, 4 if proto == "ip" else 6)
            return (fld + "s", prefixes) if prefixes is not None else (None, [])
        if proto == "ip" and fld == "protocol" or proto == "ip6" and fld == "nexthdr":
            return "l4protos", [str(v) for v in _flat(right)]
        if proto in ("tcp", "udp", "th", "udplite", "sctp", "dccp") and fld == "dport":
            ports = _port_ranges(right)
            return ("dports", ports) if ports is not None else (None, [])
    return None, []


# A match on a transport header field (`udp dport`, `icmpv6 type`) also says the protocol:
# nft adds that dependency itself, so such a rule never matches another protocol.
IMPLIED_L4PROTO = {"tcp": "tcp", "udp": "udp", "udplite": "udplite", "sctp": "sctp", "dccp": "dccp",
                   "icmp": "icmp", "icmpv6": "ipv6-icmp"}


def _implied_l4proto(left: Any) -> str | None:
    if isinstance(left, dict) and "payload" in left:
        return IMPLIED_L4PROTO.get(str(left["payload"].get("protocol")))
    return None


def _port_ranges(right: Any) -> list[tuple[int, int]] | None:
    out = []
    for value in _flat(right):
        if isinstance(value, dict) and "range" in value:
            lo, hi = value["range"]
            if not (isinstance(lo, int) and isinstance(hi, int)):
                return None
            out.append((lo, hi))
        elif isinstance(value, int):
            out.append((value, value))
        elif isinstance(value, str) and value.isdigit():
            out.append((int(value), int(value)))
        else:
            return None  # a named set or service name: not interpreted
    return out


def _nft_mangle(body: dict, draft: _Draft) -> str:
    key, value = body.get("key"), body.get("value")
    text = f"{_text(key)} set {_text(value, 'hex')}"
    if isinstance(key, dict) and isinstance(value, int):
        if key.get("meta", {}).get("key") == "mark":
            draft.set_mark = value
        elif key.get("ct", {}).get("key") == "mark":
            draft.set_ct_mark = value
    return text


def _ids(right: Any, name: str) -> tuple[str | None, list[Any]]:
    out = []
    for value in _flat(right):
        if isinstance(value, dict) and "range" in value:
            lo, hi = value["range"]
            lo_id, hi_id = _owner_id(lo, name), _owner_id(hi, name)
            if lo_id is None or hi_id is None:
                return None, []
            out.append((lo_id, hi_id))
        else:
            one = _owner_id(value, name)
            if one is None:
                return None, []
            out.append((one, one))
    return name, out


def _owner_id(value: Any, name: str) -> int | None:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        # imported here: the evaluator below also serves platforms without a password database
        import pwd
        if name == "uids":
            return pwd.getpwnam(text).pw_uid
        import grp
        return grp.getgrnam(text).gr_gid
    except KeyError:
        return None


def _flat(right: Any) -> list[Any]:
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return list(right)
    return [right]


def _ints(right: Any) -> list[int] | None:
    out = []
    for value in _flat(right):
        if isinstance(value, int):
            out.append(value)
        elif isinstance(value, str):
            try:
                out.append(int(value, 0))
            except ValueError:
                return None
        else:
            return None
    return out


def _prefixes(right: Any, version: int) -> list[str] | None:
    out = []
    for value in _flat(right):
        try:
            if isinstance(value, dict) and "prefix" in value:
                out.append(str(ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}",
                                                    strict=False)))
            elif isinstance(value, dict) and "range" in value:
                lo, hi = (ipaddress.ip_address(v) for v in value["range"])
                out += [str(n) for n in ipaddress.summarize_address_range(lo, hi)]  # type: ignore[arg-type]
            elif isinstance(value, str) and not value.startswith("@"):
                out.append(str(ipaddress.ip_network(value, strict=False)))
            else:
                return None  # a named set (@name) or something else: not interpreted
        except (ValueError, TypeError, KeyError):
            return None
    return out


def _text(value: Any, style: str = "") -> str:
    """nft-like text of an expression operand, for evidence. style: hex (marks), quoted (names)."""
    if isinstance(value, dict):
        if "meta" in value:
            key = value["meta"].get("key")
            return key if key in ("iifname", "oifname", "iif", "oif") else f"meta {key}"
        if "ct" in value:
            return f"ct {value['ct'].get('key')}"
        if "payload" in value:
            return f"{value['payload'].get('protocol')} {value['payload'].get('field')}"
        if "socket" in value:
            return f"socket {value['socket'].get('key')} level {value['socket'].get('level')}"
        if "prefix" in value:
            return f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
        if "range" in value:
            return "-".join(_text(v, style) for v in value["range"])
        if "set" in value:
            return "{ " + ", ".join(_text(v, style) for v in value["set"]) + " }"
        if "&" in value:
            return " & ".join(_text(v, "hex") for v in value["&"])
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return ",".join(_text(v, style) for v in value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:#010x}" if style == "hex" else str(value)
    if style == "quoted":
        return f'"{value}"'
    return str(value)


# ---------------------------------------------------------------- iptables-save

def parse_iptables_save(text: str, source: str) -> tuple[list[FirewallChain], list[FirewallRule]]:
    family = "ip6" if source == "ip6tables" else "ip"
    chains: list[FirewallChain] = []
    rules: list[FirewallRule] = []
    table = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if line.startswith(":"):
            name, policy = (line[1:].split() + ["-"])[:2]
            hook = IPT_HOOKS.get(name)
            chains.append(FirewallChain(source=source, family=family, table=table, name=name,
                                        type=table if hook else None, hook=hook,
                                        priority=_ipt_priority(table, hook),
                                        policy=policy.lower() if hook and policy != "-" else None))
            continue
        if line.startswith("-A "):
            rule = iptables_rule(line, source, family, table)
            if rule is not None:
                rules.append(rule)
    return chains, rules


def _ipt_priority(table: str, hook: str | None) -> int:
    if table == "nat":
        return 100 if hook in ("postrouting", "input") else -100
    return IPT_PRIORITY.get(table, 0)


IPT_MATCH_OPTIONS = {"-s": "saddrs", "--source": "saddrs", "-d": "daddrs", "--destination": "daddrs",
                     "-i": "iifnames", "--in-interface": "iifnames", "-o": "oifnames",
                     "--out-interface": "oifnames", "-p": "l4protos", "--protocol": "l4protos",
                     "--uid-owner": "uids", "--gid-owner": "gids", "--path": "cgroups", "--cgroup": "cgroups",
                     "--mark": "marks", "--ctstate": "ct_states", "--state": "ct_states",
                     "--dport": "dports", "--destination-port": "dports", "--dports": "dports",
                     "--destination-ports": "dports"}
IPT_IGNORED = {"--comment", "-m", "--match"}


def iptables_rule(line: str, source: str, family: str, table: str) -> FirewallRule | None:
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    chain = words[1]
    draft = _Draft()
    negate = False
    i = 2
    while i < len(words):
        word = words[i]
        arg = words[i + 1] if i + 1 < len(words) else ""
        if word == "!":
            negate = True
            i += 1
            continue
        if word in ("-j", "--jump", "-g", "--goto"):
            i = _ipt_target(words, i, draft, goto=word in ("-g", "--goto"))
            continue
        if word in IPT_IGNORED:
            i += 2
            continue
        name = IPT_MATCH_OPTIONS.get(word)
        if name is None:
            # an option we do not interpret: it and its arguments (until the next option) are opaque
            j = i + 1
            while j < len(words) and not words[j].startswith("-") and words[j] != "!":
                j += 1
            draft.opaque.append(" ".join(words[i:j]))
            i = j
            negate = False
            continue
        values = _ipt_values(name, arg, family)
        if values is None:
            draft.opaque.append(f"{word} {arg}")
        else:
            draft.add(name, values, negate)
        negate = False
        i += 2
    text = " ".join(shlex.quote(w) for w in words[2:])
    return draft.build(source, family, table, chain, text)


def _ipt_values(name: str, arg: str, family: str) -> list[Any] | None:
    parts = [p for p in arg.split(",") if p]
    if name in ("uids", "gids"):
        out = []
        for part in parts:
            lo, _, hi = part.partition("-")
            lo_id, hi_id = _owner_id(lo, name), _owner_id(hi or lo, name)
            if lo_id is None or hi_id is None:
                return None
            out.append((lo_id, hi_id))
        return out
    if name == "cgroups":
        return [f"classid:{int(arg, 0):#x}"] if arg[:1].isdigit() else [f"cgroupv2:{arg.strip('/')}"]
    if name == "marks":
        value, _, mask = arg.partition("/")
        try:
            return [(int(value, 0), int(mask, 0) if mask else FULL_MASK)]
        except ValueError:
            return None
    if name in ("saddrs", "daddrs"):
        try:
            return [str(ipaddress.ip_network(p, strict=False)) for p in parts]
        except ValueError:
            return None
    if name in ("iifnames", "oifnames"):
        return [p[:-1] + "*" if p.endswith("+") else p for p in parts]  # iptables' + is nft's *
    if name == "ct_states":
        return [p.lower() for p in parts]
    if name == "l4protos":
        return [p.lower() for p in parts]
    if name == "dports":
        out_ports = []
        for part in parts:
            lo, _, hi = part.partition(":")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                return None  # a service name: not interpreted
            out_ports.append((int(lo), int(hi or lo)))
        return out_ports
    return parts


def _ipt_target(words: Sequence[str], i: int, draft: _Draft, goto: bool) -> int:
    target = words[i + 1] if i + 1 < len(words) else ""
    i += 2
    builtin = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return",
               "MASQUERADE": "masquerade", "SNAT": "snat", "DNAT": "dnat", "REDIRECT": "redirect"}
    if target in builtin:
        draft.action = builtin[target]
    elif target in ("MARK", "CONNMARK", "LOG", "NFLOG", "CT", "TCPMSS", "CLASSIFY", "NOTRACK"):
        pass
    else:
        draft.action, draft.target = ("goto" if goto else "jump"), target
    # the target's own options
    while i < len(words) and words[i].startswith("--"):
        option = words[i]
        arg = words[i + 1] if i + 1 < len(words) else ""
        if target in ("MARK", "CONNMARK") and option in ("--set-mark", "--set-xmark"):
            value, _, mask = arg.partition("/")
            try:
                mark = int(value, 0)
                mask_value = int(mask, 0) if mask else FULL_MASK
            except ValueError:
                mark, mask_value = None, FULL_MASK
            if target == "MARK":
                draft.set_mark, draft.set_mark_mask = mark, mask_value
            else:
                draft.set_ct_mark = mark
        elif target in ("SNAT", "DNAT") and option in ("--to-source", "--to-destination"):
            draft.target = arg
        i += 2
    return i


# ---------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class Flow:
    """A packet as the firewall would see it; None = not known (the rule may match)."""

    family: int  # 4 | 6
    daddr: str | None = None
    saddr: str | None = None
    iif: str | None = None
    oif: str | None = None
    uid: int | None = None
    gid: int | None = None
    cgroup: str | None = None
    mark: int | None = 0
    l4proto: str | None = "udp"
    ct_state: str | None = "new"
    dport: int | None = None  # None: any port (a rule on ports may match)


def rule_matches(rule: FirewallRule, flow: Flow) -> bool | None:
    """True, False, or None when it depends on what the flow does not say."""
    verdicts = [_selector(rule, name, flow) for name in
                ("nfprotos", "uids", "gids", "cgroups", "iifnames", "oifnames", "saddrs", "daddrs", "marks",
                 "l4protos", "dports", "ct_states")]
    if rule.source == "ip6tables" and flow.family != 6 or rule.source == "iptables" and flow.family != 4:
        return False
    if rule.family in ("ip", "ip6") and rule.source == "nftables" and (rule.family == "ip6") != (flow.family == 6):
        return False
    if False in verdicts:
        return False
    if None in verdicts or rule.opaque:
        return None
    return True


def _selector(rule: FirewallRule, name: str, flow: Flow) -> bool | None:
    values = getattr(rule, name)
    if not values:
        return True
    hit = _any_match(name, values, flow)
    if hit is None:
        return None
    return (not hit) if name in rule.negated else hit


def _any_match(name: str, values: tuple, flow: Flow) -> bool | None:
    if name == "nfprotos":
        return f"ipv{flow.family}" in values
    if name in ("uids", "gids"):
        ident = flow.uid if name == "uids" else flow.gid
        return None if ident is None else any(lo <= ident <= hi for lo, hi in values)
    if name == "cgroups":
        return None if flow.cgroup is None else any(_cgroup_hit(v, flow.cgroup) for v in values)
    if name in ("iifnames", "oifnames"):
        ifname = flow.iif if name == "iifnames" else flow.oif
        return None if ifname is None else any(fnmatch.fnmatchcase(ifname, v) for v in values)
    if name in ("saddrs", "daddrs"):
        addr = flow.saddr if name == "saddrs" else flow.daddr
        if addr is None:
            return None
        ip = ipaddress.ip_address(addr)
        nets = [ipaddress.ip_network(v) for v in values]
        if all(n.version != ip.version for n in nets):
            return False  # an IPv4 selector never matches an IPv6 packet (and the reverse)
        return any(n.version == ip.version and ip in n for n in nets)
    if name == "marks":
        return None if flow.mark is None else any((flow.mark & mask) == value for value, mask in values)
    if name == "l4protos":
        return None if flow.l4proto is None else flow.l4proto in values
    if name == "ct_states":
        return None if flow.ct_state is None else flow.ct_state in values
    if name == "dports":
        if flow.l4proto not in (None, "tcp", "udp", "udplite", "sctp", "dccp"):
            return False  # no ports: an ICMP packet never matches a port rule
        return None if flow.dport is None else any(lo <= flow.dport <= hi for lo, hi in values)
    return None


def _cgroup_hit(selector: str, cgroup: str) -> bool:
    kind, _, path = selector.partition(":")
    if kind != "cgroupv2":
        return False  # net_cls classids are not known per process here
    path, cgroup = path.strip("/"), cgroup.strip("/")
    return cgroup == path or cgroup.startswith(path + "/")


@dataclass(frozen=True)
class Verdict:
    result: str  # accept | drop | uncertain
    rule: FirewallRule | None = None  # the rule that decided (None: a chain policy)
    chain: FirewallChain | None = None
    note: str | None = None

    def evidence(self) -> dict[str, object]:
        out: dict[str, object] = {"result": self.result}
        if self.chain is not None:
            out["chain"] = f"{self.chain.source} {self.chain.family} {self.chain.table} {self.chain.name}"
        if self.rule is not None:
            out["rule"] = self.rule.text
        elif self.chain is not None and self.chain.policy:
            out["rule"] = f"policy {self.chain.policy}"
        if self.note:
            out["note"] = self.note
        return out


def base_chains(fw: Firewall, hook: str, family: int, types: Iterable[str] = ("filter",)) -> list[FirewallChain]:
    wanted = set(types)
    out = []
    for chain in fw.chains:
        if chain.hook != hook or (chain.type or "filter") not in wanted:
            continue
        if chain.source == "nftables" and chain.family not in ("inet", "ip" if family == 4 else "ip6"):
            continue
        if chain.source == "iptables" and family != 4 or chain.source == "ip6tables" and family != 6:
            continue
        out.append(chain)
    return sorted(out, key=lambda c: c.priority)


def filter_verdict(fw: Firewall, hook: str, flow: Flow) -> Verdict:
    """Would the filter chains at `hook` let the flow through? Every base chain
    must accept it; a drop that an earlier uncertain accept could pre-empt is
    'uncertain', never 'drop'."""
    uncertain: Verdict | None = None
    accepted: Verdict | None = None  # the first rule that surely accepted it (evidence)
    for chain in base_chains(fw, hook, flow.family):
        result, rule, maybe = _run_chain(fw, chain, flow, 0)
        if result == "accept" and accepted is None and maybe is None:
            accepted = Verdict("accept", rule, chain)
        if result == "drop":
            if maybe is None:
                return Verdict("drop", rule, chain)
            uncertain = uncertain or Verdict("uncertain", rule, chain,
                                             note=f"may be accepted first by: {maybe.text}")
        elif result is None and chain.policy == "drop":
            if maybe is None:
                return Verdict("drop", None, chain)
            uncertain = uncertain or Verdict("uncertain", None, chain,
                                             note=f"may be accepted first by: {maybe.text}")
    return uncertain or accepted or Verdict("accept")


def _run_chain(fw: Firewall, chain: FirewallChain, flow: Flow,
               depth: int) -> tuple[str | None, FirewallRule | None, FirewallRule | None]:
    """(accept | drop | None = fell through or returned, deciding rule, first rule that
    may have accepted it earlier)."""
    maybe: FirewallRule | None = None
    for rule in fw.rules_of(chain):
        hit = rule_matches(rule, flow)
        if hit is False:
            continue
        action = rule.action
        if action in ("jump", "goto") and depth < 16:
            target = fw.chain(chain.source, chain.family, chain.table, rule.target or "")
            if target is None:
                continue
            result, inner, inner_maybe = _run_chain(fw, target, flow, depth + 1)
            maybe = maybe or inner_maybe
            if hit is True and result is not None:
                return result, inner, maybe
            if hit is None and result == "accept":
                maybe = maybe or rule
            if hit is True and action == "goto":
                return None, None, maybe
            continue
        if action == "accept":
            if hit is True:
                return "accept", rule, maybe
            maybe = maybe or rule
        elif action in ("drop", "reject") and hit is True:
            return "drop", rule, maybe
        elif action == "return" and hit is True:
            return None, None, maybe
        elif action == "vmap":
            maybe = maybe or rule
    return None, None, maybe


@dataclass(frozen=True)
class MarkSet:
    """A rule that sets the packet mark of locally generated packets before
    routing (so policy rules see it: nftables `type route hook output`,
    iptables mangle OUTPUT)."""

    rule: FirewallRule
    mark: int
    certain: bool  # the rule surely matches the flow (False: it may)


def reroute_chains(fw: Firewall, family: int) -> list[FirewallChain]:
    out = [c for c in base_chains(fw, "output", family, ("route", "mangle"))
           if (c.source == "nftables" and c.type == "route") or (c.source != "nftables" and c.table == "mangle")]
    return out


def marks_for(fw: Firewall, flow: Flow) -> list[MarkSet]:
    """The mark-setting rules a locally generated flow passes through, in order."""
    out: list[MarkSet] = []
    for chain in reroute_chains(fw, flow.family):
        _collect_marks(fw, chain, flow, True, out, 0)
    return out


def _collect_marks(fw: Firewall, chain: FirewallChain, flow: Flow, certain: bool, out: list[MarkSet],
                   depth: int) -> bool:
    """Walk the chain; False once a certain accept/drop/return ends it."""
    for rule in fw.rules_of(chain):
        hit = rule_matches(rule, flow)
        if hit is False:
            continue
        sure = certain and hit is True
        if rule.set_mark is not None:
            out.append(MarkSet(rule, rule.set_mark, sure))
        if rule.action in ("jump", "goto") and depth < 16:
            target = fw.chain(chain.source, chain.family, chain.table, rule.target or "")
            if target is not None:
                went_on = _collect_marks(fw, target, flow, sure, out, depth + 1)
                if sure and (rule.action == "goto" or not went_on):
                    return False
        elif rule.action in ("accept", "drop", "reject", "return") and sure:
            return False
    return True


def effective_mark(sets: Sequence[MarkSet], start: int = 0) -> int:
    """The mark after the certain mark-setting rules, applied in order."""
    mark = start
    for item in sets:
        if item.certain:
            mask = item.rule.set_mark_mask
            mark = (mark & ~mask & FULL_MASK) | (item.mark & mask)
    return mark


def mark_setters(fw: Firewall, family: int) -> list[FirewallRule]:
    """Every rule that sets a constant packet mark before routing, for any flow."""
    out = []
    seen: set[tuple[str, str, str, str]] = set()
    pending = list(reroute_chains(fw, family))
    while pending:
        chain = pending.pop(0)
        key = (chain.source, chain.family, chain.table, chain.name)
        if key in seen:
            continue
        seen.add(key)
        for rule in fw.rules_of(chain):
            if rule.source == "nftables" and rule.family in ("ip", "ip6") and (rule.family == "ip6") != (family == 6):
                continue
            if rule.set_mark is not None:
                out.append(rule)
            if rule.action in ("jump", "goto"):
                target = fw.chain(chain.source, chain.family, chain.table, rule.target or "")
                if target is not None:
                    pending.append(target)
    return out


def nat_rules(fw: Firewall, family: int) -> list[FirewallRule]:
    """Source NAT rules (masquerade / snat) in postrouting chains."""
    out = []
    for chain in base_chains(fw, "postrouting", family, ("nat",)):
        for rule in _reachable_rules(fw, chain):
            if rule.action in ("masquerade", "snat"):
                out.append(rule)
    return out


def _reachable_rules(fw: Firewall, chain: FirewallChain, depth: int = 0) -> list[FirewallRule]:
    out = []
    for rule in fw.rules_of(chain):
        out.append(rule)
        if rule.action in ("jump", "goto") and depth < 16:
            target = fw.chain(chain.source, chain.family, chain.table, rule.target or "")
            if target is not None:
                out += _reachable_rules(fw, target, depth + 1)
    return out


__all__ = ["read", "parse_nft_json", "parse_iptables_save", "Flow", "Verdict", "MarkSet", "rule_matches",
           "filter_verdict", "marks_for", "effective_mark", "mark_setters", "nat_rules", "base_chains",
           "reroute_chains"]
