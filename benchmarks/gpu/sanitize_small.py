"""Every CUDA op of pst once on small inputs, checked against its CPU kernel.

Run under compute-sanitizer (memcheck, racecheck, synccheck) by run_gpu.sh; exits non-zero on a
mismatch. Sizes are small and odd so that partial tiles, partial warps and empty segments all
occur. --dry-run runs the same calls with CPU tensors on both sides (checks the script without a GPU).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import pst
from pst._ops import has_kernel, ops
from pst._trusted import trusted_inputs

DEV = "cuda"


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


def main(argv=None) -> int:
    global DEV
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="CPU tensors on both sides")
    args = p.parse_args(argv)
    if args.dry_run:
        DEV = "cpu"
    elif not (torch.cuda.is_available() and pst.has_cuda()):
        print("no CUDA device or pst built without CUDA kernels", file=sys.stderr)
        return 2
    key = DEV.upper()
    rng = np.random.default_rng(0)
    ok = True
    x = torch.tensor(rng.standard_normal((203, 8)), dtype=torch.float32)
    off = offsets([100, 0, 67, 36])
    c = torch.tensor(rng.standard_normal((9, 8)), dtype=torch.float32)
    coff = offsets([4, 0, 0, 5])
    ok &= same("nearest_center", ops.nearest_center(x.to(DEV), off.to(DEV), c.to(DEV), coff.to(DEV)),
               ops.nearest_center(x, off, c, coff))
    seeds, seg = x[::7].contiguous(), torch.tensor(rng.integers(0, 4, size=x[::7].shape[0]))
    ok &= same("mean_shift", ops.mean_shift(x.to(DEV), off.to(DEV), seeds.to(DEV), seg.to(DEV), 2.5, 50, 1e-4),
               ops.mean_shift(x, off, seeds, seg, 2.5, 50, 1e-4), close=True)
    x40 = torch.tensor(rng.standard_normal((70, 40)))
    ok &= same("mean_shift_d40", ops.mean_shift(x40.to(DEV), offsets([70]).to(DEV), x40[:5].to(DEV),
                                                 torch.zeros(5, dtype=torch.long).to(DEV), 9.0, 20, 1e-6),
               ops.mean_shift(x40, offsets([70]), x40[:5], torch.zeros(5, dtype=torch.long), 9.0, 20, 1e-6),
               close=True)
    w = torch.tensor(rng.integers(1, 4, size=37).astype(float))
    cm = torch.tensor(rng.integers(0, 4, size=(37, 3)).astype(float))
    sg = torch.tensor(rng.integers(0, 3, size=37))
    ok &= same("merge_modes", ops.merge_modes(cm.to(DEV), w.to(DEV), sg.to(DEV), 1.1), ops.merge_modes(cm, w, sg, 1.1))
    wt = torch.tensor(rng.uniform(0, 1, size=203)) * (torch.rand(203, generator=torch.Generator().manual_seed(0)) > 0.2)
    xy = torch.tensor(rng.integers(0, 15, size=(203, 2)).astype(float))
    ok &= same("sample_anchors", ops.sample_anchors(wt.to(DEV), xy.to(DEV), off.to(DEV), 9, 2.0, 5),
               ops.sample_anchors(wt, xy, off, 9, 2.0, 5))
    ok &= same("grid_mean_shift", ops.grid_mean_shift(x.double().to(DEV), off.to(DEV), 0.9, 1, 0.0),
               ops.grid_mean_shift(x.double(), off, 0.9, 1, 0.0), close=True)
    ok &= same("grid_mean_shift_iter", ops.grid_mean_shift(x.double().to(DEV), off.to(DEV), 3.0, 5, 0.0)[1:3],
               ops.grid_mean_shift(x.double(), off, 3.0, 5, 0.0)[1:3])
    if has_kernel("knn_graph", key):
        xi = torch.tensor(rng.integers(0, 3, size=(131, 3)).astype(float))
        ok &= same("knn_graph", ops.knn_graph(xi.to(DEV), 6), ops.knn_graph(xi, 6))
    if has_kernel("connected_components", key):
        m = torch.tensor(rng.uniform(size=(2, 37, 45)) < 0.55)
        for conn in (4, 8):
            ok &= same(f"connected_components_{conn}", ops.connected_components(m.to(DEV), conn),
                       ops.connected_components(m, conn))
    if has_kernel("morph_refine", key):
        inst = torch.tensor(rng.integers(0, 5, size=(2, 41, 53)), dtype=torch.int32)
        for args in [(1, 1, True, True, 3, True, 8), (2, 0, False, False, 0, False, 4), (0, 2, False, True, 5, False, 8)]:
            ok &= same(f"morph_refine{args}", ops.morph_refine(inst.to(DEV), *args), ops.morph_refine(inst, *args))
        big = torch.tensor(rng.integers(0, 3, size=(1, 9, 300)), dtype=torch.int64)
        big = torch.where(big > 0, big + 2**62, big)  # large ids
        ok &= same("morph_refine_int64", ops.morph_refine(big.to(DEV), 1, 3, False, True, 2, False, 8),
                   ops.morph_refine(big, 1, 3, False, True, 2, False, 8))
    if has_kernel("agglomerative_tree", key):
        xa = torch.tensor(rng.standard_normal((60, 3)))
        _, idx = ops.knn_graph(xa, 5)
        rp, cl = torch.arange(0, 60 * 5 + 1, 5), idx.reshape(-1).contiguous()
        tree = ops.agglomerative_tree(xa.to(DEV), rp.to(DEV), cl.to(DEV), "average", 1)
        ok &= same("agglomerative_tree", tree, ops.agglomerative_tree(xa, rp, cl, "average", 1))
        ok &= same("agglomerative_labels", ops.agglomerative_labels(tree[0], 60, 50),
                   ops.agglomerative_labels(tree[0].cpu(), 60, 50))
    with trusted_inputs():  # the no-host-copy paths
        ok &= same("mean_shift_trusted",
                   ops.mean_shift(x.to(DEV), off.to(DEV), seeds.to(DEV), seg.to(DEV), 2.5, 50, 1e-4),
                   ops.mean_shift(x, off, seeds, seg, 2.5, 50, 1e-4), close=True)
        ok &= same("sample_anchors_trusted", ops.sample_anchors(wt.to(DEV), xy.to(DEV), off.to(DEV), 9, 2.0, 5),
                   ops.sample_anchors(wt, xy, off, 9, 2.0, 5))
    if DEV == "cuda":
        torch.cuda.synchronize()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
