"""The configuration file: one TOML file, every key optional.

The schema below is the single source of truth: it validates files, fills
defaults and documents every key. Unknown keys and bad values raise
ConfigError naming the key (the CLI turns that into exit status 2).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from leakcheck.errors import ConfigError

DEFAULT_PATH = Path("/etc/leakcheck/leakcheck.toml")

Validator = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Key:
    default: Any
    validate: Validator
    doc: str


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {type(value).__name__} {value!r}", key=key)
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", key=key)
    return value


def _string_list(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"expected a list of strings, got {value!r}", key=key)
    return list(value)


def _interface_globs(key: str, value: Any) -> list[str]:
    names = _string_list(key, value)
    for name in names:
        if not name or len(name) > 64 or re.search(r"[\s/]", name):
            raise ConfigError(f"{name!r} is not an interface name or glob", key=key)
    return names


def _prefixes(key: str, value: Any) -> list[str]:
    out = []
    for text in _string_list(key, value):
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(f"{text!r} is not an IP prefix (e.g. 192.0.2.0/24 or 2001:db8::/32)",
                              key=key) from None
    return out


def _addresses(version: int) -> Validator:
    def check(key: str, value: Any) -> list[str]:
        out = []
        for text in _string_list(key, value):
            try:
                addr = ipaddress.ip_address(text)
            except ValueError:
                raise ConfigError(f"{text!r} is not an IP address", key=key) from None
            if addr.version != version:
                raise ConfigError(f"{text!r} is not an IPv{version} address", key=key)
            out.append(str(addr))
        return out
    return check


DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """'15m' -> 900.0 seconds. Accepts ms, s, m, h."""
    match = DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(key: str, value: Any) -> str:
    text = _string(key, value)
    try:
        parse_duration(text)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None
    return text


def _duration_within(low_s: float, high_s: float) -> Validator:
    """A duration between two bounds (the reconnect probe's cut must stay short)."""
    def check(key: str, value: Any) -> str:
        text = _duration(key, value)
        if not low_s <= parse_duration(text) <= high_s:
            raise ConfigError(f"{text!r} must be between {low_s:g}s and {high_s:g}s", key=key)
        return text
    return check


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"expected a positive integer, got {value!r}", key=key)
    return value


def _int_within(low: int, high: int) -> Validator:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"expected an integer from {low} to {high}, got {value!r}", key=key)
        return value
    return check


def _url(key: str, value: Any) -> str:
    text = _string(key, value)
    if text and not re.match(r"^https?://[^\s/]+", text):
        raise ConfigError(f"{text!r} is not an http(s) URL", key=key)
    return text


def _dns_zone(key: str, value: Any) -> str:
    text = _string(key, value)
    if text and not re.match(r"^(?=.{1,200}$)([a-z0-9-]{1,63}\.)*[a-z0-9-]{1,63}\.?$", text, re.I):
        raise ConfigError(f"{text!r} is not a DNS zone name", key=key)
    return text.rstrip(".")


def _choices(allowed: tuple[str, ...]) -> Validator:
    def check(key: str, value: Any) -> list[str]:
        items = _string_list(key, value)
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise ConfigError(f"{', '.join(map(repr, unknown))} not one of {', '.join(allowed)}", key=key)
        return items
    return check


def _one_of(allowed: tuple[str, ...]) -> Validator:
    def check(key: str, value: Any) -> str:
        text = _string(key, value)
        if text not in allowed:
            raise ConfigError(f"{text!r} is not one of {', '.join(allowed)}", key=key)
        return text
    return check


# The posture policy's vocabularies (leakcheck/vpnclients.py, leakcheck/cryptoprofile.py).
POSTURE_PROTOCOLS = ("ipsec", "openvpn", "wireguard", "tls")
POSTURE_AUTH = ("certificate", "public-key", "psk", "password", "eap")
CRYPTO_PROFILES = ("ncsc-prime", "ncsc-foundation")

