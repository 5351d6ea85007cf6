"""Every CUDA op of pst once on small inputs, checked against its CPU kernel.

Run under compute-sanitizer (memcheck, racecheck) by run_gpu.sh; exits non-zero on a mismatch.
Sizes are small and odd so that partial tiles, partial warps and empty segments all occur.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

import pst
from pst._ops import has_kernel, ops


def offsets(counts) -> torch.Tensor:
    return torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.long)


def same(name: str, got, ref, *, close: bool = False) -> bool:
    got = got if isinstance(got, (tuple, list)) else (got,)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    ok = True
    for a, b in zip(got, ref):
        a = a.cpu()
        if close and a.is_floating_point():
            ok &= bool(torch.allclose(a, b, rtol=1e-5, atol=1e-6))
        else:
            ok &= bool(torch.equal(a, b))
    print(f"{name}: {'ok' if ok else 'MISMATCH'}", flush=True)
    return ok


def main() -> int:
    if not (torch.cuda.is_available() and pst.has_cuda()):
        print("no CUDA device or pst built without CUDA kernels", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    ok = True
    x = torch.tensor(rng.standard_normal((203, 8)), dtype=torch.float32)
    off = offsets([100, 0, 67, 36])
    c = torch.tensor(rng.standard_normal((9, 8)), dtype=torch.float32)
    coff = offsets([4, 0, 0, 5])
    ok &= same("nearest_center", ops.nearest_center(x.cuda(), off.cuda(), c.cuda(), coff.cuda()),
               ops.nearest_center(x, off, c, coff))
    seeds, seg = x[::7].contiguous(), torch.tensor(rng.integers(0, 4, size=x[::7].shape[0]))
    ok &= same("mean_shift", ops.mean_shift(x.cuda(), off.cuda(), seeds.cuda(), seg.cuda(), 2.5, 50, 1e-4),
               ops.mean_shift(x, off, seeds, seg, 2.5, 50, 1e-4), close=True)
    x40 = torch.tensor(rng.standard_normal((70, 40)))
    ok &= same("mean_shift_d40", ops.mean_shift(x40.cuda(), offsets([70]).cuda(), x40[:5].cuda(),
                                                 torch.zeros(5, dtype=torch.long).cuda(), 9.0, 20, 1e-6),
               ops.mean_shift(x40, offsets([70]), x40[:5], torch.zeros(5, dtype=torch.long), 9.0, 20, 1e-6),
               close=True)
    w = torch.tensor(rng.integers(1, 4, size=37).astype(float))
    cm = torch.tensor(rng.integers(0, 4, size=(37, 3)).astype(float))
    sg = torch.tensor(rng.integers(0, 3, size=37))
    ok &= same("merge_modes", ops.merge_modes(cm.cuda(), w.cuda(), sg.cuda(), 1.1), ops.merge_modes(cm, w, sg, 1.1))
    wt = torch.tensor(rng.uniform(0, 1, size=203)) * (torch.rand(203, generator=torch.Generator().manual_seed(0)) > 0.2)
    xy = torch.tensor(rng.integers(0, 15, size=(203, 2)).astype(float))
    ok &= same("sample_anchors", ops.sample_anchors(wt.cuda(), xy.cuda(), off.cuda(), 9, 2.0, 5),
               ops.sample_anchors(wt, xy, off, 9, 2.0, 5))
    ok &= same("grid_mean_shift", ops.grid_mean_shift(x.double().cuda(), off.cuda(), 0.9, 1, 0.0),
               ops.grid_mean_shift(x.double(), off, 0.9, 1, 0.0), close=True)
    ok &= same("grid_mean_shift_iter", ops.grid_mean_shift(x.double().cuda(), off.cuda(), 3.0, 5, 0.0)[1:3],
               ops.grid_mean_shift(x.double(), off, 3.0, 5, 0.0)[1:3])
    if has_kernel("knn_graph", "CUDA"):
        xi = torch.tensor(rng.integers(0, 3, size=(131, 3)).astype(float))
        ok &= same("knn_graph", ops.knn_graph(xi.cuda(), 6), ops.knn_graph(xi, 6))
    if has_kernel("connected_components", "CUDA"):
        m = torch.tensor(rng.uniform(size=(2, 37, 45)) < 0.55)
        for conn in (4, 8):
            ok &= same(f"connected_components_{conn}", ops.connected_components(m.cuda(), conn),
                       ops.connected_components(m, conn))
    if has_kernel("morph_refine", "CUDA"):
        inst = torch.tensor(rng.integers(0, 5, size=(2, 41, 53)), dtype=torch.int32)
        ok &= same("morph_refine", ops.morph_refine(inst.cuda(), 1, 1, True, True, 3, True, 8),
                   ops.morph_refine(inst, 1, 1, True, True, 3, True, 8))
    torch.cuda.synchronize()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
