"""Built-in probes: one module per leak class.

Each module defines one `Probe` subclass. The list below is the explicit
built-in set; other packages add probes through the `leakcheck.probes`
entry-point group (see leakcheck/registry.py).
"""

BUILTIN = (
    "probes.routes:RoutesProbe",
    "probes.split:SplitProbe",
    "probes.dns:DnsProbe",
    "probes.ipv6:Ipv6Probe",
    "probes.perapp:PerAppProbe",
    "probes.tethering:TetheringProbe",
    # Keep last: with --disruptive it cuts the tunnel, and every other probe
    # must look at the network before that.
    "probes.reconnect:ReconnectProbe",
)
