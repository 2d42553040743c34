"""Finding probes: the explicit built-in list, then the `leakcheck.probes`
entry-point group for probes shipped by other packages."""

from __future__ import annotations

import importlib
import logging
from importlib import metadata

from leakcheck.errors import UsageError
from leakcheck.probe import Probe, validate_probe

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "leakcheck.probes"


def _load(target: str) -> type[Probe]:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def discover(include_entry_points: bool = True) -> dict[str, type[Probe]]:
    """Name -> probe class, built-ins first. A broken plugin is logged and left out."""
    from leakcheck.probes import BUILTIN

    found: dict[str, type[Probe]] = {}
    for target in BUILTIN:
        cls = _load(target)
        validate_probe(cls)
        found[cls.name] = cls
    if include_entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in BUILTIN:
                continue
            try:
                cls = ep.load()
                validate_probe(cls)
            except Exception as exc:  # a third-party plugin must never sink the agent
                log.warning("probe plugin %s (%s) not loaded: %s", ep.name, ep.value, exc)
                continue
            if cls.name in found and found[cls.name] is not cls:
                log.warning("probe plugin %s ignored: the name %r is taken", ep.value, cls.name)
                continue
            found[cls.name] = cls
    return found


def select(available: dict[str, type[Probe]], names: list[str] | None) -> list[type[Probe]]:
    if not names:
        return list(available.values())
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"unknown probe {', '.join(unknown)} (available: {', '.join(available)})")
    return [available[n] for n in dict.fromkeys(names)]
