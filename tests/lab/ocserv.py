r"""ocserv in the lab's vpn namespace, openconnect in the laptop (Debian packages).

```
 [lap] eth0 100.64.0.2 ---- [isp] ---- eth0 203.0.113.1 [vpn]
   openconnect (anyconnect protocol,          ocserv: TLS tcp/443 + DTLS udp/443,
   --script vpnc-script)                      password auth (ocpasswd file),
     |                                        server certificate from the lab CA
   tun0 100.100.1.x/24, fd00:110::x  ......   vpns0 (one per client), pool
                                              100.100.1.0/24 + fd00:110::/64
```

One ocserv serves both scenarios: the route set is per user
(`config-per-user`), as a real deployment gives groups different routes.

- user `full`: no `route =` at all, which ocserv sends as a full tunnel;
  vpnc-script then replaces the laptop's default route with tun0 (both
  families) and adds a host route to the server via the LAN router;
- user `split`: `route =` the corporate prefixes only (split include);
  vpnc-script adds just those via tun0 and the defaults stay on eth0.

Both get the corporate resolver (100.100.0.1, reached through the tunnel),
which vpnc-script writes into the laptop's resolv.conf: the lab's
/etc/netns/<lap>/resolv.conf, which `ip netns exec` mounts over
/etc/resolv.conf, so the host's own resolv.conf is never touched (the client
refuses to start without that file). openconnect runs in its own mount
namespace with a lab directory over /run (vpnc-script's backup goes there,
and it cannot reach the host's resolvconf or systemd-resolved).

The isp learns the pools' routes back via the gateway (added at start,
removed at stop), exactly as it knows the WireGuard tunnel's.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.lab import CORP_PREFIXES, CORP_RESOLVER, VPN_SERVER, VPN_SERVER_V6, linux
from tests.lab.labpki import LabCA
from tests.lab.topology import ETC_NETNS, WAIT, Lab, LabError, poll

PORT = 443
# Pools apart from the other lab clients' (WireGuard 100.100.0.0/24, OpenVPN
# 100.101.0.0/16 + fd00:101::/48, strongSwan 100.100.2.0/24 + fd00:120::/120).
POOL_V4 = "100.100.1.0/24"
POOL_V6 = "fd00:110::/64"
PASSWORD = "lab-password"
USERS: dict[str, tuple[str, ...]] = {"full": (), "split": CORP_PREFIXES}
TUN = "tun0"
VPNC_SCRIPT = "/usr/share/vpnc-scripts/vpnc-script"
CONNECT_TIMEOUT = 20.0


def _config(workdir: Path, cert: Path, key: Path, passwd: Path, per_user: Path) -> str:
    # No `route =` here: each user's file decides (none = full tunnel).
    # Workers stay root: the lab's work dir is private to root (mkdtemp), and
    # the sec-mod socket lives there. isolate-workers off: no seccomp filter to
    # trip on in a test; banning off: the lab reconnects from one address many
    # times a minute.
    return f"""\
