"""Shared by every benchmark: what they record about the run (:func:`machine`: commit, torch,
CPU / GPU, threads, load) and how they time a call (:func:`time_calls`)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

# the source tree this pst runs from (a git checkout, or site-packages when installed)
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=_SOURCE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_commit() -> str:
    """Short hash of the commit pst runs from, with ``+dirty`` when tracked files other than
    benchmark results differ from it; "" when pst does not run from a git checkout."""
    top = _git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != _SOURCE_ROOT:
        return ""
    commit = _git("rev-parse", "--short", "HEAD") or ""
    # a benchmark run rewrites benchmarks/results/: results of one run are not a code change
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return f"{commit}+dirty" if commit and dirty else commit


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gpu_name() -> str | None:
    """The CUDA device's name, or None without one."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def machine(**extra: Any) -> dict[str, Any]:
    """What a benchmark's results depend on besides the code: commit (:func:`git_commit`),
    torch, Python, CPU model and cores, GPU, torch's thread count, the 1-minute load average
    at the start; then ``extra`` (peer versions, settings)."""
    return {"commit": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu_name(),
            "torch_threads": torch.get_num_threads(), "load_avg_1min_at_start": os.getloadavg()[0], **extra}


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


def time_calls(fn: Callable[[], Any], repeat: int, *, long_s: float = 2.0,
               device: torch.device | str | None = None) -> Timing:
    """One warm-up call, then ``repeat`` timed calls; one timed call instead when the warm-up
    took longer than ``long_s`` seconds (warm-up effects are then small against the call).
    ``repeat=0``: the first call is the only one (its time is also the median).

    On a CUDA ``device`` every call is timed by CUDA events around it, which wait for the
    device's work (the host returns from a kernel launch before the kernel ends); elsewhere
    by the wall clock."""
    once = _cuda_call if device is not None and torch.device(device).type == "cuda" else _host_call
    first, out = once(fn)
    runs = [once(fn)[0] for _ in range(0 if repeat <= 0 else 1 if first > long_s else repeat)]
    return Timing(first, statistics.median(runs) if runs else first, runs or [first], out)


def _host_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _cuda_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    torch.cuda.synchronize()  # earlier work is not counted
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3, out


def write_results(out_dir: str | os.PathLike, stem: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``<out_dir>/<stem>.json`` and ``<stem>.md``, each written atomically (the folder is made
    when missing); returns both paths, after logging them."""
    import logging

    from pst.io import write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / f"{stem}.json", out / f"{stem}.md"
    write_json(paths[0], data)
    write_text(paths[1], markdown)
    logging.getLogger(__name__).info("wrote %s and %s", *paths)
    return paths
