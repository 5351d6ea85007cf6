"""Shared by the benchmarks: what they record about the run (commit, CPU model, peer versions)
and how they time a call."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple


def git_commit() -> str:
    """Short hash of HEAD, or "" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def dist_versions(*names: str) -> dict[str, str | None]:
    """Installed versions of the named distributions (None where one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


class Timing(NamedTuple):
    """first: the untimed warm-up call, timed (in a fresh process the first call of the op);
    median of ``runs``, the timed calls after it; out: the warm-up call's result."""

    first: float
    median: float
    runs: list[float]
    out: Any


def time_calls(fn: Callable[[], Any], repeat: int, *, long_s: float = 2.0) -> Timing:
    """One warm-up call, then ``repeat`` timed calls; one timed call instead when the warm-up
    took longer than ``long_s`` seconds (warm-up effects are then small against the call).
    ``repeat=0``: the first call is the only one (its time is also the median)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(0 if repeat <= 0 else 1 if first > long_s else repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return Timing(first, statistics.median(runs) if runs else first, runs or [first], out)