auth = "plain[passwd={passwd}]"
tcp-port = {PORT}
udp-port = {PORT}
listen-host = {VPN_SERVER}
server-cert = {cert}
server-key = {key}
socket-file = {workdir / "ocserv-socket"}
pid-file = {workdir / "ocserv.pid"}
run-as-user = root
run-as-group = root
isolate-workers = false
use-occtl = false
max-clients = 16
max-same-clients = 0
max-ban-score = 0
rate-limit-ms = 0
keepalive = 300
dpd = 60
mobile-dpd = 300
try-mtu-discovery = false
auth-timeout = 30
cookie-timeout = 300
deny-roaming = false
rekey-time = 172800
rekey-method = ssl
log-level = 2
device = vpns
predictable-ips = true
ipv4-network = {POOL_V4}
ipv6-network = {POOL_V6}
ipv6-subnet-prefix = 128
dns = {CORP_RESOLVER}
ping-leases = false
config-per-user = {per_user}/
cisco-client-compat = true
dtls-legacy = true
"""


class Ocserv:
    """The server: `start()` once per test module, `stop()` at its end."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.workdir = lab.workdir / "ocserv"
        self.ca: LabCA | None = None
        self.setup_seconds: float | None = None
        self._isp_routes: list[str] = []

    def start(self) -> "Ocserv":
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = LabCA(self.workdir / "pki", "leakcheck lab ocserv CA")
        server = self.ca.issue("server", VPN_SERVER)
        passwd = self.workdir / "ocpasswd"
        per_user = self.workdir / "users"
        per_user.mkdir(exist_ok=True)
        for user, routes in USERS.items():
            self.lab.exec(["ocpasswd", "-c", str(passwd), user], ns="vpn", input=f"{PASSWORD}\n{PASSWORD}\n")
            (per_user / user).write_text("".join(f"route = {prefix}\n" for prefix in routes))
        conf = self.workdir / "ocserv.conf"
        conf.write_text(_config(self.workdir, server.cert, server.key, passwd, per_user))
        for route in (f"-4 route replace {POOL_V4} via {VPN_SERVER} dev wan0",
                      f"-6 route replace {POOL_V6} via {VPN_SERVER_V6} dev wan0"):
            self.lab.ip(route, ns="isp")
            self._isp_routes.append(route.replace(" replace ", " del ", 1))
        proc = self.lab._spawn("vpn", ["ocserv", "--foreground", "--config", str(conf)], "ocserv")
        poll(lambda: self._listening(proc), WAIT * 2, "ocserv to listen on tcp/443")
        self.setup_seconds = time.monotonic() - started
        return self

    def _listening(self, proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:
            raise LabError(f"ocserv exited ({proc.returncode}): {self.lab._log_tail('ocserv')}")
        done = self.lab.exec(["ss", "-Htln", f"sport = :{PORT}"], ns="vpn", check=False)
        return VPN_SERVER in done.stdout

    def stop(self) -> None:
        self.lab._stop("ocserv")
        for route in self._isp_routes:
            self.lab.ip(route, ns="isp", check=False)
        self._isp_routes = []

    def log(self) -> str:
        return self.lab._log_tail("ocserv")


def connect(lab: Lab, server: Ocserv, user: str) -> subprocess.Popen:
    """openconnect in the laptop as `user` (password on stdin, CA from the lab), with
    the packaged vpnc-script; returns once tun0 is up with its routes and DNS."""
    resolv = ETC_NETNS / lab.lap / "resolv.conf"
    if not resolv.is_file():
        # Without it vpnc-script would rewrite the host's /etc/resolv.conf.
        raise LabError(f"{resolv} is missing: refusing to run vpnc-script against the host's resolv.conf")
    assert server.ca is not None
    # A private mount namespace with a lab directory over /run: vpnc-script keeps
    # its resolv.conf backup in /var/run/vpnc, and must not find (nor talk to)
    # the host's resolvconf or systemd-resolved there.
    run_dir = lab.workdir / "openconnect-run"
    run_dir.mkdir(exist_ok=True)
    argv = ["ip", "netns", "exec", lab.lap, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", 'mount --bind "$1" /run && shift && exec "$@"', "sh", str(run_dir),
            "openconnect", "--protocol=anyconnect", "--non-inter", "--passwd-on-stdin", f"--user={user}",
            f"--cafile={server.ca.cert}", f"--interface={TUN}", f"--script={VPNC_SCRIPT}",
            f"https://{VPN_SERVER}:{PORT}/"]
    log_path = lab.workdir / "openconnect.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=log,
                                preexec_fn=linux.set_parent_death_signal)
    lab._procs["openconnect"] = proc
    assert proc.stdin is not None
    proc.stdin.write(f"{PASSWORD}\n".encode())
    proc.stdin.close()

    def configured() -> bool:
        if proc.poll() is not None:
            raise LabError(f"openconnect exited ({proc.returncode}): {lab._log_tail('openconnect')}\n"
                           f"ocserv: {server.log()}")
        # vpnc-script writes resolv.conf last: then routes and addresses are in place.
        return lab.link_exists(TUN) and CORP_RESOLVER in resolv.read_text() and \
            bool(lab.ip_json(f"-4 route show dev {TUN}"))
    poll(configured, CONNECT_TIMEOUT, f"openconnect to bring up {TUN} as {user}", interval=0.05)
    return proc


def disconnect(lab: Lab) -> None:
    """SIGTERM openconnect: it runs vpnc-script's disconnect (routes, resolv.conf back)."""
    lab._stop("openconnect", timeout=5.0)


__all__ = ["Ocserv", "connect", "disconnect", "USERS", "POOL_V4", "POOL_V6", "TUN", "PORT"]