SCHEMA: dict[str, dict[str, Key]] = {
    "tunnel": {
        "interfaces": Key([], _interface_globs,
                          "Tunnel interface names or globs (e.g. \"wg*\"); empty = auto-detect."),
    },
    "policy": {
        "allowed_direct": Key([], _prefixes,
                              "Managed exceptions: prefixes allowed to leave outside the tunnel."),
        "allow_split": Key(False, _bool,
                           "true = split tunnelling is the organisation's policy; report it as info."),
    },
    "canaries": {
        "ipv4": Key(["1.1.1.1", "8.8.8.8", "9.9.9.9"], _addresses(4),
                    "IPv4 destinations used for route lookups and active checks."),
        "ipv6": Key(["2606:4700:4700::1111", "2001:4860:4860::8888"], _addresses(6),
                    "IPv6 destinations used for route lookups and active checks."),
        "dns_zone": Key("", _dns_zone, "Zone for unique-name DNS leak tests (optional)."),
        "active": Key(True, _bool, "Send test packets (small TTL) and capture where they leave; "
                                   "needs root. false = inference only."),
    },
    "agent": {
        "interval": Key("15m", _duration, "How often the agent runs all probes."),
        "jitter": Key("2m", _duration, "Random delay added to each scheduled run."),
        "on_network_change": Key(True, _bool, "Also run within seconds of a network change."),
        "disruptive": Key(False, _bool, "Allow the reconnect probe to cut the tunnel briefly."),
        "reconnect_cut": Key("10s", _duration_within(1, 120),
                             "How long the reconnect probe cuts the path to the VPN server (disruptive runs)."),
        "reconnect_bound": Key("60s", _duration_within(1, 300),
                               "The tunnel must pass traffic again this soon after a cut (or a recorded "
                               "outage), else reconnect.no-auto-reconnect."),
        "watch": Key(True, _bool, "Run the live leak watch: every real flow leaving outside the tunnel, "
                                  "with its process, reported to the collector within seconds. Runs only "
                                  "where the agent has CAP_NET_ADMIN; `leakcheck status` says why not."),
        "state_dir": Key("/var/lib/leakcheck", _string,
                         "Spool, upload state, tunnel history and instance id live here."),
        "spool_max_bytes": Key(64 * 1024 * 1024, _positive_int,
                               "Spool size bound; beyond it the oldest reports are dropped (and counted)."),
        "spool_max_age": Key("720h", _duration,
                             "Reports older than this are dropped from the spool (and counted)."),
    },
    "posture": {
        "allowed_protocols": Key(["ipsec", "openvpn", "tls", "wireguard"], _choices(POSTURE_PROTOCOLS),
                                 "VPN protocols the organisation accepts (ipsec, openvpn, tls = a TLS VPN such as "
                                 "openconnect/AnyConnect, wireguard). NCSC's guidance names IPsec and TLS VPNs; "
                                 "[\"ipsec\", \"tls\"] follows it strictly."),
        "allowed_auth": Key(["certificate", "public-key"], _choices(POSTURE_AUTH),
                            "Authentication the organisation accepts on the device (certificate, public-key = a raw "
                            "key pair such as WireGuard's, psk, password, eap). NCSC: certificates; "
                            "[\"certificate\"] follows it strictly."),
        "require_hardware_keys": Key(False, _bool,
                                     "true = a private key in a file (not a TPM, smart card or PKCS#11 token) is a "
                                     "finding (warn), not a note."),
        "crypto_profile": Key("ncsc-prime", _one_of(CRYPTO_PROFILES),
                              "The NCSC cryptographic profile negotiated algorithms must meet: ncsc-prime "
                              "(IKEv2, AES-GCM, SHA-2, ECP groups) or ncsc-foundation (also AES-CBC with "
                              "HMAC-SHA2, MODP-2048+, IKEv1)."),
        "advisories_file": Key("", _string,
                               "Advisory table (leakcheck.advisories/1 JSON) to check installed VPN clients "
                               "against; empty = the newest of the table shipped with leakcheck and the copy "
                               "fetched from the collector."),
        "require_lockdown": Key(True, _bool,
                                "Traffic must be blocked, not sent in clear, if the tunnel drops (kill switch / "
                                "lockdown); false = report a missing one as info only."),
        "require_autoconnect": Key(True, _bool,
                                   "The VPN must start by itself (boot, network up); false = report a manual "
                                   "VPN as info only."),
        "require_captive_helper": Key(True, _bool,
                                      "The platform's captive-portal helper / connectivity check must be "
                                      "present; false = report its absence as info only."),
        "captive_exception_max_prefix": Key(24, _int_within(0, 32),
                                            "An IPv4 entry of policy.allowed_direct shorter than this prefix "
                                            "length is too broad to be a captive-portal exception."),
        "captive_exception_max_prefix6": Key(48, _int_within(0, 128),
                                             "The same bound for IPv6 entries of policy.allowed_direct."),
    },
    "collector": {
        "url": Key("", _url, "Collector base URL; empty = do not upload."),
        "token_file": Key("/etc/leakcheck/token", _string, "Per-device token (written by enroll)."),
        "ca_file": Key("", _string, "CA bundle for the collector's TLS; empty = system store."),
    },
}


