"""Posture facts: how the VPN is set up to start, stop and let captive portals in.

The posture probes (probes/posture_*.py) ask questions about configuration,
not packets: is the VPN started at boot, can a user switch it off, is the
firewall loaded before the network, is there a captive-portal helper. The
answers are files: NetworkManager keyfiles and configuration, systemd unit
files and the `*.wants` symlinks that enable them, strongSwan's swanctl.conf
/ ipsec.conf, OpenVPN configs, polkit rules. They are read here once per run
(no commands: a keyfile read is microseconds, `nmcli` is tens of
milliseconds) into one `PostureFacts`, which the probes get from their
context. `root` lets tests and containers point the reader at another tree.

What a reader cannot see is recorded in `limits` with the reason, so a probe
says "unknown, because ..." instead of guessing.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NM_PROFILE_DIRS = ("etc/NetworkManager/system-connections", "run/NetworkManager/system-connections")
NM_CONF = ("usr/lib/NetworkManager/conf.d", "etc/NetworkManager/NetworkManager.conf",
           "etc/NetworkManager/conf.d", "run/NetworkManager/conf.d")
UNIT_DIRS = ("etc/systemd/system", "run/systemd/system", "usr/lib/systemd/system", "lib/systemd/system")
# units that start a VPN client by themselves (templates end in @)
VPN_UNITS = ("wg-quick@", "openvpn-client@", "openvpn@", "openvpn.service", "strongswan.service",
             "strongswan-starter.service", "strongswan-swanctl.service", "ipsec.service")
# units that load a ruleset at boot: a kill switch in them is there before the network
FIREWALL_UNITS = ("nftables.service", "netfilter-persistent.service", "iptables.service", "ip6tables.service",
                  "firewalld.service", "ufw.service")
PORTAL_HELPERS = ("usr/libexec/gnome-shell-portal-helper", "usr/lib/gnome-shell/gnome-shell-portal-helper",
                  "usr/bin/captive-browser")
SWANCTL = ("etc/swanctl/swanctl.conf", "etc/swanctl/conf.d", "etc/strongswan/swanctl/swanctl.conf",
           "etc/strongswan/swanctl/conf.d")
IPSEC_CONF = ("etc/ipsec.conf", "etc/strongswan/ipsec.conf")
OPENVPN_DIRS = ("etc/openvpn", "etc/openvpn/client", "etc/openvpn/server")
POLKIT_RULES = ("etc/polkit-1/rules.d", "usr/share/polkit-1/rules.d")
NM_POLICY = "usr/share/polkit-1/actions/org.freedesktop.NetworkManager.policy"
NETWORK_CONTROL = "org.freedesktop.NetworkManager.network-control"
# a rule that may decide network-control: names it, or matches NetworkManager's actions by prefix
NM_RULE = re.compile(r"network-control|(indexOf|startsWith|match)\s*\(\s*[\"'/^]*org\.freedesktop\.NetworkManager")
NFTABLES_CONF = "etc/nftables.conf"  # what nftables.service loads (Debian, Fedora: /etc/sysconfig/nftables.conf)
NFT_TABLE = re.compile(r"^\s*(?:add\s+|create\s+)?table\s+(ip|ip6|inet|arp|bridge|netdev)\s+([\w.-]+)", re.M)
NFT_INCLUDE = re.compile(r'^\s*include\s+"([^"]+)"', re.M)
MAX_FILE = 256 * 1024  # configuration files, not data: anything bigger is not read


@dataclass(frozen=True)
class NmProfile:
    """One NetworkManager connection profile (a keyfile)."""

    id: str
    uuid: str
    type: str  # vpn, wireguard, 802-11-wireless (wifi), 802-3-ethernet (ethernet)...
    path: str
    autoconnect: bool  # keyfile default: true
    secondaries: tuple[str, ...] = ()  # UUIDs (or ids) started with this profile
    permissions: str = ""  # "user:alice;" - empty: every user may use and disconnect it
    service_type: str | None = None  # [vpn] service-type of a vpn profile

    @property
    def is_vpn(self) -> bool:
        return self.type in ("vpn", "wireguard")

    @property
    def is_uplink(self) -> bool:
        return self.type in ("802-11-wireless", "wifi", "802-3-ethernet", "ethernet")

    def evidence(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "uuid": self.uuid, "type": self.type, "file": self.path,
                                  "autoconnect": self.autoconnect}
        if self.secondaries:
            out["secondaries"] = list(self.secondaries)
        if self.service_type:
            out["service_type"] = self.service_type
        out["permissions"] = self.permissions or "(none: every user)"
        return out


@dataclass(frozen=True)
class Unit:
    """A systemd unit file as far as ordering and enablement go."""

    name: str  # instance name for templates: wg-quick@wg0.service
    path: str | None
    enabled_by: tuple[str, ...] = ()  # the *.wants symlinks that enable it
    before: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    refuse_manual_stop: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.enabled_by)


@dataclass(frozen=True)
class Setting:
    """One line of a VPN client's configuration that decides a posture question."""

    file: str
    line: int
    text: str


