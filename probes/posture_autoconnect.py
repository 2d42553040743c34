"""Automatic connect: does the VPN start by itself, before the user can reach the network?

Read from configuration (posture facts, leakcheck/platform/posture.py), no
command run and nothing changed:
- NetworkManager: `connection.autoconnect` of each VPN / WireGuard profile
  (keyfiles in /etc and /run NetworkManager/system-connections; absent means
  true), and `connection.secondaries` of Wi-Fi / Ethernet profiles naming a
  VPN profile (the VPN comes up with that network);
- systemd: `wg-quick@`, `openvpn-client@`, `openvpn@`, strongSwan units
  enabled (symlinks in /etc/systemd/system/*.wants);
- strongSwan: `start_action = start` (swanctl.conf) or `auto = start`
  (ipsec.conf), which start the connection when the daemon starts (`trap` /
  `route` start it on first traffic, also automatic);
- OpenVPN: `persist-tun` and `keepalive` / `ping-restart` in its config, so
  the client restarts a dead tunnel without tearing down its routes.

Findings:
- `posture-autoconnect.manual` (warn; info with posture.require_autoconnect
  = false): VPN configuration found, none of it starts automatically.
- `posture-autoconnect.automatic` (info): what starts the VPN, with the file.
- `posture-autoconnect.openvpn-no-restart` (warn): an automatically started
  OpenVPN config without keepalive/ping-restart or persist-tun.

Skipped when no VPN configuration leakcheck can read is found, and where
leakcheck has no posture reader (Linux only so far).
"""

from __future__ import annotations

from typing import Any

from leakcheck.errors import ProbeSkipped
from leakcheck.platform.posture import PostureFacts, Setting
from leakcheck.probe import Effect, Finding, Probe, ProbeContext, Severity
from leakcheck.report import Guidance

AUTO_STRONGSWAN = ("start", "trap", "route", "add|start")


class PostureAutoconnectProbe(Probe):
    """Automatic connect: does the VPN start by itself?"""

    name = "posture-autoconnect"
    leak_class = "a VPN that must be started by hand (traffic flows before the user connects)"
    finding_ids = ("posture-autoconnect.manual", "posture-autoconnect.automatic",
                   "posture-autoconnect.openvpn-no-restart")
    checks = ("autoconnect",)

    def run(self, ctx: ProbeContext) -> list[Finding]:
        if not ctx.posture.root:
            raise ProbeSkipped("; ".join(ctx.posture.limits))
        facts = ctx.posture
        automatic, manual = _nm(facts)
        a2, m2 = _units(facts)
        automatic += a2
        manual += m2
        if not automatic and not manual:
            why = "; ".join(facts.limits[:3])
            raise ProbeSkipped("no VPN configuration found (NetworkManager VPN profiles, wg-quick@ / "
                               "openvpn@ / openvpn-client@ / strongSwan units)" + (f"; not readable: {why}" if why else ""))
        if not automatic:
            required = ctx.config.get("posture", "require_autoconnect")
            effect = Effect.WARN if required else Effect.INFO
            return [self.finding(
                "posture-autoconnect.manual", Severity.MEDIUM if required else Severity.INFO,
                f"The VPN does not start by itself: {manual[0]['reason']}.", {"manual": manual},
                "Start the VPN automatically: set connection.autoconnect=yes on the VPN profile or list it in "
                "connection.secondaries of each Wi-Fi/Ethernet profile (NetworkManager); enable its unit "
                "(systemctl enable wg-quick@wg0 / openvpn-client@NAME); strongSwan start_action = start.",
                Guidance.AUTOCONNECT, effect)]
        findings = [self.finding(
            "posture-autoconnect.automatic", Severity.INFO,
            f"The VPN starts by itself: {automatic[0]['reason']}.", {"automatic": automatic, "manual": manual},
            "Keep it so.", Guidance.AUTOCONNECT, Effect.INFO)]
        findings += self._openvpn(facts)
        return findings

    def _openvpn(self, facts: PostureFacts) -> list[Finding]:
        out = []
        for unit in facts.vpn_units:
            if not unit.enabled or not unit.name.startswith(("openvpn@", "openvpn-client@")):
                continue
            instance = unit.name.split("@", 1)[1].rsplit(".", 1)[0]
            config = next((f for f in facts.openvpn if f.endswith(f"/{instance}.conf")), None)
            if config is None:
                continue
            keys = {s.text.split()[0] for s in facts.openvpn[config]}
            missing = []
            if not keys & {"keepalive", "ping-restart"}:
                missing.append("keepalive (or ping-restart)")
            if "persist-tun" not in keys:
                missing.append("persist-tun")
            if missing:
                out.append(self.finding(
                    "posture-autoconnect.openvpn-no-restart", Severity.LOW,
                    f"OpenVPN config {config} (started by {unit.name}) lacks {' and '.join(missing)}: a dead "
                    "tunnel is not noticed and restarted, or its routes are torn down while it restarts.",
                    {"config": config, "unit": unit.name, "missing": missing,
                     "present": [_setting(s) for s in facts.openvpn[config]]},
                    "Add 'keepalive 10 60' and 'persist-tun' to the client config.",
                    Guidance.RECONNECT, Effect.WARN))
        return out