class Config:
    """Validated configuration: `config.get("policy", "allow_split")` or attribute sections."""

    def __init__(self, values: dict[str, dict[str, Any]], source: str | None = None):
        self._values = values
        self.source = source

    def get(self, section: str, key: str) -> Any:
        return self._values[section][key]

    def section(self, section: str) -> dict[str, Any]:
        return dict(self._values[section])

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s: dict(v) for s, v in self._values.items()}

    def tunnel_interface_matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.get("tunnel", "interfaces"))


def defaults() -> Config:
    return Config({s: {k: spec.default for k, spec in keys.items()} for s, keys in SCHEMA.items()})


def from_mapping(data: dict[str, Any], source: str | None = None) -> Config:
    values = defaults().as_dict()
    for section, body in data.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(SCHEMA)})",
                              key=section, path=source)
        if not isinstance(body, dict):
            raise ConfigError("expected a table", key=section, path=source)
        for key, value in body.items():
            dotted = f"{section}.{key}"
            spec = SCHEMA[section].get(key)
            if spec is None:
                raise ConfigError(f"unknown key (known in [{section}]: {', '.join(SCHEMA[section])})",
                                  key=dotted, path=source)
            try:
                values[section][key] = spec.validate(dotted, value)
            except ConfigError as exc:
                raise ConfigError(str(exc), path=source) from None
    return Config(values, source)


def load(path: str | Path | None) -> Config:
    """Load `path`; with None, the default file if it exists, else defaults."""
    explicit = path is not None
    target = Path(path) if explicit else DEFAULT_PATH
    if not target.exists():
        if explicit:
            raise ConfigError("file not found", path=str(target))
        return defaults()
    try:
        text = target.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(target)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(target)) from None
    return from_mapping(data, str(target))


# -- rendering: the documented default file and the effective configuration --------------

def toml_value(value: Any) -> str:
    """One value as TOML: the schema only holds booleans, numbers, strings and
    lists of strings, and JSON string escapes are valid TOML basic strings."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _doc_lines(text: str, width: int = 78) -> list[str]:
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, width - 2)]


DEFAULT_HEADER = """\
# leakcheck configuration ({path}).
#
# Generated from leakcheck's configuration schema: every key, its meaning and
# its default. Every key is optional. A key left commented out ("#key = ...")
# keeps its default, also when a later version changes that default.
# Uncomment and edit only what this site needs, then check the file before
# rolling it out:
#
#     leakcheck config check {path}
#
# Unknown keys and bad values are an error (exit status 2) naming the key.
"""


def render_default(path: str | Path = DEFAULT_PATH) -> str:
    """The documented default configuration file, generated from SCHEMA."""
    out = [DEFAULT_HEADER.format(path=path)]
    for section, keys in SCHEMA.items():
        out.append(f"[{section}]")
        for name, spec in keys.items():
            out.extend(_doc_lines(spec.doc))
            # "#key" (no space) tells a key apart from the prose lines above it.
            out.append(f"#{name} = {toml_value(spec.default)}")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render_effective(config: Config) -> str:
    """The configuration in force, every key set, as TOML; keys that differ
    from their default are marked so a reviewer sees what the file changes."""
    out = []
    values = config.as_dict()
    for section, keys in SCHEMA.items():
        out.append(f"[{section}]")
        for name, spec in keys.items():
            value = values[section][name]
            mark = "" if value == spec.default else f"  # changed (default {toml_value(spec.default)})"
            out.append(f"{name} = {toml_value(value)}{mark}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
