"""pst._trusted.trusted_inputs: a thread-local switch of the CUDA ops' value checks (CPU kernels
check either way)."""

from __future__ import annotations

import threading

import pytest
import torch

from pst._ops import ops
from pst._trusted import trusted_inputs


def _state() -> bool:
    previous = ops._trust_inputs(False)
    ops._trust_inputs(previous)
    return previous


def test_nests_and_restores():
    assert _state() is False
    with trusted_inputs():
        assert _state() is True
        with trusted_inputs():
            assert _state() is True
        assert _state() is True
    assert _state() is False
    with pytest.raises(KeyError):
        with trusted_inputs():
            raise KeyError("x")
    assert _state() is False


def test_per_thread():
    seen = []
    with trusted_inputs():
        t = threading.Thread(target=lambda: seen.append(_state()))
        t.start()
        t.join()
    assert seen == [False]


def test_cpu_kernels_still_check_values():
    x = torch.randn(10, 2)
    with trusted_inputs():
        with pytest.raises(RuntimeError, match=r"offsets\[-1\] should equal the number of points"):
            ops.mean_shift(x, torch.tensor([0, 11]), x[:2], torch.zeros(2, dtype=torch.long), 1.0, 10, 0.0)
        with pytest.raises(RuntimeError, match="weights should be finite"):
            ops.sample_anchors(torch.tensor([1.0, -1.0]), torch.zeros(2, 2), torch.tensor([0, 2]), 1, 0.0, 0)
