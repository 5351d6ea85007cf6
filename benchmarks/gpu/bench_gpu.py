"""GPU benchmarks of pst's compiled ops: the CUDA kernels against the CPU kernels, same inputs.

Each case checks agreement first (reported, never hidden), then times median and spread over
repeats (CUDA timings synchronise the device). Writes JSON to
benchmarks/results/gpu_<gpu name>.json (or --out).

Cases: cluster_instances at 8 x 256 x 512 (D = 8, ~20 % thing pixels; meanshift and meanshift++),
morph refine at 1024 x 2048, connected components at 1024 x 2048, MeanShiftPP (grid_mean_shift op)
at n = 1e6, d = 8.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import pst
from pst._ops import has_kernel, ops
from pst.cluster import cluster_instances

ROOT = Path(__file__).resolve().parents[2]


def timeit(fn, repeats: int, cuda: bool) -> dict:
    fn()  # warm-up (and lazy initialisation)
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def scene(b: int, h: int, w: int, d: int, seed: int):
    """Embeddings [b, d, h, w], semantic [b, h, w] (~20 % thing pixels in rectangles of classes 1..3)."""
    g = np.random.default_rng(seed)
    sem = np.zeros((b, h, w), np.int64)
    emb = 0.05 * g.standard_normal((b, d, h, w)).astype(np.float32)
    for i in range(b):
        covered = 0
        while covered < 0.2 * h * w:
            hh, ww = g.integers(h // 16, h // 4), g.integers(w // 16, w // 4)
            y, x = g.integers(0, h - hh), g.integers(0, w - ww)
            sem[i, y:y + hh, x:x + ww] = g.integers(1, 4)
            emb[i, :, y:y + hh, x:x + ww] += g.uniform(-3, 3, size=(d, 1, 1)).astype(np.float32)
            covered = int((sem[i] > 0).sum())
    return torch.from_numpy(emb), torch.from_numpy(sem)


def blobs_mask(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = np.random.default_rng(seed)
    noise = torch.from_numpy(g.standard_normal((b, 1, h // 8, w // 8)).astype(np.float32))
    up = torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return up > 0.3


def instance_map(h: int, w: int, seed: int) -> torch.Tensor:
    m = blobs_mask(1, h, w, seed)
    return ops.connected_components(m, 8).to(torch.int64)


def case_cluster(repeats: int) -> list[dict]:
    emb, sem = scene(8, 256, 512, 8, 0)
    out = []
    for method in ("meanshift", "meanshift++"):
        kw = dict(thing_classes=[1, 2, 3], method=method, bandwidth=0.5, seed=0)
        cpu = cluster_instances(emb, sem, None, **kw)
        gpu_in = (emb.cuda(), sem.cuda())
        gpu = cluster_instances(*gpu_in, None, **kw)
        agree = float((gpu.cpu() == cpu).float().mean())
        out.append({
            "case": f"cluster_instances[{method}] 8x256x512 D=8",
            "agreement": agree,
            "cpu": timeit(lambda: cluster_instances(emb, sem, None, **kw), max(1, repeats // 3), False),
            "cuda": timeit(lambda: cluster_instances(*gpu_in, None, **kw), repeats, True),
        })
    return out


def case_morph(repeats: int) -> list[dict]:
    inst = instance_map(1024, 2048, 1)
    args = (2, 2, True, True, 50, False, 8)
    cpu = ops.morph_refine(inst, *args)
    row = {"case": "morph_refine 1024x2048 open 2 close 2 disk fill min_size 50",
           "instances": int(inst.max()), "cpu": timeit(lambda: ops.morph_refine(inst, *args), repeats, False)}
    if has_kernel("morph_refine", "CUDA"):
        x = inst.cuda()
        row["agreement"] = float((ops.morph_refine(x, *args).cpu() == cpu).float().mean())
        row["cuda"] = timeit(lambda: ops.morph_refine(x, *args), repeats, True)
    else:
        row["cuda"] = None
        row["note"] = "no CUDA kernel for morph_refine in this build"
    return [row]


def case_ccl(repeats: int) -> list[dict]:
    m = blobs_mask(1, 1024, 2048, 2)
    out = []
    for conn in (4, 8):
        cpu = ops.connected_components(m, conn)
        x = m.cuda()
        out.append({
            "case": f"connected_components 1024x2048 connectivity {conn}",
            "components": int(cpu.max()),
            "agreement": float((ops.connected_components(x, conn).cpu() == cpu).float().mean()),
            "cpu": timeit(lambda: ops.connected_components(m, conn), repeats, False),
            "cuda": timeit(lambda: ops.connected_components(x, conn), repeats, True),
        })
    return out


def case_grid(repeats: int) -> list[dict]:
    g = np.random.default_rng(3)
    n, d = 1_000_000, 8
    centres = g.uniform(-10, 10, size=(50, d))
    x = torch.from_numpy((centres[g.integers(0, 50, size=n)] + 0.3 * g.standard_normal((n, d))).astype(np.float32))
    off = torch.tensor([0, n])
    cpu = ops.grid_mean_shift(x, off, 0.5, 300, 5e-4)
    xc, oc = x.cuda(), off.cuda()
    gpu = ops.grid_mean_shift(xc, oc, 0.5, 300, 5e-4)
    return [{
        "case": "MeanShiftPP (grid_mean_shift) n=1e6 d=8 h=0.5",
        "modes_cpu": int(cpu[0].shape[0]), "modes_cuda": int(gpu[0].shape[0]),
        "n_iter_cpu": int(cpu[4]), "n_iter_cuda": int(gpu[4]),
        "label_agreement": float((gpu[3].cpu() == cpu[3]).float().mean()),
        "cpu": timeit(lambda: ops.grid_mean_shift(x, off, 0.5, 300, 5e-4), max(1, repeats // 3), False),
        "cuda": timeit(lambda: ops.grid_mean_shift(xc, oc, 0.5, 300, 5e-4), repeats, True),
    }]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    if not (torch.cuda.is_available() and pst.has_cuda()):
        raise SystemExit("needs a CUDA device and pst built with CUDA kernels")
    torch.manual_seed(0)
    name = torch.cuda.get_device_name()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    rows = []
    for case in (case_ccl, case_grid, case_cluster, case_morph):
        try:
            rows += case(args.repeats)
        except Exception as exc:  # keep the other cases; the failure is recorded
            rows.append({"case": case.__name__, "error": f"{type(exc).__name__}: {exc}"})
        for r in rows[-2:]:
            print(json.dumps(r), flush=True)
    for r in rows:
        if r.get("cpu") and r.get("cuda"):
            r["speedup_cuda_over_cpu"] = r["cpu"]["median_s"] / r["cuda"]["median_s"]
    result = {"gpu": name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
              "cpu_threads": torch.get_num_threads(), "machine": platform.platform(), "results": rows}
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
