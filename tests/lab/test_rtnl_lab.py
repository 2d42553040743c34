"""The raw rtnetlink reader (leakcheck/linux/netlink.py) against pyroute2.

In the laptop of the correct wg-quick tunnel (a wireguard-go tun, fwmark
and suppress_prefixlength rules, table 51820), plus EXTRAS that reach every
branch of the parser: a bridge port, a point-to-point address, multipath
routes of both families, unreachable/blackhole/throw/prohibit routes, a
table number above 255, uid/ipproto/dport/iif/oif/goto/nop/inverted rules.
The same namespace is read twice, by leakcheck and by pyroute2 decoded the
way leakcheck read it before (`pyroute2_view`); the two must be equal.

Also records the dumps for tests/unit/test_rtnl_dump.py (as root):

    .venv/bin/python -m tests.lab.test_rtnl_lab record tests/unit/data/rtnl
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

from leakcheck import rtnl
from leakcheck.linux import netlink
from leakcheck.netstate import (FIB_RULE_INVERT, ROUTE_PROTOCOLS, ROUTE_TYPES, RULE_ACTIONS, Address, Link,
                                Nexthop, Route, Rule)
from tests.lab.topology import Lab, poll

EXTRAS = """
link add xeth0 type veth peer name xeth1
link add xbr0 type bridge
link set xeth1 master xbr0
link add xptp0 type veth peer name xptp1
link set xeth0 up
link set xeth1 up
link set xbr0 up
link set xptp0 up
link set xptp1 up
addr add 192.168.77.10/24 dev xeth0
addr add 10.99.0.2 peer 10.99.0.1/32 dev xptp0
addr add 2001:db8:77::10/64 dev xeth0 nodad
route add 198.18.0.0/24 proto dhcp nexthop via 192.168.77.1 dev xeth0 weight 1 nexthop dev xptp0 weight 2
route add 198.18.1.0/24 dev xptp0 table 51821 src 10.99.0.2 metric 5
route add unreachable 198.18.2.0/25 table 100000
route add blackhole 198.18.3.0/24 proto static
route add throw 10.0.0.0/8 table 51821
-6 route add 2001:db8:78::/48 dev xptp0 table 51821
-6 route add 2001:db8:79::/48 nexthop via 2001:db8:77::1 dev xeth0 nexthop via 2001:db8:77::2 dev xeth0
-6 route add prohibit 2001:db8:7a::/48
rule add uidrange 1000-1999 lookup 100 pref 100
rule add from 10.99.0.0/16 to 198.18.0.0/24 iif lo oif xeth0 lookup 200 pref 200
rule add fwmark 0x10/0xff ipproto udp dport 53-54 prohibit pref 300
rule add pref 400 goto 500
rule add pref 500 nop
rule add fwmark 0/0xff lookup 300 pref 600
-6 rule add from 2001:db8::/32 lookup 51821 pref 1000
-6 rule add not from all fwmark 0x77 lookup 51821 pref 1001
-6 rule add blackhole pref 1002 to 2001:db8:7b::/48
"""


def add_extras(lab: Lab, ns: str = "lap") -> None:
    for line in EXTRAS.strip().splitlines():
        lab.ip(line, ns=ns)
    # a new bridge reports DOWN until its port's carrier reaches it: read a settled state
    poll(lambda: lab.ip_json("link show xbr0", ns=ns)[0].get("operstate") == "UP", 5.0, "xbr0 up")


def test_raw_dump_equals_pyroute2(lab: Lab) -> None:
    add_extras(lab)
    with lab.in_netns("lap"):
        raw = netlink.dump_all()
        reference = pyroute2_view()
    links, addresses, routes, rules = raw
    # the state is the one built above, not an empty read that would trivially agree
    assert {"wg0", "xbr0", "xeth1"} <= {link.name for link in links}
    assert next(link for link in links if link.name == "xeth1").master == \
        next(link for link in links if link.name == "xbr0").index
    assert any(len(route.nexthops) == 2 and route.family == 6 for route in routes)
    assert any(route.table == 100000 and route.type == "unreachable" for route in routes)
    assert any(rule.uid_range == (1000, 1999) for rule in rules)
    assert any(rule.dport_range == (53, 54) and rule.ipproto == 17 for rule in rules)
    assert any(rule.invert and rule.family == 4 for rule in rules)  # wg-quick's "not fwmark" rule
    for name, mine, theirs in zip(("links", "addresses", "routes", "rules"), raw, reference):
        assert mine == theirs, f"{name} differ from pyroute2's view"


# ------------------------------------------------------------------ pyroute2, as leakcheck read it before

def pyroute2_view() -> tuple[tuple[Link, ...], tuple[Address, ...], tuple[Route, ...], tuple[Rule, ...]]:
    """The network state decoded from pyroute2's message objects (leakcheck's
    reader until the raw dump replaced it): the reference for the raw one."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        raw_links = ipr.get_links()
        names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in raw_links}
        links = tuple(_link(msg) for msg in raw_links)
        addresses = tuple(_address(msg, names) for msg in ipr.get_addr())
        routes = tuple(r for family in (socket.AF_INET, socket.AF_INET6)
                       for r in (_route(m, names) for m in ipr.get_routes(family=family, table=None))
                       if r is not None)
        rules = tuple(_rule(msg) for family in (socket.AF_INET, socket.AF_INET6)
                      for msg in ipr.get_rules(family=family))
    return links, addresses, routes, rules


def _link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    return Link(index=msg["index"], name=msg.get_attr("IFLA_IFNAME"),
                kind=info.get_attr("IFLA_INFO_KIND") if info is not None else None,
                admin_up=bool(msg["flags"] & 1), oper_state=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
                master=msg.get_attr("IFLA_MASTER"))


