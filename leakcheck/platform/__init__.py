"""The platform seam: everything the engine asks of the operating system.

One backend per platform, chosen once at start from `sys.platform` (the way
pyroute2 picks `iproute/{linux,darwin,windows}`), then handed to the engine:

- `read_state()`: the network state as `NetState` (links, addresses, routes,
  resolvers, firewall, sockets and processes);
- `route_lookup(state)`: the kernel's own route decision per destination,
  answering the oracle's `Query` with an `Answer` (leakcheck/rtnl.py);
- `privileged()`: may this process read everything and send test packets;
- `packets_unavailable()`: why test packets cannot be sent and captured here
  (None when they can);
- `watch_kernel(sets)`: the live watch's kernel filter and reader
  (`KernelWatch`, leakcheck/watch); `WatchUnavailable` where it cannot run
  (macOS and Windows: not supported yet).

The firewall evaluator and the socket/process lookups work on what
`read_state()` put into `NetState.firewall` and `NetState.activity`, so a
backend serves them by filling those in. Probes see none of this: only
their context.
"""

from __future__ import annotations

import importlib
import sys
from typing import Protocol, Sequence, runtime_checkable

from leakcheck.errors import ExitCode, LeakcheckError
from leakcheck.netstate import NetState
from leakcheck.rtnl import Answer, Query
from leakcheck.watch.model import SuspectFlow, WatchSets

# sys.platform value -> "module:class" of its backend
BACKENDS = {
    "linux": "leakcheck.platform.linux:LinuxBackend",
    "darwin": "leakcheck.platform.macos:MacBackend",
    "win32": "leakcheck.platform.windows:WindowsBackend",
}


class UnsupportedPlatform(LeakcheckError):
    """No backend for this operating system: a usage error (exit 2), one line."""

    exit_code = ExitCode.USAGE


@runtime_checkable
class RouteLookup(Protocol):
    """The kernel's route decision, asked in batches (rtnl.RouteLookup is one)."""

    def lookup_many(self, queries: Sequence[Query]) -> list[Answer]: ...

    def close(self) -> None: ...


@runtime_checkable
class KernelWatch(Protocol):
    """The kernel side of the live watch (leakcheck/linux/nftwatch.py on Linux):
    a filter that hands over only suspect new flows, and who sent them."""

    owner_flag: bool  # the filter vanishes with this process, SIGKILL included
    limits: list[str]  # what it watches less well than it could, in words

    def apply(self, sets: WatchSets) -> None: ...

    def wait(self, timeout: float) -> bool: ...

    def fileno(self) -> int: ...

    def read(self) -> tuple[list[SuspectFlow], int]: ...

    def established_outside(self, local_addresses: dict[str, str], sets: WatchSets) -> list[SuspectFlow]: ...

    def close(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    name: str  # linux | macos | windows

    def read_state(self) -> NetState: ...

    def route_lookup(self, state: NetState) -> RouteLookup: ...

    def privileged(self) -> bool: ...

    def packets_unavailable(self) -> str | None: ...

    def watch_kernel(self, sets: WatchSets) -> KernelWatch: ...


def backend_path(platform: str) -> str:
    for prefix, path in BACKENDS.items():
        if platform.startswith(prefix):  # "linux" and the older "linux2" alike
            return path
    supported = ", ".join(sorted({"linux", "macos (darwin)", "windows (win32)"}))
    raise UnsupportedPlatform(f"leakcheck does not support this platform ({platform}); "
                              f"supported: {supported}")


def select(platform: str | None = None) -> Backend:
    """The backend of `platform` (default: this machine's `sys.platform`)."""
    module_name, class_name = backend_path(platform or sys.platform).split(":")
    return getattr(importlib.import_module(module_name), class_name)()
