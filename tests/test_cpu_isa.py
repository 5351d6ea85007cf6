"""The CPU loops exist in AVX-512, AVX2 and baseline variants (csrc/cpu/simd.cpp); the one
the machine supports runs by default. Every variant must give bit-identical results, so each
is run in a subprocess capped with PST_CPU_ISA and compared with the others."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import pst

SCRIPT = r"""
import sys, numpy as np, torch
import pst, pst.cluster as pc
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(c, 0.6, size=(700, 5)) for c in (-3.0, 0.0, 3.0)])
X[::7] += rng.uniform(-1e-9, 1e-9, size=X[::7].shape)
ms = pc.MeanShift(bandwidth=1.1).fit(X)
ms32 = pc.MeanShift(bandwidth=1.1).fit(X.astype(np.float32))
pp = pc.MeanShiftPP(bandwidth=0.9).fit(X)
pp32 = pc.MeanShiftPP(bandwidth=0.9).fit(X.astype(np.float32))
# values on cell borders, negative zero and points far out
edge = np.array([[0.9 * k, -0.0, -0.9 * k] for k in range(-40, 41)] + [[1e8, -1e8, 3.0]], dtype=np.float64)
ppe = pc.MeanShiftPP(bandwidth=0.9, max_iter=1).fit(edge)
np.savez(sys.argv[1], isa=pst.cpu_isa(), ms=ms.cluster_centers_, msl=ms.labels_, ms32=ms32.cluster_centers_,
         pp=pp.cluster_centers_, ppl=pp.labels_, pp32=pp32.cluster_centers_, ppe=ppe.labels_,
         ppec=ppe.cluster_centers_)
"""


def _run(tmp_path, isa: str | None) -> dict:
    env = dict(os.environ)
    env.pop("PST_CPU_ISA", None)
    if isa is not None:
        env["PST_CPU_ISA"] = isa
    out = tmp_path / f"{isa or 'default'}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env, timeout=300)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_variants_are_bit_identical(tmp_path):
    best = _run(tmp_path, None)
    assert str(best["isa"]) == pst.cpu_isa()
    for isa in ("avx2", "baseline"):
        other = _run(tmp_path, isa)
        if isa == "baseline":
            assert str(other["isa"]) == "baseline"
        for key in best:
            if key != "isa":
                np.testing.assert_array_equal(other[key], best[key], err_msg=f"{isa} vs {best['isa']}: {key}")


def test_cpu_isa_names_a_variant():
    assert pst.cpu_isa() in ("avx512", "avx2", "baseline")


@pytest.mark.parametrize("bad", ["", "sse9"])
def test_unknown_cap_keeps_the_best_variant(tmp_path, bad):
    env = dict(os.environ, PST_CPU_ISA=bad)
    got = subprocess.run([sys.executable, "-c", "import pst; print(pst.cpu_isa())"], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout.strip()
    assert got == pst.cpu_isa()
