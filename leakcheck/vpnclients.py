"""What the VPN clients on this device are and how they are set up: the
facts the posture probes (posture-auth, posture-crypto, posture-updates)
judge, read once per run behind one service on the probe context.

`ctx.clients.facts(state)` returns a `ClientFacts`: per tunnel or
configured connection its protocol, authentication, where its private key
lives and the algorithms it negotiated or allows; the installed VPN client
packages; the distribution release. The platform's reader fills it
(leakcheck/linux/vpnclients.py on Linux); tests hand in recorded facts, so
no probe reads the OS or imports a platform module. The first call reads,
later calls (the other posture probes) get the same snapshot.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from leakcheck.netstate import NetState

# Protocol families the policy names (`posture.allowed_protocols`).
PROTOCOLS = ("ipsec", "openvpn", "wireguard", "tls")
# Authentication classes (`posture.allowed_auth`): an X.509 certificate; a raw public
# key without a certificate (WireGuard, IKEv2 raw keys); a pre-shared key (IKE PSK,
# OpenVPN static key); a password, EAP or other user secret.
AUTH_CLASSES = ("certificate", "public-key", "psk", "password", "eap")
KEY_KINDS = ("hardware", "file", "inline", "unknown")


@dataclass(frozen=True)
class KeyStore:
    """Where a private key lives: `hardware` (PKCS#11 URI, TPM, smart card),
    `file` (a path), `inline` (inside the configuration file), `unknown`."""

    kind: str
    where: str

    def evidence(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where}


@dataclass(frozen=True)
class Algorithms:
    """One layer's algorithms: `layer` ike | esp | data-channel | tls; `state`
    negotiated (in use now) or configured (allowed by the configuration);
    `items` the client's own names (encr-alg, integ-alg, data-ciphers...)."""

    layer: str
    state: str
    items: dict[str, str]
    source: str  # where it was read: "vici list-sas", "/etc/openvpn/client.conf", a log line...


@dataclass(frozen=True)
class TunnelConfig:
    client: str  # strongswan | openvpn | wireguard | openconnect | networkmanager
    name: str  # connection, profile or interface name
    protocol: str  # one of PROTOCOLS
    source: str  # where this was read
    interface: str | None = None
    active: bool = True  # up now (False: a configured profile not connected)
    auth: tuple[str, ...] = ()  # AUTH_CLASSES of the local side
    auth_detail: tuple[str, ...] = ()  # in words, for evidence
    keys: tuple[KeyStore, ...] = ()
    algorithms: tuple[Algorithms, ...] = ()
    pid: int | None = None
    notes: tuple[str, ...] = ()

    def evidence(self) -> dict[str, Any]:
        return {"client": self.client, "connection": self.name, "protocol": self.protocol,
                "interface": self.interface, "active": self.active, "source": self.source,
                "pid": self.pid}


@dataclass(frozen=True)
class InstalledPackage:
    name: str  # binary package (dpkg/rpm) or program name (binary)
    version: str
    source: str  # source package (dpkg Source:, else the name)
    manager: str  # dpkg | rpm | binary
    where: str  # /var/lib/dpkg/status, rpm -q, /usr/sbin/openvpn


@dataclass(frozen=True)
class Distribution:
    id: str  # os-release ID: debian, ubuntu, fedora...
    codename: str  # VERSION_CODENAME: bookworm, noble...
    version_id: str = ""


@dataclass(frozen=True)
class ClientFacts:
    tunnels: tuple[TunnelConfig, ...] = ()
    packages: tuple[InstalledPackage, ...] = ()
    distribution: Distribution | None = None
    notes: tuple[str, ...] = ()  # what could not be read, and why
    read_ms: float = 0.0

    def judged(self) -> tuple[TunnelConfig, ...]:
        """What the posture probes judge: the connections in use now; when none is up,
        every configured one (how the device would connect). A connection loaded
        beside the one in use but not up (strongSwan loads them all) is listed, not judged."""
        active = tuple(t for t in self.tunnels if t.active)
        return active or self.tunnels


Reader = Callable[["NetState"], ClientFacts]


CACHED_TABLE = "advisories.json"  # the collector's table, as the agent keeps it in agent.state_dir


class Clients:
    """The service on the probe context: reads once (the first posture probe
    pays), shares the snapshot with the others; and finds the advisory table."""

    def __init__(self, reader: Reader, shipped_table: str | None = None):
        self._reader = reader
        self._lock = threading.Lock()
        self._facts: ClientFacts | None = None
        self._shipped = shipped_table

    def advisory_table(self, configured: str, state_dir: str) -> Any:
        """`configured` when set (an unreadable one raises AdvisoryError); else the
        newer (by its `date`) of the shipped table and the collector's copy the agent
        cached in `state_dir` (a broken cached copy is ignored: the shipped one stands)."""
        from leakcheck import advisories

        if configured:
            return advisories.load(configured)
        shipped = advisories.load(self._shipped)
        cached = Path(state_dir) / CACHED_TABLE
        if not cached.is_file():
            return shipped
        try:
            fetched = advisories.load(cached)
        except advisories.AdvisoryError:
            return shipped
        return fetched if fetched.date > shipped.date else shipped

    def facts(self, state: "NetState") -> ClientFacts:
        with self._lock:
            if self._facts is None:
                self._facts = self._reader(state)
            return self._facts


def _unsupported(state: "NetState") -> ClientFacts:
    return ClientFacts(notes=(f"VPN client configuration is not read on {sys.platform} yet",))


def live() -> Clients:
    """This platform's reader (chosen once, like the platform backend)."""
    if sys.platform.startswith("linux"):
        from leakcheck.platform.vpnclients import read_linux
        return Clients(read_linux)
    return Clients(_unsupported)


def recorded(facts: ClientFacts, shipped_table: str | None = None) -> Clients:
    """A service answering with fixed facts (tests, recorded machines)."""
    return Clients(lambda state: facts, shipped_table)


__all__ = ["Clients", "ClientFacts", "TunnelConfig", "Algorithms", "KeyStore", "InstalledPackage", "Distribution",
           "live", "recorded", "PROTOCOLS", "AUTH_CLASSES"]
