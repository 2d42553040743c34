"""The few Linux calls the lab makes from its own process (through libc).

- `in_netns(name)`: run a block of this thread inside a named network
  namespace and come back (sockets created there stay there), so tests can
  open sockets in the laptop or the isp without starting a process.
- `private_mounts()` / `restore_mounts()`: give this process its own mount
  namespace with a private tmpfs on /run/wireguard, so the lab's
  wireguard-go UAPI sockets (wg0.sock, wgvpn.sock) never meet another
  wireguard-go on the machine. Children (ip netns exec, the agent) inherit it.
- `set_parent_death_signal()`: a preexec_fn so lab daemons die with us.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NETNS_RUN_DIR = Path("/run/netns")
WIREGUARD_RUN_DIR = Path("/run/wireguard")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Switch this thread into /run/netns/<name> for the block, then back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(NETNS_RUN_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Never stay in a lab namespace: failing to come back is fatal for the run.
            _setns(own, CLONE_NEWNET)
    finally:
        os.close(own)


def set_parent_death_signal() -> None:
    """preexec_fn: SIGTERM this child when the lab process dies (survives exec)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mountinfo() -> list[tuple[str, list[str]]]:
    """(mount point, optional fields) of every mount this process sees."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        out.append((fields[4].replace("\\040", " "), fields[6:sep]))
    return out


def _covering_mount(path: str) -> tuple[str, list[str]]:
    best = ("/", [])
    for point, optional in mountinfo():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, optional)
    return best


def ensure_shared_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` would, before we
    leave the host's mount namespace: then namespaces we add stay visible to
    `ip netns` everywhere (debugging, stale-lab cleanup by the next run)."""
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    point, optional = _covering_mount(str(NETNS_RUN_DIR))
    if point == str(NETNS_RUN_DIR) and any(f.startswith("shared:") for f in optional):
        return
    if point != str(NETNS_RUN_DIR):
        subprocess.run(["mount", "--bind", str(NETNS_RUN_DIR), str(NETNS_RUN_DIR)], check=True,
                       capture_output=True)
    subprocess.run(["mount", "--make-shared", str(NETNS_RUN_DIR)], check=True, capture_output=True)


class MountState:
    """What `private_mounts` changed, for `restore_mounts`."""

    def __init__(self, original_ns_fd: int, cwd: str):
        self.original_ns_fd = original_ns_fd
        self.cwd = cwd


_private: MountState | None = None


def private_mounts() -> MountState:
    """Enter a new mount namespace with a private tmpfs on /run/wireguard (once per
    process: later calls return the same state).

    Raises OSError if the kernel refuses: unshare(CLONE_NEWNS) needs a process
    without threads, which is why the pytest plugin calls this right after
    collection, before any test can start one."""
    global _private
    if _private is not None:
        return _private
    ensure_shared_netns_dir()  # while still in the host's mount namespace
    WIREGUARD_RUN_DIR.mkdir(parents=True, exist_ok=True)
    original = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.getcwd()
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    except OSError:
        os.close(original)
        raise
    state = MountState(original, cwd)
    try:
        point, optional = _covering_mount(str(WIREGUARD_RUN_DIR))
        if any(f.startswith("shared:") for f in optional):
            # Our copy of that mount still propagates to the host: receive only.
            subprocess.run(["mount", "--make-slave", point], check=True, capture_output=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "leakcheck-lab",
                        str(WIREGUARD_RUN_DIR)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        _private = state
        restore_mounts()
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) \
            else str(exc)
        raise OSError(errno.EPERM, f"private /run/wireguard: {detail}") from None
    _private = state
    return state


def in_private_mounts() -> bool:
    return _private is not None


def restore_mounts() -> None:
    """Back to the mount namespace we came from (our private one then goes away).

    A process that has started threads meanwhile cannot switch back; it then
    keeps its private /run/wireguard (empty once the lab is gone) until it exits."""
    global _private
    state, _private = _private, None
    if state is None:
        return
    if len(os.listdir("/proc/self/task")) > 1:
        os.close(state.original_ns_fd)
        return
    try:
        _setns(state.original_ns_fd, CLONE_NEWNS)
        os.chdir(state.cwd)
    finally:
        os.close(state.original_ns_fd)
