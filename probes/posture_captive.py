"""Captive portals: is the platform's helper there, and the exceptions for it narrow?

A hotel or train Wi-Fi portal must be passed before any VPN can connect;
NCSC's advice is the platform's own captive-portal helper, with the hole it
needs kept narrow. Read from configuration (posture facts), nothing run:
- NetworkManager's connectivity check: the `[connectivity]` section of
  NetworkManager.conf and conf.d (`uri`, `enabled`), which is what tells the
  desktop a portal is in the way; the GNOME portal helper
  (gnome-shell-portal-helper) that opens it in a sandboxed window;
- systemd-networkd has no connectivity check or portal helper at all: said
  so, not guessed around;
- `policy.allowed_direct`: a managed exception broader than
  `posture.captive_exception_max_prefix` (IPv4, default /24) or
  `posture.captive_exception_max_prefix6` (IPv6, default /48) is a hole,
  not a portal exception (0.0.0.0/0 is everything).

Findings:
- `posture-captive.no-helper` (warn; info with posture.require_captive_helper
  = false): no connectivity check / portal helper found (or networkd, which
  has none).
- `posture-captive.helper` (info): what detects and opens portals.
- `posture-captive.broad-exception` (warn): an allowed_direct entry too broad.

Skipped where leakcheck has no posture reader (Linux only so far).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from leakcheck.errors import ProbeSkipped
from leakcheck.platform.posture import PostureFacts
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance


class PostureCaptiveProbe(Probe):
    """Captive portals: the platform's helper present, its exceptions narrow."""

    name = "posture-captive"
    leak_class = "captive portals passed without the platform's helper, or through over-broad exceptions"
    finding_ids = ("posture-captive.no-helper", "posture-captive.helper", "posture-captive.broad-exception")
    checks = ("captive-portal",)

    def run(self, ctx: ProbeContext) -> list[Finding]:
        if not ctx.posture.root:
            raise ProbeSkipped("; ".join(ctx.posture.limits))
        facts = ctx.posture
        findings = [self._helper(facts, ctx.config.get("posture", "require_captive_helper"))]
        limits = {4: ctx.config.get("posture", "captive_exception_max_prefix"),
                  6: ctx.config.get("posture", "captive_exception_max_prefix6")}
        broad = [net for net in ctx.allowed_direct if net.prefixlen < limits[net.version]]
        if broad:
            findings.append(self.finding(
                "posture-captive.broad-exception", Severity.MEDIUM,
                f"policy.allowed_direct lets {', '.join(map(str, broad))} bypass the tunnel: broader than "
                f"/{limits[broad[0].version]}, a hole rather than a captive-portal exception.",
                {"broad": [_describe(n) for n in broad], "max_prefix": {"ipv4": limits[4], "ipv6": limits[6]},
                 "allowed_direct": [str(n) for n in ctx.allowed_direct]},
                "Narrow the exception to the portal helper's own endpoints (the connectivity-check host, the "
                "portal's addresses) or remove it; let the platform helper handle the portal.",
                Guidance.CAPTIVE_PORTAL, Effect.WARN))
        return findings

    def _helper(self, facts: PostureFacts, required: bool) -> Finding:
        check = _nm_check(facts)
        evidence: dict[str, Any] = {"networkmanager": facts.nm_present, "connectivity_check": check,
                                    "portal_helpers": facts.portal_helpers,
                                    "systemd_networkd_enabled": facts.networkd_enabled}
        if facts.limits:
            evidence["not_read"] = facts.limits[:5]
        if check.get("uri"):
            helper = f" and {facts.portal_helpers[0]} opens the portal" if facts.portal_helpers else ""
            return self.finding(
                "posture-captive.helper", Severity.INFO,
                f"NetworkManager checks connectivity against {check['uri']}{helper}.", evidence,
                "Keep the connectivity check; allow only its host and the portal outside the tunnel.",
                Guidance.CAPTIVE_PORTAL, Effect.INFO)
        if facts.networkd_enabled and not facts.nm_present:
            why = "systemd-networkd manages the network and has no connectivity check or captive-portal helper"
        elif facts.nm_present:
            why = (f"NetworkManager's connectivity check is {check.get('why', 'not configured')}, so it never "
                   "detects a portal")
        else:
            why = "no network manager with a connectivity check (NetworkManager) was found"
        return self.finding(
            "posture-captive.no-helper", Severity.LOW if required else Severity.INFO, f"No captive-portal helper: {why}.", evidence,
            "Use NetworkManager with a connectivity check ([connectivity] uri=..., e.g. Debian's "
            "network-manager-config-connectivity-debian) and the desktop's portal helper, instead of users "
            "turning the VPN off to reach a portal.", Guidance.CAPTIVE_PORTAL,
            Effect.WARN if required else Effect.INFO)


def _nm_check(facts: PostureFacts) -> dict[str, Any]:
    conn = facts.nm_connectivity
    enabled = conn.get("enabled", "true").strip().lower() not in ("false", "no", "0")
    uri = conn.get("uri", "").strip()
    out: dict[str, Any] = {"file": facts.nm_connectivity_source, "uri": uri if enabled else "", "enabled": enabled}
    if not enabled:
        out["why"] = f"turned off (enabled=false in {facts.nm_connectivity_source})"
    elif not uri:
        out["why"] = "not configured (no [connectivity] uri in NetworkManager.conf or conf.d)"
    return out


def _describe(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> dict[str, Any]:
    return {"prefix": str(net), "addresses": net.num_addresses, "everything": net.prefixlen == 0}
