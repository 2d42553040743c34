"""The servers of tun/tap/ppp clients (leakcheck/linux/tunowners.py): parsers on
recorded /proc text (tests/unit/data/tunowners/README says where it came from),
and the whole reader over a /proc tree built in a temporary directory."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from leakcheck.linux import tunowners
from leakcheck.netstate import Address, Link, Nexthop, Route, SocketInfo, TunnelOwner
from leakcheck.tunnel import Tunnel, vpn_endpoints
from leakcheck.netstate import NetState, WireGuardInfo

DATA = Path(__file__).parent / "data" / "tunowners"
SERVER = "203.0.113.1"


# ---------------------------------------------------------------- parsers on recorded text

def test_fdinfo_of_a_tun_fd_names_its_interface():
    assert tunowners.parse_fdinfo_iff((DATA / "openvpn-fdinfo-tun.txt").read_text()) == "tun0"
    assert tunowners.parse_fdinfo_iff("pos:\t0\nflags:\t02\nmnt_id:\t7\nino:\t9\n") is None


def test_parent_pid_from_stat():
    assert tunowners.parse_ppid((DATA / "openvpn-stat.txt").read_text()) == 1
    assert tunowners.parse_ppid("42 (odd ) name) S 17 42 42") == 17
    assert tunowners.parse_ppid("garbage") is None


def test_conntrack_flow_of_the_client_socket():
    (flow,) = tunowners.parse_conntrack((DATA / "nf_conntrack.txt").read_text())
    assert flow == tunowners.Flow("udp", "203.0.113.2", SERVER, 49519, 1194)


def test_conntrack_prints_ipv6_zero_padded():
    (flow,) = tunowners.parse_conntrack((DATA / "nf_conntrack-ipv6.txt").read_text())
    assert flow == tunowners.Flow("udp", "::1", "::2", 40001, 1195)


def test_remote_from_command_line_and_config_file():
    argv = [a.decode() for a in (DATA / "openvpn-cmdline.bin").read_bytes().split(b"\0") if a]
    assert tunowners.configured_remotes(argv) == [SERVER]
    config = "client\nremote 192.0.2.7 1194 udp\n# remote 192.0.2.99\n<connection>\nremote vpn.example 443 tcp\n</connection>\n"
    assert tunowners.configured_remotes(["openvpn", "--config", "c.ovpn"], config) == ["192.0.2.7", "vpn.example"]
    assert tunowners.config_path(["openvpn", "--config", "c.ovpn"]) == "c.ovpn"
    assert tunowners.config_path(["openvpn", "/etc/openvpn/client.conf"]) == "/etc/openvpn/client.conf"
    assert tunowners.config_path(["openconnect", "--user", "u", "vpn.example"]) is None


# ---------------------------------------------------------------- a /proc tree of our own

class FakeProc:
    """A /proc with the files the reader looks at, all in one network namespace."""

    def __init__(self, root: Path):
        self.root = root
        (root / "self" / "ns").mkdir(parents=True)
        os.symlink("net:[4026531840]", root / "self" / "ns" / "net")
        (root / "net").mkdir()
        (root / "net" / "nf_conntrack").write_text("")  # no flows (and no ctnetlink dump of this host)

    def process(self, pid: int, comm: str, *, ppid: int = 1, fds: dict[int, str] | None = None,
                iff: dict[int, str] | None = None, argv: list[str] | None = None, netns: str = "net:[4026531840]"):
        base = self.root / str(pid)
        for sub in ("fd", "fdinfo", "ns"):
            (base / sub).mkdir(parents=True)
        os.symlink(netns, base / "ns" / "net")
        (base / "comm").write_text(comm + "\n")
        (base / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1\n")
        (base / "cmdline").write_bytes(b"\0".join(a.encode() for a in (argv or [comm])) + b"\0")
        os.symlink("/", base / "cwd")
        for fd, target in (fds or {}).items():
            os.symlink(target, base / "fd" / str(fd))
            text = "pos:\t0\nflags:\t02\n" + (f"iff:\t{iff[fd]}\n" if iff and fd in iff else "")
            (base / "fdinfo" / str(fd)).write_text(text)


LINKS = (Link(1, "lo", None, True, "UNKNOWN"), Link(2, "eth0", "veth", True, "UP"),
         Link(3, "tun0", "tun", True, "UNKNOWN"))
ADDRESSES = (Address(2, "eth0", ipaddress.ip_address("100.64.0.2"), 24, 0),
             Address(3, "tun0", ipaddress.ip_address("100.101.0.2"), 24, 0))


def route(dst: str, ifname: str, gateway: str | None = None) -> Route:
    return Route(ipaddress.ip_network(dst), 254, "unicast", "boot", 0, (Nexthop(None, ifname, gateway),))


DEF1_ROUTES = (route("0.0.0.0/1", "tun0"), route("128.0.0.0/1", "tun0"), route(f"{SERVER}/32", "eth0", "100.64.0.1"),
               route("0.0.0.0/0", "eth0", "100.64.0.1"))


def udp(inode: int, local: str = "0.0.0.0", port: int = 49519, remote: str | None = None,
        remote_port: int | None = None) -> SocketInfo:
    return SocketInfo("udp", 4, "connected" if remote else "unconnected", local, port, remote, remote_port, 0, inode)


def tcp(inode: int, local: str, remote: str, state: str = "established") -> SocketInfo:
    return SocketInfo("tcp", 4, state, local, 40000, remote, 443, 0, inode)


def openvpn(proc: FakeProc, pid: int = 700) -> None:
    proc.process(pid, "openvpn", fds={3: "socket:[11]", 4: "/dev/net/tun", 5: "socket:[12]"}, iff={4: "tun0"},
                 argv=["openvpn", "--client", "--dev", "tun0", "--remote", SERVER, "1194", "--nobind"])


def read(proc: FakeProc, sockets, routes=DEF1_ROUTES, links=LINKS, **kw) -> tuple[TunnelOwner, ...]:
    notes: list[str] = []
    return tunowners.read(links, ADDRESSES, routes, sockets, notes, root=proc.root, **kw)


def test_unconnected_udp_client_server_from_its_config_and_the_host_route(tmp_path):
    proc = FakeProc(tmp_path)
    openvpn(proc)
    # the management socket to localhost and a DNS socket through the tunnel do not count
    socks = [udp(11), udp(12, local="100.101.0.2", port=5353, remote="100.101.0.1", remote_port=53)]
    (owner,) = read(proc, socks)
    assert (owner.ifname, owner.pid, owner.name, owner.endpoints) == ("tun0", 700, "openvpn", (SERVER,))
    assert "host route" in owner.evidence[0] and f"{SERVER}/32 via 100.64.0.1 dev eth0" in owner.evidence[0]


def test_known_tun_holders_limit_the_scan(tmp_path):
    proc = FakeProc(tmp_path)
    openvpn(proc)
    assert read(proc, [udp(11)], tun_holders=[700])[0].endpoints == (SERVER,)
    assert read(proc, [udp(11)], tun_holders=[]) == ()  # only the candidates are looked into


def test_configuration_alone_does_not_decide(tmp_path):
    proc = FakeProc(tmp_path)
    openvpn(proc)
    split = (route("198.18.0.0/15", "tun0"), route("0.0.0.0/0", "eth0", "100.64.0.1"))
    (owner,) = read(proc, [udp(11)], routes=split)
    assert owner.endpoints == ()  # no host route, no tracked flow: the kernel did not confirm it


def test_tracked_flow_of_an_unconnected_socket_names_the_server(tmp_path):
    proc = FakeProc(tmp_path)
    openvpn(proc)
    conntrack = tmp_path / "conntrack"
    conntrack.write_text((DATA / "nf_conntrack.txt").read_text()
                         + "ipv4 2 udp 17 20 src=100.64.0.2 dst=192.0.2.53 sport=5000 dport=53 src=192.0.2.53 "
                           "dst=100.64.0.2 sport=53 dport=5000 mark=0 zone=0 use=2\n")
    split = (route("198.18.0.0/15", "tun0"), route("0.0.0.0/0", "eth0", "100.64.0.1"))
    (owner,) = read(proc, [udp(11)], routes=split, conntrack_path=conntrack)
    assert owner.endpoints == (SERVER,) and owner.evidence[0].startswith(f"{SERVER}: conntrack")


def test_connected_tls_socket_names_the_server_not_the_tunnel_traffic(tmp_path):
    proc = FakeProc(tmp_path)
    proc.process(800, "openconnect", fds={3: "socket:[21]", 4: "socket:[22]", 6: "/dev/net/tun"}, iff={6: "tun0"},
                 argv=["openconnect", "vpn.example"])
    socks = [tcp(21, "100.64.0.2", "192.0.2.10"), tcp(22, "100.101.0.2", "198.51.100.7"),
             tcp(23, "100.64.0.2", "192.0.2.99")]  # inode 23 belongs to another process
    (owner,) = read(proc, socks, routes=())
    assert owner.endpoints == ("192.0.2.10",) and "tcp 100.64.0.2:40000 -> 192.0.2.10:443" in owner.evidence[0]


def test_ppp_unit_belongs_to_pppd_and_the_server_to_its_parent(tmp_path):
    proc = FakeProc(tmp_path)
    proc.process(900, "openfortivpn", fds={3: "socket:[31]"}, argv=["openfortivpn", "vpn.example:443"])
    proc.process(901, "pppd", ppid=900, fds={0: "/dev/pts/3", 7: "/dev/ppp"})
    run = tmp_path / "run"
    run.mkdir()
    (run / "ppp0.pid").write_text("901\nppp0\n")
    links = (*LINKS[:2], Link(4, "ppp0", "ppp", True, "UNKNOWN"))
    (owner,) = read(proc, [tcp(31, "100.64.0.2", "192.0.2.20")], routes=(), links=links, run_dirs=(run,))
    assert (owner.ifname, owner.pid, owner.name, owner.endpoints) == ("ppp0", 901, "pppd", ("192.0.2.20",))


def test_processes_of_another_namespace_and_no_tunnel_links(tmp_path):
    proc = FakeProc(tmp_path)
    proc.process(700, "openvpn", fds={4: "/dev/net/tun"}, iff={4: "tun0"}, netns="net:[99]")
    assert read(proc, []) == ()  # its tun0 is another namespace's device
    assert read(proc, [], links=LINKS[:2]) == ()  # no tun/ppp link: nothing scanned


def test_vpn_endpoints_include_tun_owners_of_the_tunnel():
    state = NetState(links=LINKS, tunnel_owners=(TunnelOwner("tun0", 700, "openvpn", (SERVER,)),
                                                 TunnelOwner("tun9", 701, "other", ("192.0.2.1",))),
                     wireguard=(WireGuardInfo("wg0", None, ("192.0.2.2",), (), None),))
    assert vpn_endpoints(state) == {SERVER, "192.0.2.1", "192.0.2.2"}
    tunnel = Tunnel(state="up", kind="tun", interfaces=("tun0",))
    assert vpn_endpoints(state, tunnel) == {SERVER}


def test_ctnetlink_dump_both_families():
    import binascii
    import json

    from leakcheck.linux import conntrack

    reads = [binascii.unhexlify(r) for r in json.loads((DATA / "ctnetlink-dump.json").read_text())]
    flows: list = []
    done = [conntrack.parse_dump(r, flows) for r in reads]
    assert done[-1] is True
    assert sorted(flows, key=lambda f: f.sport) == [conntrack.TrackedFlow("udp", "127.0.0.1", "127.0.0.2", 40000, 1194),
                                                   conntrack.TrackedFlow("udp", "::1", "::2", 40001, 1195)]
    request = conntrack.dump_request(7)
    assert len(request) == 20 and request[4:6] == (0x101).to_bytes(2, "little")
