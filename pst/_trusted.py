"""Skipping the CUDA ops' value checks where the caller vouches for the values.

A CUDA op that checks the values of its index inputs (offsets, segment ids, weights) must copy
them to the host, which waits for the device. :func:`trusted_inputs` turns those checks off for
the calling thread, for callers that build these inputs themselves and check them once
(:func:`pst.cluster.cluster_instances`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from pst._ops import ops

__all__ = ["trusted_inputs"]


@contextlib.contextmanager
def trusted_inputs() -> Iterator[None]:
    """Inside this block (on this thread) the CUDA ops skip the value checks that wait for the
    device: offsets (0 first, non-decreasing, N last), seed segments in range, finite and
    non-negative anchor weights are then the caller's promise; shapes, dtypes and devices are
    still checked. CPU kernels check everything either way (there a check costs no wait).
    Nests; restores the previous setting on exit."""
    previous = ops._trust_inputs(True)
    try:
        yield
    finally:
        ops._trust_inputs(previous)