def _setting(s: Setting) -> dict[str, Any]:
    return {"file": s.file, "line": s.line, "text": s.text}


def _nm(facts: PostureFacts) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    automatic: list[dict[str, Any]] = []
    manual: list[dict[str, Any]] = []
    for vpn in (p for p in facts.nm_profiles if p.is_vpn):
        carriers = [p for p in facts.nm_profiles if p.is_uplink and (vpn.uuid in p.secondaries
                                                                    or vpn.id in p.secondaries)]
        evidence = {"profile": vpn.evidence(), "secondary_of": [p.evidence() for p in carriers]}
        if carriers:
            automatic.append({**evidence, "reason": f"NetworkManager starts '{vpn.id}' with "
                              f"'{carriers[0].id}' (connection.secondaries in {carriers[0].path})"})
        elif vpn.autoconnect:
            automatic.append({**evidence, "reason": f"NetworkManager profile '{vpn.id}' has "
                              f"connection.autoconnect=yes ({vpn.path})"})
        else:
            manual.append({**evidence, "reason": f"NetworkManager profile '{vpn.id}' has connection.autoconnect="
                           f"no and no Wi-Fi/Ethernet profile lists it in connection.secondaries ({vpn.path})"})
    return automatic, manual


def _units(facts: PostureFacts) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    automatic: list[dict[str, Any]] = []
    manual: list[dict[str, Any]] = []
    starts = [s for s in facts.strongswan_auto if s.text.replace(" ", "").split("=", 1)[1] in AUTO_STRONGSWAN]
    for unit in facts.vpn_units:
        if unit.name == "openvpn.service":
            continue  # a wrapper that starts the openvpn@ instances: those are looked at
        strongswan = unit.name.startswith(("strongswan", "ipsec"))
        evidence = {"unit": unit.name, "file": unit.path, "enabled_by": list(unit.enabled_by)}
        if strongswan and not facts.strongswan_auto:
            continue  # the daemon alone, no connection defined: nothing to start
        if unit.enabled and (not strongswan or starts):
            extra = f" with {starts[0].text} ({starts[0].file}:{starts[0].line})" if strongswan else ""
            automatic.append({**evidence, "settings": [_setting(s) for s in starts] if strongswan else [],
                              "reason": f"{unit.name} is enabled{extra}"})
        elif unit.enabled:
            manual.append({**evidence, "settings": [_setting(s) for s in facts.strongswan_auto],
                           "reason": f"{unit.name} is enabled but no connection has start_action = start "
                                     "or auto = start"})
        elif "@" not in unit.name:
            manual.append({**evidence, "reason": f"{unit.name} is installed but not enabled"})
    return automatic, manual
