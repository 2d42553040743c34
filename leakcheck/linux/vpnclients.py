"""Linux: VPN client facts for the posture probes, read once per run.

- **strongSwan**: each charon process (by name, or the holder of a
  kernel-libipsec tun device) is asked over its vici socket (found as
  leakcheck/linux/tunowners.py finds it; the default /run/charon.vici as a
  fallback) for `list-conns` (connections, local authentication rounds:
  `class` public key / pre-shared key / EAP / XAuth, certificates) and
  `list-sas` (the negotiated IKE and CHILD SA algorithms). Read-only.
- **OpenVPN**: each `openvpn` process; its options from its command line
  and its config file (`--config FILE` or the single-argument form,
  relative to its working directory): authentication (`cert`/`key`,
  `pkcs12`, `pkcs11-id`, `auth-user-pass`, `secret`), `data-ciphers`,
  `cipher`, `auth`, `tls-version-min`, `tls-cipher`; the negotiated data
  and control channel ciphers from its log file (`--log`/`--log-append`)
  when it writes one ("Data Channel: cipher ...", "Control Channel: TLSv1.3,
  cipher ..."). A journal/syslog-only client has configured ciphers only.
- **openconnect**: each `openconnect` process's command line (protocol,
  `--certificate`/`--sslkey`, else a password).
- **WireGuard**: each interface of the network state; the key file
  /etc/wireguard/NAME.conf when wg-quick set it up.
- **NetworkManager**: VPN and WireGuard keyfiles in
  /etc/NetworkManager/system-connections and /run/NetworkManager/
  system-connections (`[vpn] service-type` and its data); root-only files.
- **Packages**: /var/lib/dpkg/status (only the VPN clients' paragraphs),
  `rpm -q` where an rpm database exists, else `openvpn --version`.
- **Distribution**: /etc/os-release.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from leakcheck.netstate import NetState
from leakcheck.vpnclients import Algorithms, ClientFacts, Distribution, InstalledPackage, KeyStore, TunnelConfig

PROC = Path("/proc")
DPKG_STATUS = Path("/var/lib/dpkg/status")
OS_RELEASE = Path("/etc/os-release")
RPM_DB = (Path("/var/lib/rpm"), Path("/usr/lib/sysimage/rpm"))
NM_DIRS = (Path("/etc/NetworkManager/system-connections"), Path("/run/NetworkManager/system-connections"))
WG_DIR = Path("/etc/wireguard")
DEFAULT_VICI = (Path("/run/charon.vici"), Path("/var/run/charon.vici"))
CHARON_NAMES = ("charon", "charon-systemd", "charon-nm")
# Source packages of VPN clients (dpkg Source:, rpm name): what posture-updates compares.
VPN_SOURCES = ("openvpn", "strongswan", "libreswan", "wireguard", "wireguard-tools", "wireguard-go", "openconnect",
               "network-manager-openvpn", "network-manager-strongswan", "network-manager-openconnect",
               "NetworkManager-openvpn", "NetworkManager-strongswan", "NetworkManager-openconnect")
CONFIG_BYTES = 256 * 1024
LOG_TAIL_BYTES = 64 * 1024
DATA_CHANNEL = re.compile(r"Data Channel: [Cc]ipher '([^']+)'(?:, auth '([^']+)')?")
CONTROL_CHANNEL = re.compile(r"Control Channel: (TLSv[\d.]+), cipher (?:TLSv[\d.]+ )?(\S+)")
OPENVPN_DEFAULT_DATA_CIPHERS = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305"  # 2.6's default
INLINE_BLOCK = re.compile(r"^<([a-z0-9-]+)>\s*$(.*?)^</\1>\s*$", re.M | re.S)


def read(state: NetState, root: Path = PROC) -> ClientFacts:
    started = time.monotonic()
    notes: list[str] = []
    processes = list(state.activity.processes) if state.activity else []
    owners = {o.pid: o.ifname for o in state.tunnel_owners}
    tunnels: list[TunnelConfig] = []
    tunnels += _strongswan(processes, owners, notes, root)
    tunnels += _openvpn(processes, owners, notes, root)
    tunnels += _openconnect(processes, owners, root)
    tunnels += _wireguard(state, {t.interface for t in tunnels if t.interface})
    if not any(t.protocol == "ipsec" and t.active and t.algorithms for t in tunnels):
        tunnels += xfrm_tunnels(state.xfrm_states)  # IPsec with no vici to ask (charon-nm, libreswan)
    tunnels += _networkmanager(notes)
    packages = read_packages(notes)
    return ClientFacts(tunnels=tuple(tunnels), packages=tuple(packages), distribution=read_distribution(),
                       notes=tuple(notes), read_ms=(time.monotonic() - started) * 1000)


# ---------------------------------------------------------------- strongSwan over vici

def _strongswan(processes: Sequence[Any], owners: dict[int, str], notes: list[str], root: Path) -> list[TunnelConfig]:
    from leakcheck.linux import tunowners, vici

    pids = [p.pid for p in processes if p.name in CHARON_NAMES]
    pids += [pid for pid in owners if pid not in pids and tunowners._comm(pid, root) in CHARON_NAMES]
    sockets: list[tuple[Path, int | None]] = []
    for pid in pids:
        holding = tunowners.read_holding(pid, root)
        path = vici.control_socket(pid, holding.inodes, root) if holding else None
        if path is not None:
            sockets.append((path, pid))
    if not sockets:
        sockets = [(p, None) for p in DEFAULT_VICI if p.exists()][:1]
    out: list[TunnelConfig] = []
    for path, pid in sockets:
        try:
            conns = vici.list_conns(path)
            sas = vici.list_sas(path)
        except vici.ViciError as exc:
            notes.append(f"strongSwan: vici socket {path} did not answer ({exc})")
            continue
        out += strongswan_tunnels(conns, sas, f"vici {path}", pid, owners.get(pid) if pid else None)
    return out


def strongswan_tunnels(conns: Iterable[dict[str, Any]], sas: Iterable[dict[str, Any]], source: str,
                       pid: int | None = None, interface: str | None = None) -> list[TunnelConfig]:
    """One TunnelConfig per loaded connection (list-conn events), with the
    algorithms of its established IKE SA and CHILD SAs (list-sa events)."""
    by_name: dict[str, dict[str, Any]] = {}
    for event in sas:
        for name, sa in event.items():
            if isinstance(sa, dict):
                by_name[name] = sa
    out = []
    for event in conns:
        for name, conn in event.items():
            if not isinstance(conn, dict):
                continue
            auth, detail = _vici_auth(conn)
            sa = by_name.get(name)
            algorithms = _vici_algorithms(sa) if sa else ()
            active = bool(sa) and str(sa.get("state", "")).upper() == "ESTABLISHED"
            out.append(TunnelConfig(
                client="strongswan", name=name, protocol="ipsec", source=source, interface=interface, active=active,
                auth=tuple(dict.fromkeys(auth)), auth_detail=tuple(detail),
                keys=(KeyStore("unknown", "charon does not say where a loaded private key lives "
                                          "(swanctl private/ file or a PKCS#11 token)"),) if "certificate" in auth
                or "public-key" in auth else (),
                algorithms=algorithms, pid=pid,
                notes=() if sa else ("no IKE SA: configured, not connected",)))
    return out


VICI_CLASSES = {"public key": "public-key", "pre-shared key": "psk", "eap": "eap", "xauth": "password", "any": "eap"}


def _vici_auth(conn: dict[str, Any]) -> tuple[list[str], list[str]]:
    auth, detail = [], []
    for key in sorted(k for k in conn if k.startswith("local")):
        round_ = conn[key]
        if not isinstance(round_, dict):
            continue
        klass = str(round_.get("class", "")).lower()
        kind = VICI_CLASSES.get(klass, "eap" if klass.startswith("eap") else klass or "unknown")
        certs = round_.get("certs") or []
        if kind == "public-key" and certs:
            kind = "certificate"
        if kind == "eap" and str(round_.get("eap-type", "")).upper() == "TLS":
            kind = "certificate"
        auth.append(kind)
        words = f"{key}: {round_.get('class', '?')}"
        if round_.get("eap-type"):
            words += f" ({round_['eap-type']})"
        if round_.get("id"):
            words += f", id {round_['id']}"
        if certs:
            words += f", certificate {', '.join(certs)}"
        detail.append(words)
    return auth, detail


def _vici_algorithms(sa: dict[str, Any]) -> tuple[Algorithms, ...]:
    keys = ("version", "encr-alg", "encr-keysize", "integ-alg", "prf-alg", "dh-group")
    out = [Algorithms("ike", "negotiated", {k: str(sa[k]) for k in keys if k in sa}, "vici list-sas")]
    children = sa.get("child-sas") or {}
    for child in children.values() if isinstance(children, dict) else ():
        if isinstance(child, dict):
            items = {k: str(child[k]) for k in ("protocol", "encr-alg", "encr-keysize", "integ-alg", "dh-group",
                                                 "name") if k in child}
            out.append(Algorithms("esp", "negotiated", items, "vici list-sas"))
    return tuple(out)


# ---------------------------------------------------------------- kernel IPsec SAs (xfrm states)

# Kernel transform names -> strongSwan's (vici) names, so one grading serves both.
XFRM_ENCRYPTION = {"cbc(aes)": "AES_CBC", "cbc(des3_ede)": "3DES_CBC", "cbc(des)": "DES_CBC",
                   "cbc(blowfish)": "BLOWFISH_CBC", "cbc(cast5)": "CAST_CBC", "ecb(cipher_null)": "NULL",
                   "rfc3686(ctr(aes))": "AES_CTR", "cbc(camellia)": "CAMELLIA_CBC"}
XFRM_AEAD = {"rfc4106(gcm(aes))": "AES_GCM", "rfc4309(ccm(aes))": "AES_CCM",
             "rfc7539esp(chacha20,poly1305)": "CHACHA20_POLY1305"}
XFRM_INTEGRITY = {"hmac(md5)": "HMAC_MD5_96", "hmac(sha1)": "HMAC_SHA1_96", "hmac(sha256)": "HMAC_SHA2_256_128",
                  "hmac(sha384)": "HMAC_SHA2_384_192", "hmac(sha512)": "HMAC_SHA2_512_256",
                  "xcbc(aes)": "AES_XCBC_96", "digest_null": "NULL"}


def xfrm_algorithms(algorithms: Iterable[tuple[str, str, int]]) -> dict[str, str]:
    """vici-style items of one SA from its kernel transforms."""
    items: dict[str, str] = {"protocol": "ESP"}
    for kind, name, bits in algorithms:
        if kind == "aead":
            base = XFRM_AEAD.get(name, name)
            items["encr-alg"] = f"{base}_{bits // 8}" if base in ("AES_GCM", "AES_CCM") and bits else base
        elif kind == "enc":
            items["encr-alg"] = XFRM_ENCRYPTION.get(name, name)
            if bits:
                items["encr-keysize"] = str(bits)
        elif kind in ("auth", "auth-trunc"):
            items["integ-alg"] = XFRM_INTEGRITY.get(name, name)
    return items


def xfrm_tunnels(states: Iterable[Any]) -> list[TunnelConfig]:
    """One TunnelConfig per pair of peers with ESP states that carry algorithms."""
    peers: dict[frozenset[str], list[Any]] = {}
    for sa in states:
        if sa.proto == "esp" and sa.algorithms:
            peers.setdefault(frozenset((sa.src, sa.dst)), []).append(sa)
    out = []
    for pair, sas in peers.items():
        layers = tuple(Algorithms("esp", "negotiated", xfrm_algorithms(sa.algorithms),
                                  f"ip xfrm state (src {sa.src} dst {sa.dst} spi {sa.spi})") for sa in sas)
        out.append(TunnelConfig(
            client="kernel", name="IPsec SAs " + " <-> ".join(sorted(pair)), protocol="ipsec",
            source="ip xfrm state", auth=("unknown",),
            auth_detail=("the kernel's SAs do not say how IKE authenticated (no vici socket to ask)",),
            algorithms=layers, notes=("IKE SA algorithms not known: only the kernel's ESP SAs were read",)))
    return out


# ---------------------------------------------------------------- OpenVPN

def parse_openvpn_options(argv: Sequence[str], config_text: str = "") -> dict[str, list[str]]:
    """Option -> its arguments (the last occurrence wins, as in OpenVPN), from the
    config file then the command line; inline blocks (<key>...</key>) as "inline"."""
    options: dict[str, list[str]] = {}
    for match in INLINE_BLOCK.finditer(config_text):
        options[match.group(1)] = ["[[INLINE]]"]
    text = INLINE_BLOCK.sub("", config_text)
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        try:
            words = shlex.split(line, comments=False)
        except ValueError:
            words = line.split()
        if words:
            options[words[0].lstrip("-")] = words[1:]
    current: str | None = None
    for arg in argv[1:]:
        if arg.startswith("--"):
            current = arg[2:]
            options[current] = []
        elif current is not None:
            options[current].append(arg)
    return options


def openvpn_tunnel(options: dict[str, list[str]], source: str, log_text: str = "", pid: int | None = None,
                   interface: str | None = None, name: str = "openvpn", config_read: bool = True) -> TunnelConfig:
    """A running client's facts. `config_read` False: its config file could not be
    read (the agent without root), so nothing is said about what it allows."""
    auth, detail, keys = [], [], []
    if "secret" in options or "tls-secret" in options:
        auth.append("psk")
        detail.append("static key (--secret): a pre-shared key, no TLS")
        keys.append(_key_store(options.get("secret", ["?"])[0]))
    if "pkcs11-id" in options or "pkcs11-providers" in options:
        auth.append("certificate")
        detail.append(f"certificate on a PKCS#11 token (pkcs11-id {' '.join(options.get('pkcs11-id', ['?']))})")
        keys.append(KeyStore("hardware", "pkcs11-id " + " ".join(options.get("pkcs11-id", ["?"]))))
    elif "management-external-key" in options or "cryptoapicert" in options:
        auth.append("certificate")
        detail.append("certificate with an external key (management-external-key / cryptoapicert)")
        keys.append(KeyStore("hardware", "external key (management interface or system store)"))
    elif "pkcs12" in options or ("cert" in options and "key" in options):
        auth.append("certificate")
        where = options.get("pkcs12", options.get("key", ["?"]))[0]
        detail.append(f"certificate ({'pkcs12 ' if 'pkcs12' in options else 'key '}{where})")
        keys.append(_key_store(where))
    if "auth-user-pass" in options:
        auth.append("password")
        detail.append("username and password (auth-user-pass)")
    algorithms = [_openvpn_configured(options, source)] if config_read else []
    negotiated = _openvpn_negotiated(log_text) or _static_key_cipher(options, source)
    algorithms += negotiated
    notes = [] if negotiated else ["negotiated ciphers not known: the client writes no log file leakcheck can "
                                   "read (--log)"]
    if not config_read:
        notes.append(f"config file {source} not readable (root only): authentication and allowed ciphers unknown")
    return TunnelConfig(client="openvpn", name=name, protocol="openvpn", source=source, interface=interface,
                        active=True, auth=tuple(dict.fromkeys(auth)) or ("unknown",), auth_detail=tuple(detail),
                        keys=tuple(keys), algorithms=tuple(algorithms), pid=pid, notes=tuple(notes))


def _key_store(where: str) -> KeyStore:
    if where == "[[INLINE]]":
        return KeyStore("inline", "inside the configuration file")
    if where.startswith("pkcs11:") or where.startswith("tpm") or "/dev/tpm" in where:
        return KeyStore("hardware", where)
    return KeyStore("file", where)


def _openvpn_configured(options: dict[str, list[str]], source: str) -> Algorithms:
    items = {"data-ciphers": (options.get("data-ciphers") or options.get("ncp-ciphers")
                              or [OPENVPN_DEFAULT_DATA_CIPHERS + " (default)"])[0]}
    for key in ("cipher", "auth", "tls-version-min", "tls-cipher", "tls-ciphersuites", "data-ciphers-fallback"):
        if options.get(key):
            items[key] = options[key][0]
    return Algorithms("data-channel", "configured", items, source)


def _static_key_cipher(options: dict[str, list[str]], source: str) -> list[Algorithms]:
    """Static-key mode (--secret) negotiates nothing: --cipher and --auth are what is in
    use (OpenVPN's defaults BF-CBC and SHA1 when absent)."""
    if "secret" not in options:
        return []
    items = {"cipher": (options.get("cipher") or ["BF-CBC"])[0], "auth": (options.get("auth") or ["SHA1"])[0]}
    return [Algorithms("data-channel", "negotiated", items, f"{source}: static-key mode uses --cipher/--auth")]


def _openvpn_negotiated(log_text: str) -> list[Algorithms]:
    out = []
    data = list(DATA_CHANNEL.finditer(log_text))
    if data:
        last = data[-1]
        items = {"cipher": last.group(1)}
        if last.group(2):
            items["auth"] = last.group(2)
        out.append(Algorithms("data-channel", "negotiated", items, "log: " + last.group(0)))
    control = list(CONTROL_CHANNEL.finditer(log_text))
    if control:
        last = control[-1]
        out.append(Algorithms("tls", "negotiated", {"version": last.group(1), "cipher": last.group(2).rstrip(",")},
                              "log: " + last.group(0)))
    return out


def _openvpn(processes: Sequence[Any], owners: dict[int, str], notes: list[str], root: Path) -> list[TunnelConfig]:
    from leakcheck.linux import tunowners

    pids = [p.pid for p in processes if p.name == "openvpn"]
    pids += [pid for pid in owners if pid not in pids and tunowners._comm(pid, root) == "openvpn"]
    out = []
    for pid in pids:
        argv = tunowners._argv(pid, root)
        config = tunowners.config_path(argv)
        text = tunowners._config_text(pid, argv, root)
        if config and not text:
            notes.append(f"openvpn (pid {pid}): config file {config} not readable")
        options = parse_openvpn_options(argv, text)
        log_path = (options.get("log") or options.get("log-append") or [None])[0]
        log_text = _tail(_in_proc_root(pid, log_path, root)) if log_path else ""
        out.append(openvpn_tunnel(options, config or "command line", log_text, pid, owners.get(pid),
                                  name=Path(config).stem if config else f"openvpn-{pid}",
                                  config_read=bool(text) or not config))
    return out


def _in_proc_root(pid: int, path: str, root: Path) -> Path:
    base = root / str(pid)
    return base / "root" / path.lstrip("/") if path.startswith("/") else base / "cwd" / path


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- openconnect

def openconnect_tunnel(argv: Sequence[str], pid: int | None = None, interface: str | None = None) -> TunnelConfig:
    def value(*names: str) -> str | None:
        for i, arg in enumerate(argv):
            for name in names:
                if arg == name and i + 1 < len(argv):
                    return argv[i + 1]
                if name.startswith("--") and arg.startswith(name + "="):
                    return arg.split("=", 1)[1]
        return None

    protocol = value("--protocol") or "anyconnect"
    cert, key = value("--certificate", "-c"), value("--sslkey", "-k")
    if cert:
        auth, detail = ["certificate"], [f"client certificate {cert}"]
        keys = (_key_store(key or cert),)
    else:
        auth, detail, keys = ["password"], ["username and password (no --certificate)"], ()
    return TunnelConfig(client="openconnect", name=f"openconnect ({protocol})", protocol="tls",
                        source="command line", interface=interface, auth=tuple(auth), auth_detail=tuple(detail),
                        keys=keys, pid=pid,
                        notes=("openconnect does not report its negotiated TLS/DTLS ciphers to leakcheck",))


def _openconnect(processes: Sequence[Any], owners: dict[int, str], root: Path) -> list[TunnelConfig]:
    from leakcheck.linux import tunowners

    pids = [p.pid for p in processes if p.name == "openconnect"]
    pids += [pid for pid in owners if pid not in pids and tunowners._comm(pid, root) == "openconnect"]
    return [openconnect_tunnel(tunowners._argv(pid, root), pid, owners.get(pid)) for pid in pids]


# ---------------------------------------------------------------- WireGuard

def _wireguard(state: NetState, seen: set[str]) -> list[TunnelConfig]:
    out = []
    for wg in state.wireguard:
        if wg.ifname in seen:
            continue
        conf = WG_DIR / f"{wg.ifname}.conf"
        keys = (KeyStore("file", str(conf)),) if conf.exists() else (KeyStore("unknown", "not a wg-quick file"),)
        out.append(TunnelConfig(
            client="wireguard", name=wg.ifname, protocol="wireguard", source="wireguard interface",
            interface=wg.ifname, auth=("public-key",),
            auth_detail=("static Curve25519 key pair per peer (no certificate, no revocation)",), keys=keys,
            algorithms=(Algorithms("data-channel", "negotiated",
                                   {"suite": "Noise_IKpsk2 (Curve25519, ChaCha20-Poly1305, BLAKE2s)"},
                                   "WireGuard's fixed suite"),)))
    return out


# ---------------------------------------------------------------- NetworkManager keyfiles

NM_SERVICES = {"openvpn": "openvpn", "strongswan": "ipsec", "libreswan": "ipsec", "l2tp": "ipsec",
               "openconnect": "tls", "fortisslvpn": "tls", "sstp": "tls", "vpnc": "ipsec", "wireguard": "wireguard"}


def networkmanager_profile(text: str, path: str) -> TunnelConfig | None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    kind = parser.get("connection", "type", fallback="")
    name = parser.get("connection", "id", fallback=Path(path).stem)
    if kind == "wireguard":
        return TunnelConfig(client="networkmanager", name=name, protocol="wireguard", source=path, active=False,
                            auth=("public-key",), auth_detail=("WireGuard key pair in the profile",),
                            keys=(KeyStore("inline", path),))
    if kind != "vpn" or not parser.has_section("vpn"):
        return None
    vpn = dict(parser.items("vpn"))
    service = vpn.get("service-type", "").rsplit(".", 1)[-1]
    protocol = NM_SERVICES.get(service, "tls")
    auth, keys = _nm_auth(service, vpn, path)
    return TunnelConfig(client="networkmanager", name=name, protocol=protocol, source=path, active=False,
                        auth=tuple(auth) or ("unknown",), auth_detail=(f"vpn.data of {service or '?'}: " + ", ".join(
                            f"{k}={v}" for k, v in sorted(vpn.items()) if k in NM_AUTH_KEYS),), keys=tuple(keys))


NM_AUTH_KEYS = ("connection-type", "method", "key", "cert", "usercert", "userkey", "pkcs12", "protocol",
                "certificate", "user", "ipsec-psk", "psk", "leftcert", "leftrsasigkey")


def _nm_auth(service: str, vpn: dict[str, str], path: str) -> tuple[list[str], list[KeyStore]]:
    auth: list[str] = []
    keys: list[KeyStore] = []
    if service == "openvpn":
        kind = vpn.get("connection-type", "tls")
        auth = {"tls": ["certificate"], "password": ["password"], "password-tls": ["certificate", "password"],
                "static-key": ["psk"]}.get(kind, [kind])
        if vpn.get("key"):
            keys.append(_key_store(vpn["key"]))
    elif service == "strongswan":
        method = vpn.get("method", "")
        auth = {"key": ["certificate"], "agent": ["certificate"], "smartcard": ["certificate"], "eap": ["eap"],
                "psk": ["psk"], "cert": ["certificate"]}.get(method, [method or "unknown"])
        if method == "smartcard":
            keys.append(KeyStore("hardware", "smart card"))
        elif vpn.get("userkey"):
            keys.append(_key_store(vpn["userkey"]))
    elif service == "openconnect":
        auth = ["certificate"] if vpn.get("usercert") else ["password"]
        if vpn.get("userkey"):
            keys.append(_key_store(vpn["userkey"]))
    elif "psk" in vpn or "ipsec-psk" in vpn:
        auth = ["psk"]
    else:
        auth = ["password"] if vpn.get("user") else []
    return auth, keys


def _networkmanager(notes: list[str]) -> list[TunnelConfig]:
    out = []
    for directory in NM_DIRS:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = directory / name
            try:
                text = path.read_text(errors="replace")
            except PermissionError:
                notes.append(f"NetworkManager: {path} not readable (root only)")
                continue
            except OSError:
                continue
            profile = networkmanager_profile(text, str(path))
            if profile is not None:
                out.append(profile)
    return out


# ---------------------------------------------------------------- packages and distribution

def parse_dpkg_status(text: str, sources: Sequence[str] = VPN_SOURCES) -> list[InstalledPackage]:
    """Installed packages whose name or source package is one of `sources`."""
    wanted = set(sources)
    out = []
    for paragraph in text.split("\n\n"):
        fields = {}
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            if key in ("Package", "Status", "Source", "Version"):
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name or not fields.get("Status", "").endswith(" installed") or "Version" not in fields:
            continue
        source = fields.get("Source", name).split(" ")[0]
        if name in wanted or source in wanted:
            out.append(InstalledPackage(name=name, version=fields["Version"], source=source, manager="dpkg",
                                        where=str(DPKG_STATUS)))
    return out


def _dpkg(notes: list[str], path: Path = DPKG_STATUS) -> list[InstalledPackage]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        notes.append(f"packages: {path} not readable ({exc})")
        return []
    # Only the VPN clients' paragraphs are parsed: the file holds thousands.
    names = "|".join(re.escape(s) for s in VPN_SOURCES)
    wanted = re.compile(rf"^(?:Package|Source): (?:{names})\b", re.M)
    chunks = []
    for match in wanted.finditer(text):
        start = text.rfind("\n\n", 0, match.start()) + 2 if text.rfind("\n\n", 0, match.start()) >= 0 else 0
        end = text.find("\n\n", match.end())
        chunks.append(text[start:end if end >= 0 else len(text)])
    return parse_dpkg_status("\n\n".join(dict.fromkeys(chunks)))


def _rpm(notes: list[str]) -> list[InstalledPackage]:
    if not any(p.exists() for p in RPM_DB) or not shutil.which("rpm"):
        return []
    try:
        done = subprocess.run(["rpm", "-q", "--qf", "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{SOURCERPM}\\n",
                               *VPN_SOURCES], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"packages: rpm -q failed ({exc})")
        return []
    out = []
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and "not installed" not in line:
            source = re.sub(r"-[^-]+-[^-]+\.src\.rpm$", "", words[2])
            out.append(InstalledPackage(words[0], words[1].removeprefix("0:"), source, "rpm", "rpm -q"))
    return out


def _binary(notes: list[str]) -> list[InstalledPackage]:
    path = shutil.which("openvpn", path="/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin:/sbin")
    if not path:
        return []
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        return []
    match = re.match(r"OpenVPN (\d[\w.]*)", done.stdout)
    return [InstalledPackage("openvpn", match.group(1), "openvpn", "binary", path)] if match else []


def read_packages(notes: list[str]) -> list[InstalledPackage]:
    packages = _dpkg(notes) + _rpm(notes)
    if not any(p.source == "openvpn" for p in packages):
        packages += _binary(notes)
    return packages


def parse_os_release(text: str) -> Distribution | None:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    if not values.get("ID"):
        return None
    return Distribution(id=values["ID"], codename=values.get("VERSION_CODENAME", ""),
                        version_id=values.get("VERSION_ID", ""))


def read_distribution(path: Path = OS_RELEASE) -> Distribution | None:
    try:
        return parse_os_release(path.read_text())
    except OSError:
        return None


__all__ = ["read", "strongswan_tunnels", "parse_openvpn_options", "openvpn_tunnel", "openconnect_tunnel",
           "networkmanager_profile", "parse_dpkg_status", "parse_os_release", "read_packages"]
