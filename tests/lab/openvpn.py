r"""Real OpenVPN 2.6 in the lab (Debian's `openvpn`): servers in the vpn
namespace, one client in the laptop.

```
 [lap] eth0 100.64.0.2 --- [isp] --- eth0 203.0.113.1 [vpn]
   \__ tun0 (openvpn --client, UDP) ......... tunsrvN (openvpn --server, UDP port 1194+N-1)
       100.101.N.2/24, fd00:101:N::1000/64       100.101.N.1/24, fd00:101:N::1/64
```

Each server variant is one `openvpn --server` process with its own port,
tun device and subnet, started the first time a scenario needs it and kept
for the session (the isp routes 100.101.0.0/16 and fd00:101::/48 back to
the vpn namespace). What a server pushes is the variant:

- def1:      `redirect-gateway def1` (IPv4 only; the tunnel still gets
             an fd00:101:1::/64 address)
- def1-ipv6: `redirect-gateway def1 ipv6`
- split:     `route 198.18.0.0 255.254.0.0` and the corporate resolver's
             100.100.0.0/24 only

A small CA (openssl, EC P-256) is made once per session. Clients run with
the short timers of the reconnect scenarios (`ping 1`, `ping-restart 3` or
`ping-exit 3`, `connect-retry 1`), without `persist-tun`, and with
`disable-dco` (a tun device, whatever this kernel's ovpn module can do).

Styles registered in tests/lab/scenarios.py's STYLES when this module is
imported (the laptop's client is started by the style):

- openvpn:           def1 client, the LAN is IPv4-only (its global IPv6
                     address and IPv6 default route removed)
- openvpn-ipv6:      def1-ipv6 client beside the LAN's global IPv6
- openvpn-split:     split client
- openvpn-exit:      def1 client with `ping-exit 3` (gives up), IPv4-only LAN

A kill switch (apply_kill_switch / remove_kill_switch) goes on and off a
running client, so several scenarios share one client start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tests.lab import LAN_ROUTER_V6, LAPTOP_LAN_V6, VPN_SERVER, VPN_SERVER_V6
from tests.lab.scenarios import STYLES, Knob, resolv

if TYPE_CHECKING:
    from tests.lab.topology import Lab

CLIENT_KEY = "openvpn-client"
CLIENT_IF = "tun0"
READY = "Initialization Sequence Completed"
START_WAIT_S = 15.0  # TLS handshake and pushed configuration; usually well under a second
CORP_RESOLVER_OVPN = "100.100.0.1"  # the vpn namespace's resolver, reached through the tunnel too


@dataclass(frozen=True)
class Server:
    name: str
    index: int  # subnet 100.101.<index>.0/24, device tunsrv<index>, port 1193 + index
    push: tuple[str, ...]
    server_options: tuple[str, ...] = ()  # extra server arguments
    client_options: tuple[str, ...] = ()  # extra client config lines

    @property
    def port(self) -> int:
        return 1193 + self.index

    @property
    def device(self) -> str:
        return f"tunsrv{self.index}"

    @property
    def gateway(self) -> str:
        return f"100.101.{self.index}.1"

    @property
    def key(self) -> str:
        return f"openvpn-server-{self.name}"


SERVERS = {s.name: s for s in (Server("def1", 1, ("redirect-gateway def1",)),
                               Server("def1-ipv6", 2, ("redirect-gateway def1 ipv6",)),
                               Server("split", 3, ("route 198.18.0.0 255.254.0.0",
                                                   "route 100.100.0.0 255.255.255.0")),
                               # posture-crypto's legacy twin: both ends allow AES-128-CBC, the client
                               # only that (auth defaults to SHA1): negotiated AES-128-CBC / SHA1
                               Server("legacy", 4, ("redirect-gateway def1",),
                                      ("--data-ciphers", "AES-256-GCM:AES-128-GCM:AES-128-CBC"),
                                      ("data-ciphers AES-128-CBC",)))}


# ---------------------------------------------------------------- the CA (once per session)

def _pki_dir(lab: "Lab") -> Path:
    return lab.workdir / "openvpn"


def ensure_pki(lab: "Lab") -> Path:
    """CA, server and client certificates (EC P-256), made once in the lab's workdir."""
    pki = _pki_dir(lab)
    if (pki / "client.crt").exists():
        return pki
    pki.mkdir(exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    lab_run = _runner(lab)
    lab_run(["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=leakcheck-lab-ca"], pki)
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (pki / f"{name}.ext").write_text(f"extendedKeyUsage={usage}\nkeyUsage=digitalSignature,keyAgreement\n")
        lab_run(["openssl", "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=lab-{name}"], pki)
        lab_run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext"], pki)
    return pki


def _runner(lab: "Lab") -> Callable[[list[str], Path], None]:
    from tests.lab.topology import _run

    def run(argv: list[str], cwd: Path) -> None:
        _run(["sh", "-c", 'cd "$0" && exec "$@"', str(cwd), *argv])
    return run


# ---------------------------------------------------------------- servers (once per session and variant)

def ensure_server(lab: "Lab", server: Server) -> None:
    """The variant's server in the vpn namespace, started once, ready when this returns."""
    proc = lab._procs.get(server.key)
    if proc is not None and proc.poll() is None:
        return
    pki = ensure_pki(lab)
    _route_back_once(lab)
    log = lab.workdir / f"{server.key}.openvpn.log"
    argv = ["openvpn", "--dev", server.device, "--dev-type", "tun", "--proto", "udp", "--local", VPN_SERVER,
            "--port", str(server.port), "--server", f"100.101.{server.index}.0", "255.255.255.0",
            "--server-ipv6", f"fd00:101:{server.index}::/64", "--topology", "subnet",
            "--ca", str(pki / "ca.crt"), "--cert", str(pki / "server.crt"), "--key", str(pki / "server.key"),
            "--dh", "none", "--disable-dco", "--ping", "1", "--ping-restart", "6", "--verb", "3",
            "--log", str(log)]
    for option in server.push:
        argv += ["--push", option]
    argv += list(server.server_options)
    lab._spawn("vpn", argv, server.key)
    from tests.lab.topology import LabError, poll

    def ready() -> bool:
        if lab._procs[server.key].poll() is not None:
            raise LabError(f"openvpn server {server.name} exited: {_tail(log)}")
        return READY in _read(log)
    poll(ready, START_WAIT_S, f"the openvpn server {server.name} to start", interval=0.05)


def _route_back_once(lab: "Lab") -> None:
    """The isp routes the OpenVPN client subnets to the vpn namespace (gone with the isp)."""
    if getattr(lab, "_openvpn_routes", False):
        return
    lab.ip(f"-4 route add 100.101.0.0/16 via {VPN_SERVER} dev wan0", ns="isp")
    lab.ip(f"-6 route add fd00:101::/48 via {VPN_SERVER_V6} dev wan0", ns="isp")
    lab._openvpn_routes = True


# ---------------------------------------------------------------- the laptop's client

def client_config(lab: "Lab", server: Server, on_silence: str) -> Path:
    pki = ensure_pki(lab)
    text = "\n".join([
        "client", f"dev {CLIENT_IF}", "dev-type tun", "proto udp", f"remote {VPN_SERVER} {server.port}", "nobind",
        "disable-dco", f"ca {pki / 'ca.crt'}", f"cert {pki / 'client.crt'}", f"key {pki / 'client.key'}",
        "remote-cert-tls server", "connect-retry 1 1", "ping 1", on_silence, "verb 3", *server.client_options, ""])
    path = lab.workdir / f"client-{server.name}-{on_silence.split()[0]}.conf"
    path.write_text(text)
    return path


def start_client(lab: "Lab", server: Server, on_silence: str = "ping-restart 3") -> None:
    """openvpn --client in the laptop, connected (pushed routes in place) when this returns."""
    from tests.lab.topology import LabError, poll

    ensure_server(lab, server)
    config = client_config(lab, server, on_silence)
    log = lab.workdir / "openvpn-client.openvpn.log"
    log.write_text("")
    lab._spawn("lap", ["openvpn", "--config", str(config), "--log", str(log)], CLIENT_KEY)

    def ready() -> bool:
        if lab._procs[CLIENT_KEY].poll() is not None:
            raise LabError(f"openvpn client exited: {_tail(log)}")
        return READY in _read(log)
    poll(ready, START_WAIT_S, f"the openvpn client to connect to {server.name}", interval=0.05)


def client_running(lab: "Lab") -> bool:
    proc = lab._procs.get(CLIENT_KEY)
    return proc is not None and proc.poll() is None


def wait_connected(lab: "Lab", timeout: float = START_WAIT_S) -> bool:
    """The client is (again) connected: its latest log line of a (re)start is READY."""
    deadline = time.monotonic() + timeout
    log = lab.workdir / "openvpn-client.openvpn.log"
    while time.monotonic() < deadline:
        text = _read(log)
        restarted = max(text.rfind("Restart pause"), text.rfind("SIGUSR1"))
        if client_running(lab) and text.rfind(READY) > restarted and lab.link_exists(CLIENT_IF):
            return True
        time.sleep(0.05)
    return False


def client_log(lab: "Lab") -> str:
    return _read(lab.workdir / "openvpn-client.openvpn.log")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path) -> str:
    return _read(path)[-2000:].strip()


