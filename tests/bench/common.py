"""What every benchmark shares: how child Pythons are started (bytecode
cache), medians, and the floor a run is compared with."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
FLOOR_CODE = "import pyroute2, psutil"  # the floor: the interpreter plus the two libraries leakcheck used


def python_env(cold: bool) -> dict[str, str]:
    """Environment for child Pythons. Warm: bytecode cached under a private
    prefix (PYTHONDONTWRITEBYTECODE, often set in CI, would recompile
    leakcheck on every start and measure the compiler, not leakcheck).
    Cold: no cache for leakcheck's own modules (site-packages keep the .pyc
    pip wrote)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cold:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / f"leakcheck-bench-pycache-{os.getuid()}")
    return env


def cache_note(cold: bool) -> str:
    if cold:
        return "bytecode cache: cold (PYTHONDONTWRITEBYTECODE=1, leakcheck compiled at every start)"
    return "bytecode cache: warm (PYTHONPYCACHEPREFIX, warmed by a first run that is not counted)"


def timed_process(argv: Sequence[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit status) of one child process (RSS from wait4).
    `python -m` puts `cwd` first on sys.path: it decides which tree runs."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def floor_argv(prefix: Sequence[str] = ()) -> list[str]:
    return [*prefix, sys.executable, "-c", FLOOR_CODE]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
