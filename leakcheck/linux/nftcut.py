"""The reversible tunnel cut on Linux: an nftables table of leakcheck's own
that drops every packet to and from the VPN server's addresses.

A cut must never outlive the test, whatever happens to the process that
made it. Three mechanisms, strongest first:

1. **Owner flag.** The table is created with `flags owner` (Linux >= 5.12)
   through libnftables *inside this process*: the kernel ties the table to
   this process's netlink socket and deletes it the moment that socket
   closes, i.e. when the process exits for any reason, SIGKILL included.
   (The `nft` command cannot do this: its socket closes when the command
   returns, and an owned table would vanish with it.)
2. **Element timeouts.** The server addresses are set elements with a
   `timeout` of the cut's length plus a grace second: the kernel removes
   them by itself, so the drop rules match nothing afterwards, even when the
   table stays (a kernel without the owner flag, no libnftables, or a hung
   thread in a process that lives on).
3. **Explicit lift and clean start.** The normal path deletes the table
   when the cut ends (and closing the context closes the owning socket),
   and every cut first deletes a leftover table of an earlier run (an
   empty, inert one after 2.). A table still owned by a *live* process
   (another leakcheck run cutting right now) cannot be deleted: `CutBusy`.

The table changes nothing else: no route, rule or sysctl.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import logging
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

# The errors are the engine's (leakcheck.disrupt): probes catch them without a platform import.
from leakcheck.disrupt import CutBusy, CutError

log = logging.getLogger(__name__)

TABLE = "leakcheck_cut"  # inet family; `nft list tables` shows it while a cut is in place
LIFT_GRACE_S = 1.0  # element timeout = cut length + this: the kernel's lift never races ours


class Backend(Protocol):
    owner_capable: bool

    def run(self, commands: str) -> str: ...

    def close(self) -> None: ...


class LibNftables:
    """One libnftables context: one netlink socket, kept open until close().
    Owned tables made through it live exactly as long as that socket."""

    owner_capable = True

    def __init__(self) -> None:
        path = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError as exc:
            raise CutError(f"libnftables not available ({exc})") from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise CutError("libnftables: cannot create a context")
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self._lib, self._ctx = lib, ctx
        self._lock = threading.Lock()

    def run(self, commands: str) -> str:
        with self._lock:
            if self._ctx is None:
                raise CutError("libnftables context is closed")
            code = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
            output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
            error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if code != 0:
            raise CutError(error.strip() or f"nft failed ({code})")
        return output

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)  # closes the socket: an owned table goes with it
                self._ctx = None


class NftCommand:
    """Fallback through the `nft` command: no owner flag possible (its socket
    closes when the command returns), so only the element timeouts guard."""

    owner_capable = False

    def __init__(self) -> None:
        self.path = shutil.which("nft")
        if not self.path:
            raise CutError("neither libnftables nor the nft command is available")

    def run(self, commands: str) -> str:
        try:
            done = subprocess.run([self.path, "-f", "-"], input=commands, capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CutError(f"nft: {exc}") from None
        if done.returncode != 0:
            raise CutError(done.stderr.strip() or f"nft exited {done.returncode}")
        return done.stdout

    def close(self) -> None:
        pass


def open_backend() -> Backend:
    try:
        return LibNftables()
    except CutError as exc:
        log.debug("falling back to the nft command: %s", exc)
        return NftCommand()


@dataclass
class Cut:
    """A cut in place. `lift()` ends it (idempotent)."""

    addresses: tuple[str, ...]
    seconds: float
    owner: bool  # the kernel deletes the table if this process dies
    started: float  # time.monotonic() when the drop rules went in
    started_wall: float  # time.time() at the same moment
    backend: Backend = field(repr=False)
    removed_leftover: bool = False
    lifted_at: float | None = None
    lift_error: str | None = None

    @property
    def element_timeout_s(self) -> float:
        return self.seconds + LIFT_GRACE_S

    @property
    def safety(self) -> str:
        """How the kernel lifts the cut if this process never does (for evidence)."""
        expiry = f"set elements expire after {self.element_timeout_s:g} s"
        if self.owner:
            return f"nftables table with the owner flag (deleted by the kernel when leakcheck exits) and {expiry}"
        return f"{expiry} (this kernel or nftables has no owner flag); an empty table is removed at the next run"

    def lift(self) -> None:
        if self.lifted_at is not None:
            return
        try:
            self.backend.run(f"delete table inet {TABLE}\n")
        except CutError as exc:  # the socket close below still removes an owned table
            self.lift_error = str(exc)
            log.warning("lifting the cut: %s", exc)
        finally:
            self.lifted_at = time.monotonic()
            self.backend.close()


def ruleset(addresses: Iterable[str], timeout_s: float, owner: bool) -> str:
    """The whole cut as one nft transaction: the table and its elements appear together."""
    v4 = sorted(a for a in addresses if ipaddress.ip_address(a).version == 4)
    v6 = sorted(a for a in addresses if ipaddress.ip_address(a).version == 6)
    timeout = f"timeout {max(1, int(timeout_s * 1000))}ms"
    lines = [f"table inet {TABLE} {{"]
    if owner:
        lines.append("    flags owner")
    lines += [
        "    set servers4 {", "        type ipv4_addr", "        flags timeout", "    }",
        "    set servers6 {", "        type ipv6_addr", "        flags timeout", "    }",
        # A drop in any base chain is final, so other tables' accepts cannot undo the cut.
        "    chain output {", "        type filter hook output priority filter - 10; policy accept;",
        "        ip daddr @servers4 drop", "        ip6 daddr @servers6 drop", "    }",
        "    chain input {", "        type filter hook input priority filter - 10; policy accept;",
        "        ip saddr @servers4 drop", "        ip6 saddr @servers6 drop", "    }",
        "}",
    ]
    for name, members in (("servers4", v4), ("servers6", v6)):
        if members:
            lines.append(f"add element inet {TABLE} {name} {{ "
                         + ", ".join(f"{a} {timeout}" for a in members) + " }")
    return "\n".join(lines) + "\n"


def remove_leftover(backend: Backend) -> bool:
    """Delete a cut table left by an earlier run; True if there was one."""
    try:
        backend.run(f"delete table inet {TABLE}\n")
    except CutError as exc:
        text = str(exc)
        if "No such file or directory" in text:
            return False
        if "Operation not permitted" in text or "Device or resource busy" in text:
            raise CutBusy("another leakcheck run holds the cut table (a cut is in progress)") from None
        raise
    return True


def cut(addresses: Iterable[str], seconds: float, backend: Backend | None = None) -> Cut:
    """Drop all traffic to and from `addresses` for `seconds` (then the kernel
    lifts it by itself); returns the Cut to lift earlier. CutError if impossible."""
    chosen = tuple(sorted({str(ipaddress.ip_address(a)) for a in addresses}))
    if not chosen:
        raise CutError("no VPN server address to cut")
    backend = backend or open_backend()
    try:
        leftover = remove_leftover(backend)
        owner = backend.owner_capable
        timeout = seconds + LIFT_GRACE_S
        try:
            backend.run(ruleset(chosen, timeout, owner))
        except CutError as exc:
            if not owner:
                raise
            # Kernels before 5.12 refuse the flag; the element timeouts still guard.
            log.info("nftables owner flag refused (%s); cutting with element timeouts only", exc)
            owner = False
            backend.run(ruleset(chosen, timeout, owner))
    except BaseException:
        backend.close()
        raise
    return Cut(addresses=chosen, seconds=seconds, owner=owner, started=time.monotonic(),
               started_wall=time.time(), backend=backend, removed_leftover=leftover)