# ---------------------------------------------------------------- styles

def _ipv4_only_lan(lab: "Lab") -> None:
    """Take the LAN's global IPv6 away (a v4-only hotel network)."""
    lab.ip(f"-6 route del default via {LAN_ROUTER_V6} dev eth0")
    lab.ip(f"-6 addr del {LAPTOP_LAN_V6}/64 dev eth0")


def _client(server: str, on_silence: str = "ping-restart 3") -> Callable[["Lab"], None]:
    def start(lab: "Lab") -> None:
        start_client(lab, SERVERS[server], on_silence)
    start.__name__ = f"openvpn_client({server}, {on_silence})"
    return start


OPENVPN_STYLES = {
    "openvpn": Knob(
        "OpenVPN 2.6 client (UDP, redirect-gateway def1 pushed): 0.0.0.0/1 + 128.0.0.0/1 via tun0 and a host "
        "route to the server via the LAN router; IPv4-only LAN; ping 1, ping-restart 3, no persist-tun.",
        (_ipv4_only_lan, _client("def1"), resolv(CORP_RESOLVER_OVPN))),
    "openvpn-ipv6": Knob(
        "OpenVPN client with `redirect-gateway def1 ipv6` pushed, on the dual-stack LAN.",
        (_client("def1-ipv6"), resolv(CORP_RESOLVER_OVPN))),
    "openvpn-split": Knob(
        "OpenVPN client with only `route 198.18.0.0 255.254.0.0` and `route 100.100.0.0 255.255.255.0` pushed "
        "(split tunnel; the corporate resolver inside); IPv4-only LAN.",
        (_ipv4_only_lan, _client("split"), resolv(CORP_RESOLVER_OVPN))),
    "openvpn-legacy": Knob(
        "The openvpn style against a server that also allows AES-128-CBC, the client allowing only that "
        "(data-ciphers AES-128-CBC, auth SHA1 by default): the legacy data channel of posture-crypto.",
        (_ipv4_only_lan, _client("legacy"), resolv(CORP_RESOLVER_OVPN))),
    "openvpn-exit": Knob(
        "The openvpn style with `ping-exit 3` instead of ping-restart: the client gives up after 3 s of silence.",
        (_ipv4_only_lan, _client("def1", "ping-exit 3"), resolv(CORP_RESOLVER_OVPN))),
}
STYLES.update(OPENVPN_STYLES)


# ---------------------------------------------------------------- faults on a running client

def kill_switch_ruleset(server: Server) -> str:
    return f"""
table inet lab_ovpn_killswitch {{
    chain output {{
        type filter hook output priority filter; policy drop;
        oifname "lo" accept
        oifname "{CLIENT_IF}" accept
        ip daddr {VPN_SERVER} udp dport {server.port} accept
        icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} accept
    }}
}}
"""


def apply_kill_switch(lab: "Lab", server: Server) -> None:
    lab.exec(["nft", "-f", "-"], input=kill_switch_ruleset(server))


def remove_kill_switch(lab: "Lab") -> None:
    lab.exec(["nft", "delete", "table", "inet", "lab_ovpn_killswitch"], check=False)


__all__ = ["SERVERS", "Server", "OPENVPN_STYLES", "start_client", "ensure_server", "wait_connected",
           "client_running", "client_log", "apply_kill_switch", "remove_kill_switch", "CLIENT_IF"]