def _address(msg: Any, names: dict[int, str]) -> Address:
    text = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
    local = msg.get_attr("IFA_LOCAL")
    if local and msg["family"] == socket.AF_INET:
        text = local
    return Address(ifindex=msg["index"], ifname=names.get(msg["index"], str(msg["index"])),
                   address=ipaddress.ip_address(text), prefixlen=msg["prefixlen"], scope=msg["scope"])


def _route(msg: Any, names: dict[int, str]) -> Route | None:
    family = msg["family"]
    dst_text = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
    dst = ipaddress.ip_network(f"{dst_text}/{msg['dst_len']}", strict=False)
    multipath = msg.get_attr("RTA_MULTIPATH")
    if multipath:
        hops = tuple(Nexthop(ifindex=hop["oif"], ifname=names.get(hop["oif"]),
                             gateway=hop.get_attr("RTA_GATEWAY")) for hop in multipath)
    else:
        oif, gateway = msg.get_attr("RTA_OIF"), msg.get_attr("RTA_GATEWAY")
        hops = () if oif is None and gateway is None else (
            Nexthop(ifindex=oif, ifname=names.get(oif) if oif is not None else None, gateway=gateway),)
    return Route(dst=dst, table=msg.get_attr("RTA_TABLE") or msg["table"],
                 type=ROUTE_TYPES.get(msg["type"], str(msg["type"])),
                 protocol=ROUTE_PROTOCOLS.get(msg["proto"], str(msg["proto"])), scope=msg["scope"],
                 nexthops=hops, metric=msg.get_attr("RTA_PRIORITY") or 0, prefsrc=msg.get_attr("RTA_PREFSRC"))


def _range(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return int(value["start"]), int(value["end"])
    start, _, end = str(value).partition(":")
    return int(start), int(end or start)


def _rule(msg: Any) -> Rule:
    def prefix(attr: str, length: int) -> Any:
        value = msg.get_attr(attr)
        return ipaddress.ip_network(f"{value}/{length}", strict=False) if value else None

    suppress = msg.get_attr("FRA_SUPPRESS_PREFIXLEN")
    fwmark, fwmask = msg.get_attr("FRA_FWMARK"), msg.get_attr("FRA_FWMASK")
    return Rule(family=4 if msg["family"] == socket.AF_INET else 6, priority=msg.get_attr("FRA_PRIORITY") or 0,
                action=RULE_ACTIONS.get(msg["action"], str(msg["action"])),
                table=msg.get_attr("FRA_TABLE") or msg["table"], invert=bool(msg["flags"] & FIB_RULE_INVERT),
                src=prefix("FRA_SRC", msg["src_len"]), dst=prefix("FRA_DST", msg["dst_len"]),
                iif=msg.get_attr("FRA_IIFNAME"), oif=msg.get_attr("FRA_OIFNAME"),
                fwmark=fwmark if fwmark or fwmask else None, fwmask=fwmask,
                uid_range=_range(msg.get_attr("FRA_UID_RANGE")),
                suppress_prefixlen=None if suppress in (None, 0xFFFFFFFF, -1) else suppress,
                ipproto=msg.get_attr("FRA_IP_PROTO"), dport_range=_range(msg.get_attr("FRA_DPORT_RANGE")),
                goto=msg.get_attr("FRA_GOTO"))


# ------------------------------------------------------------------ recording the unit tests' fixtures

DUMPS = {  # file name: (message type, request body)
    "links": (rtnl.RTM_GETLINK, netlink.link_request()),
    "addresses": (rtnl.RTM_GETADDR, netlink.IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)),
    "routes4": (rtnl.RTM_GETROUTE, netlink.RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)),
    "routes6": (rtnl.RTM_GETROUTE, netlink.RTMSG.pack(socket.AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0)),
    "rules4": (rtnl.RTM_GETRULE, netlink.FIB_RULE_HDR.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)),
    "rules6": (rtnl.RTM_GETRULE, netlink.FIB_RULE_HDR.pack(socket.AF_INET6, 0, 0, 0, 0, 0, 0, 0, 0)),
}


def record_dumps(directory: Path) -> None:
    """Each dump's bytes as the kernel sent them (all chunks, NLMSG_DONE
    included) and pyroute2's view of the same state, one repr per line."""
    directory.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, rtnl.NETLINK_ROUTE)
    with sock:
        sock.bind((0, 0))
        for seq, (name, (mtype, body)) in enumerate(DUMPS.items(), start=1):
            sock.send(rtnl.NLMSGHDR.pack(16 + len(body), mtype, rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP, seq, 0)
                      + body)
            chunks: list[bytes] = []
            while True:
                chunks.append(sock.recv(1 << 16))
                if rtnl.take_dump(chunks[-1], seq, lambda *_: None, [])[0]:
                    break
            (directory / f"{name}.bin").write_bytes(b"".join(chunks))
    for name, part in zip(("links", "addresses", "routes", "rules"), pyroute2_view()):
        (directory / f"{name}.pyroute2.txt").write_text("".join(f"{item!r}\n" for item in part))


def _record_in_lab(directory: Path) -> None:
    from tests.lab import linux

    linux.private_mounts()
    lab = Lab()
    try:
        lab.build()
        lab.reset("wg-quick")
        add_extras(lab)
        with lab.in_netns("lap"):
            record_dumps(directory)
    finally:
        lab.close()


if __name__ == "__main__":
    if sys.argv[1:2] != ["record"] or len(sys.argv) != 3:
        sys.exit(__doc__)
    _record_in_lab(Path(sys.argv[2]))
