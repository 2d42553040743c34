r"""strongSwan IKEv2 with certificates in the lab: a responder in the vpn
namespace, an initiator in the laptop, ESP in userspace (Debian packages).

```
 [lap] eth0 100.64.0.2 -------- [isp] -------- eth0 203.0.113.1 [vpn]
   charon (initiator)                              charon (responder)
   kernel-libipsec: ESP in UDP 4500                kernel-libipsec
     |  routes in table 220 (rule 220):            pool 100.100.2.0/24 + fd00:120::/120,
     |  0.0.0.0/0 and ::/0 dev ipsec0,             DNS 100.100.0.1 (the corporate resolver)
     |  the server 203.0.113.1 via 100.64.0.1
   ipsec0 100.100.2.1, fd00:120::1 ............... ipsec0
```

This kernel has no ESP transform, so both sides use charon's kernel-libipsec
plugin: ESP is done by charon itself on a TUN device (`ipsec0`), always
UDP-encapsulated, and the policies are routes in table 220 (looked up by
the rule charon adds at priority 220), not xfrm policies. The peer's own
address is kept outside the tunnel by an "exclude" route in table 220 via
the LAN router (charon's IKE/ESP packets would loop through ipsec0
otherwise): the ServerIP case.

Authentication is IKEv2 public key both ways, certificates from a lab CA
(ECDSA P-256, ECP-384 DH, AES-GCM-256 through the openssl plugin).

Each charon is a separate daemon with its own config, found through
STRONGSWAN_CONF, and its own vici socket (swanctl --uri). Its pid file is
compiled in (/var/run/charon.pid), so each runs in a private mount
namespace (`unshare --mount`) with a directory of the lab's bind-mounted
over /run; nothing reaches the host's /run. The initiator's resolve plugin
writes the pushed DNS server into the laptop's resolv.conf
(/etc/netns/<lap>/resolv.conf), never the host's.

Connections on the initiator (`swanctl --initiate --child NAME`):

- `full`: remote traffic selectors 0.0.0.0/0 and ::/0, virtual IPs of both
  families: a full tunnel;
- `legacy`: `full` with legacy proposals (IKE 3des-sha1-modp1024, ESP
  aes128-sha1), `psk`: `full` authenticated with a pre-shared key (the
  posture twins of tests/lab/test_posture.py);
- `split`: remote traffic selectors narrowed to the corporate prefixes
  (198.18.0.0/15, 100.100.0.0/24, fd00:100::/64; a rightsubnet split):
  table 220 routes only those into ipsec0, public space stays on eth0.

(A `mode = pass` shunt is no bypass here: kernel-libipsec installs neither
an xfrm policy nor a route for it, so traffic it names still goes into
ipsec0. Measured in this lab; that is why the leak twin is a split.)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.lab import CORP_PREFIXES, CORP_RESOLVER, VPN_SERVER, VPN_SERVER_V6
from tests.lab.labpki import Issued, LabCA
from tests.lab.topology import ETC_NETNS, WAIT, Lab, LabError, poll

CHARON = "/usr/lib/ipsec/charon"
POOL_V4 = "100.100.2.0/24"
POOL_V6 = "fd00:120::/120"
CLIENT_ID = "laptop.lab.example"
TUN = "ipsec0"
CORP_HOST = "198.18.0.1"  # a corporate host on the gateway (vpn lo), inside the split's selectors
TABLE = 220
IKE = "aes256gcm16-prfsha384-ecp384"
ESP = "aes256gcm16-ecp384"
# The legacy twin (posture-crypto): IKE is charon's own, so any plugin algorithm goes;
# ESP goes through kernel-libipsec, which does AES-CBC and AES-GCM only: AES-CBC with
# HMAC-SHA1 is its legacy choice.
LEGACY_IKE = "3des-sha1-modp1024"
LEGACY_ESP = "aes128-sha1"
PSK_ID = "psk-laptop.lab.example"
PSK_SECRET = "0sbGFiLXByZS1zaGFyZWQta2V5LW5vdC1hLWNlcnRpZmljYXRl"  # base64, lab only
# Plugins listed explicitly (load_modular = no): nothing from /etc/strongswan.d.
# kernel-libipsec before kernel-netlink: its IPsec backend is the one charon uses.
PLUGINS = ("random nonce openssl sha2 hmac kdf pem x509 pkcs1 pkcs8 pubkey revocation constraints "
           "kernel-libipsec kernel-netlink socket-default vici attr resolve")
INITIATE_TIMEOUT = 20


def _strongswan_conf(run_dir: Path, resolv: Path | None) -> str:
    resolve = f"        resolve {{\n            file = {resolv}\n        }}\n" if resolv else ""
    return f"""\
