"""Which resolvers the system would use: /etc/resolv.conf, and the per-link
servers of systemd-resolved when resolv.conf points at its stub.

systemd-resolved sends a name to the links whose routing or search domains
match it best (the longest match wins; equal matches are asked in
parallel). `~.` matches every name, with the shortest length. Only names
that no domain matches go to the links with DefaultRoute=yes. So once any
link has `~.`, a DefaultRoute link without it receives no ordinary
queries, and a link with neither domains nor DefaultRoute receives none
(tests/lab/test_desktop.py checks both against the real daemons, with
NetworkManager's VPN on the tunnel link).
The resolvers returned here say what resolved really does: `default_route`
is true only where the link does receive unmatched names.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from leakcheck.netstate import Link, Resolver

RESOLV_CONF = Path("/etc/resolv.conf")
RESOLVED_STUBS = {"127.0.0.53", "127.0.0.54"}
LINK_LINE = re.compile(r"^Link\s+(\d+)\s+\(([^)]+)\):\s*(.*)$")
GLOBAL_LINE = re.compile(r"^Global:\s*(.*)$")
ROOT_ROUTING_DOMAIN = "~."


def read(notes: list[str], links: Sequence[Link] = (),
         resolv_conf: Path = RESOLV_CONF) -> tuple[tuple[Resolver, ...], str | None]:
    """Returns the resolvers and the name of the local stub they sit behind, if any."""
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        notes.append(f"dns: cannot read {resolv_conf}: {exc}")
        return (), None
    servers = parse_resolv_conf(text)
    if any(str(s) in RESOLVED_STUBS for s in servers):
        upstream = read_resolved(notes)
        if upstream is not None:
            return upstream, "systemd-resolved"
        return tuple(Resolver(address=s, source="resolv.conf") for s in servers), "systemd-resolved"
    return tuple(Resolver(address=s, source="resolv.conf") for s in servers), None


def parse_resolv_conf(text: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    servers = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                servers.append(ipaddress.ip_address(fields[1].split("%")[0]))
            except ValueError:
                continue
    return servers


def read_resolved(notes: list[str]) -> tuple[Resolver, ...] | None:
    if not shutil.which("resolvectl"):
        notes.append("dns: resolv.conf points at systemd-resolved but resolvectl is missing")
        return None
    outputs = []
    for verb in ("dns", "domain", "default-route"):
        try:
            done = subprocess.run(["resolvectl", verb], capture_output=True, text=True, timeout=3,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"dns: resolvectl {verb} failed: {exc}")
            return None
        if done.returncode != 0:
            notes.append(f"dns: resolvectl {verb}: {done.stderr.strip()}")
            return None
        outputs.append(done.stdout)
    return effective_routing(parse_resolvectl(*outputs), notes)


def _per_link(text: str) -> tuple[dict[str, list[str]], list[str]]:
    links: dict[str, list[str]] = {}
    global_values: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        match = LINK_LINE.match(line)
        if match:
            links[match.group(2)] = match.group(3).split()
            continue
        match = GLOBAL_LINE.match(line)
        if match:
            global_values = match.group(1).split()
    return links, global_values


def parse_resolvectl(dns_out: str, domain_out: str, default_route_out: str) -> tuple[Resolver, ...]:
    """Parse `resolvectl dns`, `resolvectl domain` and `resolvectl default-route`."""
    servers, global_servers = _per_link(dns_out)
    domains, global_domains = _per_link(domain_out)
    default_routes, _ = _per_link(default_route_out)
    out = [Resolver(address=addr, source="systemd-resolved", domains=tuple(global_domains))
           for addr in _addresses(global_servers)]
    for link, values in servers.items():
        flag = default_routes.get(link, [])
        out += [Resolver(address=addr, source="systemd-resolved", link=link,
                         domains=tuple(domains.get(link, [])),
                         default_route=(flag[0] == "yes") if flag else None)
                for addr in _addresses(values)]
    return tuple(out)


def _addresses(values: list[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = []
    for value in values:
        host = value.split("#", 1)[0].split("%", 1)[0]  # 1.1.1.1#cloudflare-dns.com, fe80::1%2
        if host.startswith("[") and "]" in host:
            host = host[1:host.index("]")]
        try:
            out.append(ipaddress.ip_address(host))
        except ValueError:
            continue
    return out


def effective_routing(found: tuple[Resolver, ...], notes: list[str]) -> tuple[Resolver, ...]:
    """What resolved really routes (module docstring): a DefaultRoute link is outranked
    by `~.` elsewhere, and a link that receives no query at all is not a resolver in use."""
    catch_all = sorted({r.link or "global" for r in found if ROOT_ROUTING_DOMAIN in r.domains})
    out = []
    for resolver in found:
        if resolver.link is None or ROOT_ROUTING_DOMAIN in resolver.domains:
            out.append(resolver)
            continue
        if resolver.default_route and catch_all:
            notes.append(f"dns: systemd-resolved link {resolver.link} has DefaultRoute, but '~.' on "
                         f"{', '.join(catch_all)} takes every name that no other domain matches")
            resolver = replace(resolver, default_route=False)
        if resolver.default_route is False and not resolver.domains:
            notes.append(f"dns: systemd-resolved link {resolver.link} has the server {resolver.address} but "
                         "neither routing domains nor DefaultRoute: it receives no queries")
            continue
        out.append(resolver)
    return tuple(out)
