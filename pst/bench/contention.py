"""How the ops slow down when another process keeps every core busy.

``pst bench contention`` (or ``python benchmarks/bench_contention.py``) times each op with
1 and 2 threads (``torch.set_num_threads``), first on the otherwise idle machine, then while
a second process (torch matrix products on as many threads as there are cores, like a
training job) keeps all cores busy. It reports per op the ratio busy-2-threads / idle-1-thread:
what a user who leaves torch's thread count alone pays on a busy machine against the plain
single-threaded run. Target (issue 13): at most 1.2. Writes ``contention.json`` and
``contention.md`` into ``--out`` (default ``benchmarks/results``).

Ops: ``cluster_instances`` (mean shift and MeanShift++) on a synthetic 8x256x512 embedding
frame with 30 instances, ``connected_components`` of the foreground of two 1024x2048
instance maps, and ``MeanShift(bin_seeding=True)`` on 2e4 blobs in 8 dimensions.
The results mean little when the machine is not otherwise idle: the load average at the
start is recorded.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

import pst.cluster as pc
import pst.morph as pm
from pst.bench._common import machine, time_calls
from pst.bench.cluster import QUANTILE, THING_CLASSES, blobs, instance_frame
from pst.bench.morph import make_instance_maps
from pst.io import atomic_open, write_json

log = logging.getLogger(__name__)

TARGET = 1.2

# The load: matrix products on every core, until killed.
LOAD = """
import os, torch
torch.set_num_threads(os.cpu_count() or 1)
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def ops(quick: bool) -> dict[str, Callable[[], Any]]:
    h, w = (128, 256) if quick else (256, 512)
    emb, sem, obj, _ = instance_frame(h, w, 8, n_instances=30)
    maps = make_instance_maps(2, 256 if quick else 1024, 512 if quick else 2048, 30, 0)
    fg = torch.from_numpy(maps > 0)
    X, _ = blobs(2000 if quick else 20000, 8, 0)
    bw = pc.estimate_bandwidth(X, quantile=QUANTILE, n_samples=5000, random_state=0)
    kw = dict(thing_classes=THING_CLASSES, bandwidth=0.5, merge_distance=1.5)
    return {
        "cluster_instances(meanshift)": lambda: pc.cluster_instances(emb, sem, obj, method="meanshift", **kw),
        "cluster_instances(meanshift++)": lambda: pc.cluster_instances(emb, sem, obj, method="meanshift++", **kw),
        "connected_components 8-conn": lambda: pm.connected_components(fg, 8),
        "connected_components 4-conn": lambda: pm.connected_components(fg, 4),
        "MeanShift(bin_seeding) blobs 2e4x8": lambda: pc.MeanShift(bandwidth=bw, bin_seeding=True).fit(X),
    }


def measure(fns: dict[str, Callable[[], Any]], threads: int, repeat: int) -> dict[str, dict[str, Any]]:
    torch.set_num_threads(threads)
    out = {}
    for name, fn in fns.items():
        t = time_calls(fn, repeat)
        out[name] = {"s": t.median, "runs": t.runs, "first_s": t.first}
        log.info("%s, %d thread(s): %.4f s", name, threads, t.median)
    return out


def markdown(info: dict[str, Any], res: dict[str, dict[str, dict[str, Any]]]) -> str:
    cols = ["idle 1", "idle 2", "busy 1", "busy 2"]
    out = ["# Ops under contention", "",
           f"{info['cpu']}, {info['cores']} cores (load average {info['load_avg_1min_at_start']:.1f} at start), "
           f"torch {info['torch']}, commit {info['commit']}. `busy`: a second process runs torch matrix products on "
           f"{info['cores']} threads throughout. Times in ms (medians of {info['repeat']} runs after a warm-up); "
           "the columns are the setting and torch's thread count.", "",
           "| op | " + " | ".join(cols) + f" | busy 2 / idle 1 (target <= {TARGET:g}) | busy 1 / idle 1 | idle 2 / idle 1 |",
           "|---|" + "---:|" * len(cols) + "---|---:|---:|"]
    for op in res["idle 1"]:
        t = {c: res[c][op]["s"] for c in cols}
        r = t["busy 2"] / t["idle 1"]
        out.append(f"| {op} | " + " | ".join(f"{t[c] * 1e3:.1f}" for c in cols)
                   + f" | {r:.2f} {'met' if r <= TARGET else 'NOT met'} | {t['busy 1'] / t['idle 1']:.2f} | "
                   f"{t['idle 2'] / t['idle 1']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pst bench contention", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results", help="output folder (default: benchmarks/results)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per op and setting (default: 7)")
    p.add_argument("--quick", action="store_true", help="small inputs (a smoke run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    info = machine(repeat=args.repeat)
    fns = ops(args.quick)
    default_threads = torch.get_num_threads()
    res: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for threads in (1, 2):
            res[f"idle {threads}"] = measure(fns, threads, args.repeat)
        load = subprocess.Popen([sys.executable, "-c", LOAD])
        try:
            time.sleep(2.0)  # let the load reach its loop
            for threads in (1, 2):
                res[f"busy {threads}"] = measure(fns, threads, args.repeat)
        finally:
            load.terminate()
            load.wait(timeout=30)
    finally:
        torch.set_num_threads(default_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "contention.json", {"machine": info, "target": TARGET, "results": res})
    with atomic_open(out / "contention.md", "w") as f:
        f.write(markdown(info, res))
    log.info("wrote %s and %s", out / "contention.json", out / "contention.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
