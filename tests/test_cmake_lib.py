"""The CMake build of the op library (libpst_ops.so) loads into a fresh torch and runs an op.

`make test` builds it and passes its path in PST_CMAKE_LIB. It runs in a subprocess: the
same ops are already registered in this process by pst._C.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LIB = os.environ.get("PST_CMAKE_LIB")

SCRIPT = r"""
import sys, torch
torch.ops.load_library(sys.argv[1])
x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]], dtype=torch.float64)
off = torch.tensor([0, 4])
idx, sqd = torch.ops.pst.nearest_center(x, off, x[[0, 2]].contiguous(), torch.tensor([0, 2]))
ref = torch.cdist(x, x[[0, 2]]).argmin(1)
assert idx.tolist() == ref.tolist(), (idx, ref)
modes, counts, iters = torch.ops.pst.mean_shift(x, off, x, torch.zeros(4, dtype=torch.long), 1.0, 100, 1e-6)
assert counts.tolist() == [2, 2, 2, 2], counts
torch.testing.assert_close(modes[0], x[:2].mean(0))
print("ok")
"""


@pytest.mark.skipif(not LIB, reason="PST_CMAKE_LIB not set (make test builds the CMake library and sets it)")
def test_cmake_op_library_loads_and_runs():
    assert os.path.exists(LIB), f"PST_CMAKE_LIB={LIB} does not exist"
    res = subprocess.run([sys.executable, "-c", SCRIPT, LIB], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
