r"""The desktop stack a laptop really has, booted in a container.

```
  [lcd<pid>-lap: systemd-nspawn --boot]         [lcd<pid>-isp]                     [lcd<pid>-vpn]
   NetworkManager + systemd-resolved             LAN router 100.64.0.1              OpenVPN server 203.0.113.1
   wlan0 100.64.0.2/24 --------veth-------- lan0 (also the hotel resolver)    wan0  udp/1194, static key
   tun0 100.100.0.2 (NM's OpenVPN profile)       up0 203.0.113.2/30 ----veth------ tun0 100.100.0.1 (corp resolver)
        \_____________ OpenVPN over UDP via the isp ___________________________/
                                                 lo: 198.51.100.1 (canary), 198.51.100.53 (ISP resolver)
```

A Debian bookworm root with systemd, systemd-resolved, NetworkManager, its
OpenVPN plugin and nftables is made once with debootstrap and cached as a
tarball under /var/cache/leakcheck-test/ (keyed by suite, mirror and
package list, as tests/packaging/debroot.py does). NetworkManager and
resolved run only inside the container: on the host they would take over
its links and DNS. The tarball is extracted once next to itself; each lab
mounts an overlay on that tree (its writes land in the lab's work dir) and
boots it with `systemd-nspawn --boot --private-network`, the veth wlan0 moved
in from the laptop namespace (this machine has no kernel WireGuard or ESP,
so the VPN is OpenVPN over TUN). leakcheck runs inside from the worktree,
bind-mounted read-only, with the worktree's .venv (and the Python
installation it was made from, when that is not the system's).

Measured on the 2-core lab machine: first build (debootstrap + apt) about
250 s; from the cache, overlay + boot + Wi-Fi connected about 4 s.

The OpenVPN server is the container root's own openvpn binary, chrooted,
in the vpn namespace. One lab at a time per machine: the lab lock
(/run/lock/leakcheck-lab.lock) is taken, or shared when this very process
already holds it for the main lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tests.lab import CANARY_V4, DNS_ANSWER_V4, DNS_ANSWER_V6, ISP_RESOLVER, LAN_ROUTER, LAPTOP_LAN, VPN_SERVER
from tests.lab import dnsd, linux
from tests.lab.topology import LOCK_PATH, delete_netns
from tests.packaging import debroot

REPO = Path(__file__).resolve().parents[2]
DNSD = Path(dnsd.__file__).resolve()
SUITE = debroot.SUITE
VARIANT = "minbase"
# What the container needs, in two steps. debootstrap makes a booted
# systemd with D-Bus and what leakcheck runs on (python3.11, ABI-compatible
# with the worktree's .venv; libpcap for scapy; nftables for kill switches;
# the OpenVPN binary the lab's server also uses). Then apt, chrooted,
# installs the desktop stack: debootstrap cannot configure polkitd (which
# network-manager pulls in) in its own base pass.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "nftables", "openvpn", "python3.11",
                 "libpcap0.8", "procps", "iputils-ping")
DESKTOP_PACKAGES = ("systemd-resolved", "network-manager", "network-manager-openvpn")
PACKAGES = BASE_PACKAGES + DESKTOP_PACKAGES
OPENVPN_PORT = 1194
TUNNEL_LOCAL = "100.100.0.2"
TUNNEL_REMOTE = "100.100.0.1"  # also the corporate resolver, reached only through the tunnel
CORP_RESOLVER = TUNNEL_REMOTE
ISP_UPLINK = "203.0.113.2"
WIFI = "wlan0"
VPN_NAT = """table ip lab {
  chain post {
    type nat hook postrouting priority 100;
    oifname "wan0" masquerade
  }
}
"""
WAIT = 30.0  # seconds a booted-container state (NM activating, resolved) may take


class DesktopError(RuntimeError):
    """The desktop lab could not be built or asked something; the message says why."""


# ---------------------------------------------------------------- the cached root

def cache_key(packages: Sequence[str] = PACKAGES) -> str:
    text = "\n".join(["desktop", SUITE, VARIANT, debroot.mirror(), *sorted(packages)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def root_tarball() -> Path:
    """The cached desktop root; made with debootstrap the first time (minutes)."""
    tarball = debroot.CACHE / f"desktop-{SUITE}-{cache_key()}.tar"
    with debroot._locked(debroot.CACHE / ".lock"):
        if not tarball.exists():
            _debootstrap(tarball)
    return tarball


def cached_tree() -> Path:
    """The cached root, extracted once next to its tarball: each lab mounts an
    overlay on it (seconds) instead of extracting ~400 MB (20 s)."""
    tarball = root_tarball()
    tree = tarball.with_suffix(".d")
    with debroot._locked(debroot.CACHE / ".lock"):
        if not tree.is_dir():
            partial = Path(tempfile.mkdtemp(prefix="desktop-extract-", dir=debroot.CACHE))
            try:
                run(["tar", "-C", str(partial), "--numeric-owner", "-xpf", str(tarball)], timeout=600)
                partial.rename(tree)  # atomic: a half-extracted tree is never used
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return tree


def _debootstrap(tarball: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="debootstrap-desktop-", dir=debroot.CACHE))
    try:
        target = work / "root"
        done = subprocess.run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(BASE_PACKAGES)}",
                               SUITE, str(target), debroot.mirror()], capture_output=True, text=True)
        if done.returncode != 0:
            log = target / "debootstrap/debootstrap.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else done.stderr[-3000:]
            raise DesktopError(f"debootstrap failed:\n{done.stdout[-2000:]}\n{detail}")
        _apt_install(target, DESKTOP_PACKAGES)
        # Downloaded debs are not part of a clean system (and would double the tarball).
        shutil.rmtree(target / "var/cache/apt/archives", ignore_errors=True)
        shutil.rmtree(target / "var/lib/apt/lists", ignore_errors=True)
        (target / "var/cache/apt/archives/partial").mkdir(parents=True)
        (target / "var/lib/apt/lists/partial").mkdir(parents=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(target), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)  # atomic: a half-written cache is never used
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _apt_install(target: Path, packages: Sequence[str]) -> None:
    """apt-get install chrooted into `target`, in a private mount namespace (its /proc
    and /dev mounts vanish with it); no service is started (policy-rc.d)."""
    policy = target / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    script = (f"mount -t proc proc {target}/proc && mount --bind /dev {target}/dev && "
              f"chroot {target} apt-get update -q && "
              f"DEBIAN_FRONTEND=noninteractive chroot {target} apt-get install -y -q --no-install-recommends "
              + " ".join(packages))
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script],
                          capture_output=True, text=True, timeout=1800)
    policy.unlink()
    if done.returncode != 0:
        raise DesktopError(f"apt-get install {' '.join(packages)} in the root failed:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")


# ---------------------------------------------------------------- small helpers

def venv_python_home() -> list[str]:
    """The installation the worktree's .venv was made from, when it is not the
    system's (pyenv on a developer machine): the container needs it at the same path."""
    cfg = REPO / ".venv/pyvenv.cfg"
    if not cfg.exists():
        raise DesktopError(f"{cfg} is missing: run packaging/dev-setup.sh --test")
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            prefix = Path(value.strip()).parent
            return [] if prefix in (Path("/usr"), Path("/usr/local")) else [str(prefix)]
    return []


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
        input: str | None = None) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise DesktopError(f"`{' '.join(argv)}` timed out after {timeout}s: {exc.stderr!r}") from None
    if check and done.returncode != 0:
        raise DesktopError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DesktopError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    report: dict | None

    def __str__(self) -> str:
        return (f"exit {self.returncode} in {self.seconds:.1f}s\nstdout:\n{self.stdout[-6000:]}\n"
                f"stderr:\n{self.stderr[-4000:]}")


