"""Shared fixtures. Devices are a test parameter: CUDA tests skip (not fail) without a GPU
or without pst's CUDA kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pst

CUDA_OK = torch.cuda.is_available() and pst.has_cuda()
CUDA_SKIP = pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA device and pst built with CUDA kernels")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[CUDA_SKIP, pytest.mark.cuda])]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