charon {{
    load_modular = no
    load = {PLUGINS}
    install_virtual_ip = yes
    routing_table = {TABLE}
    routing_table_prio = {TABLE}
    retransmit_tries = 3
    retransmit_timeout = 1.0
    plugins {{
        vici {{
            socket = unix://{run_dir}/charon.vici
        }}
{resolve}    }}
    filelog {{
        stderr {{
            default = 1
            knl = 1
            time_format = %T
        }}
    }}
}}
"""


def _responder_conf() -> str:
    return f"""\
connections {{
    lab {{
        version = 2
        local_addrs = {VPN_SERVER}, {VPN_SERVER_V6}
        proposals = {IKE}, {LEGACY_IKE}
        encap = yes
        pools = v4, v6
        local {{
            auth = pubkey
            certs = server.pem
            id = {VPN_SERVER}
        }}
        remote {{
            auth = pubkey
        }}
        children {{
            lab {{
                local_ts = 0.0.0.0/0, ::/0
                esp_proposals = {ESP}, {LEGACY_ESP}
            }}
        }}
    }}
    lab-psk {{
        version = 2
        local_addrs = {VPN_SERVER}, {VPN_SERVER_V6}
        proposals = {IKE}
        encap = yes
        pools = v4, v6
        local {{
            auth = psk
            id = {VPN_SERVER}
        }}
        remote {{
            auth = psk
            id = {PSK_ID}
        }}
        children {{
            lab-psk {{
                local_ts = 0.0.0.0/0, ::/0
                esp_proposals = {ESP}
            }}
        }}
    }}
}}
secrets {{
    ike-psk {{
        id-server = {VPN_SERVER}
        id-laptop = {PSK_ID}
        secret = {PSK_SECRET}
    }}
}}
pools {{
    v4 {{
        addrs = {POOL_V4}
        dns = {CORP_RESOLVER}
    }}
    v6 {{
        addrs = {POOL_V6}
    }}
}}
"""


def _initiator_conf() -> str:
    def conn(name: str, remote_ts: str, ike: str = IKE, esp: str = ESP, psk: bool = False) -> str:
        local = (f"auth = psk\n            id = {PSK_ID}" if psk else
                 f"auth = pubkey\n            certs = client.pem\n            id = {CLIENT_ID}")
        return f"""\
    {name} {{
        version = 2
        remote_addrs = {VPN_SERVER}
        vips = 0.0.0.0, ::
        proposals = {ike}
        encap = yes
        local {{
            {local}
        }}
        remote {{
            auth = {"psk" if psk else "pubkey"}
            id = {VPN_SERVER}
        }}
        children {{
            {name} {{
                remote_ts = {remote_ts}
                esp_proposals = {esp}
                start_action = none
            }}
        }}
    }}