@dataclass
class PostureFacts:
    root: str = ""  # the tree read ("/"); empty: nothing was read (no reader on this platform)
    nm_present: bool = False
    nm_profiles: list[NmProfile] = field(default_factory=list)
    nm_connectivity: dict[str, str] = field(default_factory=dict)  # [connectivity] keys, merged
    nm_connectivity_source: str | None = None  # the file whose [connectivity] section counts
    networkd_enabled: bool = False
    portal_helpers: list[str] = field(default_factory=list)
    vpn_units: list[Unit] = field(default_factory=list)  # enabled or not, whatever the tree holds
    firewall_units: list[Unit] = field(default_factory=list)
    strongswan_auto: list[Setting] = field(default_factory=list)  # start_action / auto lines
    openvpn: dict[str, list[Setting]] = field(default_factory=dict)  # config file -> relevant lines
    polkit_nm_rules: list[str] = field(default_factory=list)  # polkit rule files that may decide network-control
    # the shipped defaults of network-control (allow_any / allow_inactive / allow_active, and "file")
    nm_network_control: dict[str, str] = field(default_factory=dict)
    # nftables tables the boot ruleset declares ("inet name"), with includes; None: no such file
    nft_boot_tables: set[str] | None = None
    nft_boot_files: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)


def _read(path: Path, limits: list[str]) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE:
            limits.append(f"{path}: larger than {MAX_FILE} bytes, not read")
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except PermissionError as exc:
        limits.append(f"{path}: {exc.strerror} (run as root to read it)")
    except OSError:
        pass  # vanished between listing and reading: nothing to say about it
    return None


def _files(root: Path, rel: str, suffix: str = "") -> list[Path]:
    """`rel` itself if it is a file, else the files directly in it (sorted, as systemd and NM do)."""
    path = root / rel
    if path.is_file():
        return [path]
    try:
        return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffix))
    except OSError:
        return []


