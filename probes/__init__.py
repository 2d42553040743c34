"""Built-in probes: one module per leak class.

Each module defines one `Probe` subclass. The list below is the explicit
built-in set; other packages add probes through the `leakcheck.probes`
entry-point group (see leakcheck/registry.py).
"""

BUILTIN = (
    "leakcheck.probes.routes:RoutesProbe",
    "leakcheck.probes.split:SplitProbe",
    "leakcheck.probes.dns:DnsProbe",
    "leakcheck.probes.ipv6:Ipv6Probe",
    "leakcheck.probes.perapp:PerAppProbe",
    "leakcheck.probes.tethering:TetheringProbe",
    "leakcheck.probes.posture_auth:PostureAuthProbe",
    "leakcheck.probes.posture_crypto:PostureCryptoProbe",
    "leakcheck.probes.posture_updates:PostureUpdatesProbe",
    # Posture: the rest of the NCSC guidance, read from configuration and a what-if state.
    "leakcheck.probes.posture_forced:PostureForcedProbe",
    "leakcheck.probes.posture_autoconnect:PostureAutoconnectProbe",
    "leakcheck.probes.posture_captive:PostureCaptiveProbe",
    # Disruptive (with --disruptive it cuts the tunnel): the runner runs it after
    # every other probe, plugins included, wherever it stands in this list.
    "leakcheck.probes.reconnect:ReconnectProbe",
)