# ---------------------------------------------------------------- the lab

class DesktopLab:
    """isp + vpn namespaces, the OpenVPN server, and the booted desktop container."""

    def __init__(self) -> None:
        self.tag = f"lcd{os.getpid()}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.tag}-desktop-"))
        self.root = self.workdir / "root"
        self.processes: dict[str, subprocess.Popen] = {}
        self.leader: int | None = None
        self.timings: dict[str, float] = {}
        self._lock_fd: int | None = None

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    # -- build ------------------------------------------------------------------

    def build(self) -> "DesktopLab":
        missing = [t for t in ("ip", "nft", "systemd-nspawn", "debootstrap", "nsenter", "tar") if not shutil.which(t)]
        if missing:
            raise DesktopError(f"missing tools {missing}: packaging/dev-setup.sh --test installs them")
        if os.geteuid() != 0:
            raise DesktopError("the desktop lab boots a container in network namespaces and needs root")
        started = time.monotonic()
        tree = cached_tree()
        self.timings["cached_root_s"] = time.monotonic() - started
        self._acquire_lock()
        self._remove_stale()
        step = time.monotonic()
        self._mount_root(tree)
        self.timings["root_mount_s"] = time.monotonic() - step
        self._configure_root()
        self._build_network()
        self._start_resolvers()
        self.start_vpn_server()
        step = time.monotonic()
        self._boot()
        self.timings["boot_s"] = time.monotonic() - step
        self.timings["total_s"] = time.monotonic() - started
        return self

    def _acquire_lock(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + float(os.environ.get("LEAKCHECK_LAB_LOCK_WAIT", "600"))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if LOCK_PATH.read_text().strip() == str(os.getpid()):
                    os.close(fd)  # the main lab of this very pytest process holds it: tests run one at a time
                    return
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise DesktopError(f"another lab held {LOCK_PATH} too long") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    @staticmethod
    def _remove_stale() -> None:
        """Namespaces and work dirs of a desktop lab whose process died (killed test runs)."""
        for path in linux.NETNS_RUN_DIR.glob("lcd*-*") if linux.NETNS_RUN_DIR.is_dir() else ():
            pid = path.name[3:].split("-", 1)[0]
            if pid.isdigit() and not linux.pid_alive(int(pid)):
                delete_netns(path.name)
        for workdir in Path(tempfile.gettempdir()).glob("lcd*-desktop-*"):
            pid = workdir.name[3:].split("-", 1)[0]
            if pid.isdigit() and not linux.pid_alive(int(pid)):
                _remove_workdir(workdir)

    def _mount_root(self, tree: Path) -> None:
        """The container's root: an overlay whose writes land in this lab's work dir."""
        for name in ("root", "upper", "overlay-work"):
            (self.workdir / name).mkdir()
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={tree},upperdir={self.workdir / 'upper'},workdir={self.workdir / 'overlay-work'}",
             str(self.root)])

    def _configure_root(self) -> None:
        """NetworkManager with resolved as its DNS backend, the Wi-Fi profile, the static key."""
        etc = self.root / "etc"
        (etc / "NetworkManager/conf.d/10-lab.conf").write_text(
            "# The lab's veth is the laptop's Wi-Fi: manage it (udev would mark veths unmanaged).\n"
            "[main]\ndns=systemd-resolved\nrc-manager=unmanaged\n\n"
            "[device-lab-wifi]\nmatch-device=interface-name:wlan0\nmanaged=1\n\n"
            "[connectivity]\nenabled=false\n")
        resolv = etc / "resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
        (etc / "hostname").write_text("laptop\n")
        self.add_connection("wifi", wifi_profile())
        # A fresh static key per lab, made by the root's own openvpn (the host has none).
        (etc / "openvpn/lab.key").unlink(missing_ok=True)
        run(["chroot", str(self.root), "openvpn", "--genkey", "secret", "/etc/openvpn/lab.key"])
        os.chmod(etc / "openvpn/lab.key", 0o600)
        # Nothing the lab does not need: a login prompt on the console, timers.
        for unit in ("console-getty.service", "getty@.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                     "systemd-timesyncd.service", "e2scrub_all.timer", "fstrim.timer"):
            mask = etc / "systemd/system" / unit
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")

    def add_connection(self, name: str, text: str) -> None:
        path = self.root / "etc/NetworkManager/system-connections" / f"{name}.nmconnection"
        path.write_text(text)
        os.chmod(path, 0o600)

    def _build_network(self) -> None:
        for role in ("lap", "isp", "vpn"):
            delete_netns(self.ns(role))
            run(["ip", "netns", "add", self.ns(role)])
            self.ip(role, "link set lo up")
        lap, isp, vpn = self.ns("lap"), self.ns("isp"), self.ns("vpn")
        run(["ip", "link", "add", "lan0", "netns", isp, "type", "veth", "peer", "name", WIFI, "netns", lap])
        run(["ip", "link", "add", "up0", "netns", isp, "type", "veth", "peer", "name", "wan0", "netns", vpn])
        for args in (f"addr add {LAN_ROUTER}/24 dev lan0", "link set lan0 up",
                     f"addr add {ISP_UPLINK}/30 dev up0", "link set up0 up",
                     f"addr add {CANARY_V4}/32 dev lo", f"addr add {ISP_RESOLVER}/32 dev lo"):
            self.ip("isp", args)
        for args in (f"addr add {VPN_SERVER}/30 dev wan0", "link set wan0 up", f"route add default via {ISP_UPLINK}"):
            self.ip("vpn", args)
        for role in ("isp", "vpn"):
            self.exec(role, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # The vpn's egress: tunnel traffic leaves NATed, so the canary answers through it.
        self.exec("vpn", ["nft", "-f", "-"], input=VPN_NAT)
        # No IPv6 in this lab: the laptop's Wi-Fi has none either.
        self.exec("lap", ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])

    def ip(self, role: str, args: str) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.ns(role), *args.split()])

    def exec(self, role: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0,
             input: str | None = None) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.ns(role), *argv], check=check, timeout=timeout, input=input)

    def _spawn(self, key: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        with open(self.workdir / f"{key}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=kwargs.pop("stdout", log),
                                    stderr=log, start_new_session=True, preexec_fn=linux.set_parent_death_signal,
                                    **kwargs)
        self.processes[key] = proc
        return proc

    def _start_resolvers(self) -> None:
        for role, listen in (("isp", (ISP_RESOLVER, LAN_ROUTER)), ("vpn", (CORP_RESOLVER,))):
            log = self.workdir / f"dns-{role}.log"
            log.touch()
            proc = self._spawn(f"dnsd-{role}", ["ip", "netns", "exec", self.ns(role), sys.executable, str(DNSD),
                                               "--label", role, "--log", str(log), "--a", DNS_ANSWER_V4,
                                               "--aaaa", DNS_ANSWER_V6, *[f"--listen={a}" for a in listen]],
                               stdout=subprocess.PIPE)
            line = proc.stdout.readline() if proc.stdout else b""  # type: ignore[union-attr]
            if b"ready" not in line:
                raise DesktopError(f"dnsd in {role} did not start: {self.log_tail(f'dnsd-{role}')}")

    def dns_queries(self, role: str) -> list[dict]:
        """Every query the isp's or the vpn's resolver received so far."""
        path = self.workdir / f"dns-{role}.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def start_vpn_server(self) -> None:
        """The root's openvpn, chrooted, in the vpn namespace with the host's /dev/net/tun."""
        (self.root / "dev/net").mkdir(parents=True, exist_ok=True)
        (self.root / "dev/net/tun").touch()
        script = (f"mount --bind /dev/net/tun {self.root}/dev/net/tun && exec chroot {self.root} openvpn "
                  f"--dev tun0 --dev-type tun --proto udp --local {VPN_SERVER} --lport {OPENVPN_PORT} "
                  f"--secret /etc/openvpn/lab.key 0 --ifconfig {TUNNEL_REMOTE} {TUNNEL_LOCAL} "
                  "--cipher AES-256-CBC --data-ciphers AES-256-CBC --float --ping 1 --persist-tun --verb 3")
        self._spawn("openvpn-server", ["ip", "netns", "exec", self.ns("vpn"), "unshare", "--mount", "--propagation",
                                       "private", "sh", "-c", script])
        poll(lambda: "link local (bound)" in self.log_tail("openvpn-server", 20000), 10,
             f"the OpenVPN server ({self.log_tail('openvpn-server')})")

    def stop_vpn_server(self) -> None:
        proc = self.processes.pop("openvpn-server", None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def _boot(self) -> None:
        # Started in the laptop namespace, nspawn moves wlan0 into a private
        # network namespace of the container's own: only then does it give the
        # container CAP_NET_ADMIN and a writable /proc/sys/net, which NM needs.
        # nspawn waits for udev to initialise a moved interface unless /sys is
        # read-only (how it tells there is no udev, as here); a read-only bind
        # of this namespace's own /sys says so.
        # nsenter, not `ip netns exec`: that remounts /sys without the cgroup
        # tree nspawn needs.
        argv = ["nsenter", f"--net=/run/netns/{self.ns('lap')}", "unshare", "--mount", "--propagation", "private",
                "sh", "-c", 'mount -o remount,bind,ro /sys && exec "$@"', "nspawn",
                "systemd-nspawn", "--quiet", f"--directory={self.root}", f"--machine={self.tag}",
                "--register=no", "--keep-unit", "--private-network", f"--network-interface={WIFI}",
                # Unregistered, nspawn sets no device policy: the bound tun node is usable.
                "--bind=/dev/net/tun", f"--bind-ro={REPO}",
                *[f"--bind-ro={path}" for path in venv_python_home()],
                "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=passive", "--boot"]
        nspawn = self._spawn("nspawn", argv, env=dict(os.environ, SYSTEMD_NSPAWN_TMPFS_TMP="1"))
        self.leader = poll(lambda: self._container_init(nspawn), 20, "the container's PID 1")
        poll(lambda: self.shell("systemctl is-system-running", check=False).stdout.strip()
             in ("running", "degraded"), WAIT, "the container to finish booting")
        poll(lambda: self.nm_state(WIFI) == "connected", WAIT, f"NetworkManager to connect {WIFI}")

    def _container_init(self, nspawn: subprocess.Popen) -> int | None:
        """PID 1 of the container: the child of systemd-nspawn (nsenter, unshare and sh
        exec one another, so the process started is nspawn itself)."""
        if nspawn.poll() is not None:
            raise DesktopError(f"systemd-nspawn exited: {self.log_tail('nspawn')}")
        for pid in _children(nspawn.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
        return None

    # -- inside the container --------------------------------------------------

    def inside(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """A command in the booted container's namespaces (as its services see the system)."""
        assert self.leader is not None, "the container is not booted"
        return run(["nsenter", f"--target={self.leader}", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
                    "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", *argv],
                   check=check, timeout=timeout)

    def shell(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return self.inside(["sh", "-ec", script], **kwargs)

    def nm_state(self, device: str) -> str:
        done = self.inside(["nmcli", "-g", "GENERAL.STATE", "device", "show", device], check=False)
        return done.stdout.strip().split(" ", 1)[-1].strip("()") if done.returncode == 0 else ""

    def nmcli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return self.inside(["nmcli", "--wait", str(int(timeout)), *args], timeout=timeout + 5)

    def link_exists(self, name: str) -> bool:
        return self.inside(["ip", "link", "show", name], check=False).returncode == 0

    def resolvectl(self, *args: str) -> str:
        return self.inside(["resolvectl", *args]).stdout

    def run_cli(self, *args: str, config: str = "", timeout: float = 90.0) -> CliRun:
        """`leakcheck run --json` inside the container, from the read-only worktree."""
        path = self.root / "etc/leakcheck-lab.toml"
        path.write_text(config)
        started = time.monotonic()
        done = self.inside(["env", f"PYTHONPATH={REPO}", str(REPO / ".venv/bin/python"), "-m", "leakcheck", "run",
                            "--json", "--config", "/etc/leakcheck-lab.toml", *args], check=False, timeout=timeout)
        try:
            report = json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            report = None
        return CliRun(done.returncode, done.stdout, done.stderr, time.monotonic() - started, report)

    # -- teardown --------------------------------------------------------------

    def log_tail(self, key: str, size: int = 3000) -> str:
        try:
            return (self.workdir / f"{key}.log").read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def close(self) -> None:
        nspawn = self.processes.get("nspawn")
        if nspawn is not None and nspawn.poll() is None and self.leader is not None:
            # A clean poweroff first (seconds); SIGKILL below if it hangs.
            with contextlib.suppress(OSError):
                os.kill(self.leader, signal.SIGRTMIN + 4)  # systemd: poweroff
            with contextlib.suppress(subprocess.TimeoutExpired):
                nspawn.wait(timeout=10)
        for key, proc in list(self.processes.items()):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        self.processes.clear()
        for role in ("lap", "isp", "vpn"):
            delete_netns(self.ns(role))
        _remove_workdir(self.workdir)
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)


def _remove_workdir(workdir: Path) -> None:
    """Unmount the overlay root first: removing files through it would only hide
    them, and a mount left behind would keep the cached tree busy."""
    root = workdir / "root"
    if root.is_mount():
        run(["umount", "--lazy", str(root)], check=False)
    if root.is_mount():
        return  # never delete through a mounted root
    shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- NetworkManager profiles

def wifi_profile(*, dns_search: str = "") -> str:
    """The laptop's Wi-Fi: a static address on the hotel LAN, the hotel's resolver
    (DHCP would add nothing the test looks at). `dns_search` adds routing domains."""
    return f"""[connection]
id=wifi
uuid=6a3c6f1c-2d7e-4f0a-9b59-1d2b3c4d5e6f
type=ethernet
interface-name={WIFI}
autoconnect=true

[ipv4]
method=manual
address1={LAPTOP_LAN}/24,{LAN_ROUTER}
dns={LAN_ROUTER};
dns-search={dns_search}

[ipv6]
method=disabled
"""


def vpn_profile(*, dns_search: str = "", full: bool = True, on_silence: str = "ping-exit") -> str:
    """NetworkManager's OpenVPN profile (static key, a ping every second) with the
    corporate resolver on the tunnel. `on_silence` after 3 s without the server:
    "ping-exit" ends the connection (NM drops the VPN), "ping-restart" restarts
    openvpn, which NM's plugin always runs with --persist-tun.
    `full`: the VPN takes the default route. Otherwise it routes 0/1 + 128/1
    with never-default, as many admins configure it: every packet still goes
    into the tunnel, but NetworkManager leaves the Wi-Fi as DNS default route.
    `dns_search="~."` gives the tunnel link resolved's catch-all routing domain."""
    routes = "" if full else "route1=0.0.0.0/1\nroute2=128.0.0.0/1\n"
    return f"""[connection]
id=corp
uuid=0b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
type=vpn
autoconnect=false

[vpn]
service-type=org.freedesktop.NetworkManager.openvpn
connection-type=static-key
remote={VPN_SERVER}
port={OPENVPN_PORT}
proto-tcp=no
static-key=/etc/openvpn/lab.key
static-key-direction=1
local-ip={TUNNEL_LOCAL}
remote-ip={TUNNEL_REMOTE}
cipher=AES-256-CBC
dev=tun0
dev-type=tun
ping=1
{on_silence}=3

[vpn-secrets]

[ipv4]
method=auto
dns={CORP_RESOLVER};
dns-search={dns_search}
never-default={"false" if full else "true"}
{routes}
[ipv6]
method=ignore
"""