"""
    full = "0.0.0.0/0, ::/0"
    return ("connections {\n" + conn("full", full) + conn("split", ", ".join(CORP_PREFIXES))
            # posture twins: the full tunnel with legacy proposals, and with a pre-shared key
            + conn("legacy", full, LEGACY_IKE, LEGACY_ESP) + conn("psk", full, psk=True) + "}\n"
            + f"secrets {{\n    ike-psk {{\n        id-server = {VPN_SERVER}\n        id-laptop = {PSK_ID}\n"
            f"        secret = {PSK_SECRET}\n    }}\n}}\n")


class Charon:
    """One charon daemon in one lab namespace, with its swanctl directory."""

    def __init__(self, lab: Lab, role: str, ca: LabCA, issued: Issued, swanctl_conf: str):
        self.lab, self.role = lab, role
        self.key = f"charon-{role}"
        self.base = lab.workdir / "strongswan" / role
        self.run_dir = self.base / "run"
        self.swanctl_dir = self.base / "swanctl"
        shutil.rmtree(self.base, ignore_errors=True)
        for sub in ("x509ca", "x509", "private"):
            (self.swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca.cert, self.swanctl_dir / "x509ca" / "ca.pem")
        shutil.copy(issued.cert, self.swanctl_dir / "x509" / issued.cert.name)
        shutil.copy(issued.key, self.swanctl_dir / "private" / issued.key.name)
        (self.swanctl_dir / "swanctl.conf").write_text(swanctl_conf)
        resolv = ETC_NETNS / lab.lap / "resolv.conf" if role == "lap" else None
        self.conf = self.base / "strongswan.conf"
        self.conf.write_text(_strongswan_conf(self.run_dir, resolv))

    @property
    def uri(self) -> str:
        return f"unix://{self.run_dir}/charon.vici"

    def start(self) -> None:
        """charon in a private mount namespace (its /run is our run_dir); returns once
        vici answers and the configuration and credentials are loaded."""
        script = f"mount --bind {self.run_dir} /run && exec {CHARON}"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        proc = self.lab._spawn(self.role, argv, self.key, env={"STRONGSWAN_CONF": str(self.conf)})

        def answering() -> bool:
            if proc.poll() is not None:
                raise LabError(f"charon in {self.role} exited ({proc.returncode}): {self.log()}")
            return self.swanctl("--stats", check=False).returncode == 0
        poll(answering, WAIT * 2, f"charon in {self.role} to answer on vici", interval=0.05)
        self.swanctl("--load-all", "--noprompt")

    def swanctl(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return self.lab.exec(["swanctl", *args, "--uri", self.uri], ns=self.role, check=check, timeout=timeout,
                             env={"SWANCTL_DIR": str(self.swanctl_dir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def stop(self) -> None:
        self.lab._stop(self.key, timeout=5.0)

    def log(self) -> str:
        return self.lab._log_tail(self.key)


class Responder:
    """The gateway: CA, certificates and the responder charon, once per test module."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.setup_seconds: float | None = None
        self.ca: LabCA | None = None
        self.client: Issued | None = None
        self.charon: Charon | None = None
        self._isp_routes: list[str] = []
        self._vpn_undo: list[str] = []

    def start(self) -> "Responder":
        started = time.monotonic()
        pki = self.lab.workdir / "strongswan" / "pki"
        self.ca = LabCA(pki, "leakcheck lab IPsec CA")
        server = self.ca.issue("server", VPN_SERVER)
        self.client = self.ca.issue("client", CLIENT_ID, server=False)
        for route in (f"-4 route replace {POOL_V4} via {VPN_SERVER} dev wan0",
                      f"-6 route replace {POOL_V6} via {VPN_SERVER_V6} dev wan0"):
            self.lab.ip(route, ns="isp")
            self._isp_routes.append(route.replace(" replace ", " del ", 1))
        self.charon = Charon(self.lab, "vpn", self.ca, server, _responder_conf())
        # kernel-libipsec routes each policy from an address inside its local
        # traffic selector: the corporate network needs one in 198.18.0.0/15.
        self.lab.ip(f"-4 addr replace {CORP_HOST}/32 dev lo", ns="vpn")
        self._vpn_undo.append(f"-4 addr del {CORP_HOST}/32 dev lo")
        self.charon.start()
        self.setup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        if self.charon:
            self.charon.stop()
        for route in self._isp_routes:
            self.lab.ip(route, ns="isp", check=False)
        for command in self._vpn_undo:
            self.lab.ip(command, ns="vpn", check=False)
        self._isp_routes, self._vpn_undo = [], []

    def log(self) -> str:
        return self.charon.log() if self.charon else ""


def connect(lab: Lab, responder: Responder, connection: str) -> Charon:
    """The initiator charon in the laptop, connection `full` or `split` initiated;
    returns once ipsec0 carries the virtual IP and table 220 has its routes."""
    resolv = ETC_NETNS / lab.lap / "resolv.conf"
    if not resolv.is_file():
        raise LabError(f"{resolv} is missing: the resolve plugin would write the host's resolv.conf")
    assert responder.ca is not None and responder.client is not None
    charon = Charon(lab, "lap", responder.ca, responder.client, _initiator_conf())
    charon.start()
    done = charon.swanctl("--initiate", "--child", connection, "--timeout", str(INITIATE_TIMEOUT), check=False,
                          timeout=INITIATE_TIMEOUT + 5)
    if done.returncode != 0:
        raise LabError(f"swanctl --initiate {connection} failed: {done.stdout[-1500:]}\n"
                       f"initiator: {charon.log()}\nresponder: {responder.log()}")

    def routed() -> bool:
        routes = lab.ip_json(f"-4 route show table {TABLE}")
        return lab.link_exists(TUN) and any(r.get("dev") == TUN for r in routes)
    poll(routed, WAIT, f"charon to route through {TUN} in table {TABLE}", interval=0.05)
    return charon


__all__ = ["Responder", "Charon", "connect", "POOL_V4", "POOL_V6", "TUN", "TABLE"]