def _ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",),
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def _truth(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    return text.strip().lower() in ("true", "yes", "1", "on")


# -- NetworkManager -----------------------------------------------------------------------

def read_nm(root: Path, facts: PostureFacts) -> None:
    facts.nm_present = any((root / p).exists() for p in ("usr/sbin/NetworkManager", "etc/NetworkManager"))
    for rel in NM_PROFILE_DIRS:
        directory = root / rel
        if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            facts.limits.append(f"{directory}: not readable (NetworkManager profiles; run as root)")
            continue
        for path in _files(root, rel, ".nmconnection"):
            profile = _nm_profile(path, facts.limits)
            if profile is not None:
                facts.nm_profiles.append(profile)
    for rel in NM_CONF:  # later files override earlier ones, key by key (NetworkManager.conf(5))
        for path in _files(root, rel, ".conf"):
            text = _read(path, facts.limits)
            if text is None:
                continue
            try:
                parser = _ini(text)
            except configparser.Error as exc:
                facts.limits.append(f"{path}: not parsed ({exc.__class__.__name__})")
                continue
            if parser.has_section("connectivity"):
                facts.nm_connectivity.update(parser.items("connectivity"))
                facts.nm_connectivity_source = str(path)


def _nm_profile(path: Path, limits: list[str]) -> NmProfile | None:
    text = _read(path, limits)
    if text is None:
        return None
    try:
        parser = _ini(text)
    except configparser.Error as exc:
        limits.append(f"{path}: not parsed ({exc.__class__.__name__})")
        return None
    conn = dict(parser.items("connection")) if parser.has_section("connection") else {}
    vpn = dict(parser.items("vpn")) if parser.has_section("vpn") else {}
    secondaries = tuple(s for s in re.split(r"[;,]", conn.get("secondaries", "")) if s.strip())
    return NmProfile(id=conn.get("id", path.stem), uuid=conn.get("uuid", ""), type=conn.get("type", ""),
                     path=str(path), autoconnect=_truth(conn.get("autoconnect"), True),
                     secondaries=tuple(s.strip() for s in secondaries),
                     permissions=conn.get("permissions", "").strip(), service_type=vpn.get("service-type"))


# -- systemd ------------------------------------------------------------------------------

def _wants_links(root: Path) -> dict[str, list[str]]:
    """unit name -> the *.wants / *.requires symlinks that enable it."""
    out: dict[str, list[str]] = {}
    for rel in ("etc/systemd/system",):
        base = root / rel
        try:
            dirs = [d for d in base.iterdir() if d.is_dir() and d.name.endswith((".wants", ".requires"))]
        except OSError:
            continue
        for directory in dirs:
            try:
                for link in directory.iterdir():
                    out.setdefault(link.name, []).append(str(link))
            except OSError:
                continue
    return out


def _unit_file(root: Path, name: str) -> Path | None:
    template = re.sub(r"@[^.]*\.", "@.", name)
    for rel in UNIT_DIRS:
        for candidate in (name, template):
            path = root / rel / candidate
            if path.is_file():
                return path
    return None


def _unit(root: Path, name: str, enabled_by: list[str], limits: list[str]) -> Unit:
    path = _unit_file(root, name)
    keys: dict[str, list[str]] = {"Before": [], "Wants": [], "After": [], "RefuseManualStop": []}
    files = [path] if path else []
    if path is not None:  # drop-ins change ordering too (nftables.service.d/*.conf)
        for rel in UNIT_DIRS:
            files += _files(root, f"{rel}/{name}.d", ".conf")
    for file in files:
        text = _read(file, limits) or ""
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in keys:
                keys[key.strip()] += value.split()
    return Unit(name=name, path=str(path) if path else None, enabled_by=tuple(enabled_by),
                before=tuple(keys["Before"]), wants=tuple(keys["Wants"]), after=tuple(keys["After"]),
                refuse_manual_stop=_truth(keys["RefuseManualStop"][-1] if keys["RefuseManualStop"] else None,
                                          False))


def read_units(root: Path, facts: PostureFacts) -> None:
    wants = _wants_links(root)
    names = set()
    for name in wants:
        if name.startswith(VPN_UNITS) or name in VPN_UNITS:
            names.add(name)
    for name in VPN_UNITS:
        if not name.endswith("@") and _unit_file(root, name):
            names.add(name)
    facts.vpn_units = [_unit(root, n, wants.get(n, []), facts.limits) for n in sorted(names)]
    facts.firewall_units = [_unit(root, n, wants.get(n, []), facts.limits) for n in FIREWALL_UNITS
                            if _unit_file(root, n) or n in wants]
    facts.networkd_enabled = "systemd-networkd.service" in wants


# -- VPN clients' own configuration --------------------------------------------------------

STRONGSWAN_AUTO = re.compile(r"^\s*(start_action\s*=\s*\S+|auto\s*=\s*\S+)", re.M)
OPENVPN_KEYS = re.compile(r"^\s*(persist-tun|persist-key|keepalive|ping-restart|ping-exit|ping)\b.*$", re.M)


def _matching_lines(path: Path, pattern: re.Pattern[str], limits: list[str]) -> list[Setting]:
    text = _read(path, limits)
    if text is None:
        return []
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if pattern.match(code):
            out.append(Setting(str(path), number, code.strip()))
    return out


def read_clients(root: Path, facts: PostureFacts) -> None:
    for rel in SWANCTL:
        for path in _files(root, rel, ".conf"):
            facts.strongswan_auto += _matching_lines(path, STRONGSWAN_AUTO, facts.limits)
    for rel in IPSEC_CONF:
        for path in _files(root, rel):
            facts.strongswan_auto += _matching_lines(path, STRONGSWAN_AUTO, facts.limits)
    for rel in OPENVPN_DIRS:
        for path in _files(root, rel, ".conf"):
            facts.openvpn[str(path)] = _matching_lines(path, OPENVPN_KEYS, facts.limits)
    for rel in POLKIT_RULES:
        for path in _files(root, rel, ".rules"):
            text = _read(path, facts.limits) or ""
            if NM_RULE.search(text):
                facts.polkit_nm_rules.append(str(path))
    facts.nm_network_control = _polkit_defaults(root / NM_POLICY, NETWORK_CONTROL, facts.limits)
    _nft_boot(root, facts)
    facts.portal_helpers = [str(root / p) for p in PORTAL_HELPERS if (root / p).exists()]


def _nft_boot(root: Path, facts: PostureFacts) -> None:
    """The tables of the ruleset nftables.service loads at boot, following its includes
    (globs too, as in `include "/etc/nftables.d/*.nft"`)."""
    main = root / NFTABLES_CONF
    if not main.is_file():
        return
    tables: set[str] = set()
    pending, seen = [main], set()
    while pending:
        path = pending.pop()
        if path in seen or len(seen) > 64:
            continue
        seen.add(path)
        text = _read(path, facts.limits) or ""
        tables.update(f"{family} {name}" for family, name in NFT_TABLE.findall(text))
        for pattern in NFT_INCLUDE.findall(text):
            rel = pattern.lstrip("/") if pattern.startswith("/") else str(path.parent.relative_to(root) / pattern)
            pending += sorted(root.glob(rel))
        facts.nft_boot_files.append(str(path))
    facts.nft_boot_tables = tables


def _polkit_defaults(path: Path, action: str, limits: list[str]) -> dict[str, str]:
    """The <defaults> of one action in a polkit policy file (found by text: the file is
    ~170 kB of translations, a full XML parse would cost more than the rest together)."""
    if not path.is_file():
        return {}
    text = _read(path, limits) or ""
    start = text.find(f'<action id="{action}"')
    if start < 0:
        return {}
    block = text[start:text.find("</action>", start)]
    out = dict(re.findall(r"<(allow_any|allow_inactive|allow_active)>\s*([\w_]+)\s*<", block))
    return {**out, "file": str(path)} if out else {}


def read(root: str | Path = "/") -> PostureFacts:
    """Everything the posture probes ask, read once from the tree at `root`."""
    base = Path(root)
    facts = PostureFacts(root=str(base))
    for reader in (read_nm, read_units, read_clients):
        try:
            reader(base, facts)
        except OSError as exc:  # one unreadable part leaves the others
            facts.limits.append(f"{reader.__name__}: {exc}")
    return facts
