"""The test oracle of pst.morph: :func:`pst.morph.refine` by its definition, one instance at a
time on full-size masks with scipy.ndimage, and a canonical numbering of label images.

It is kept plain and apart from the package. ``pst bench morph`` has its own loops (OpenCV on
full masks and on crops, scipy), which are its peers and are tuned for speed; tests that check
those peers against pst import them from ``pst.bench.morph`` by name.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

import pst.morph as pm

__all__ = ["refine_reference", "canonical"]


def refine_reference(instances: np.ndarray, *, open_radius: int = 0, close_radius: int = 0, shape: str = "square",
                     fill_holes: bool = False, min_size: int = 0, largest_component: bool = False,
                     connectivity: int = 8) -> np.ndarray:
    """``pst.morph.refine(instances, ...)`` for integer numpy ``[H, W]`` or ``[B, H, W]``.

    Each instance's mask goes through the steps in order (pixels outside the image never count:
    an erosion sees them set, a dilation unset, as OpenCV's default border does); then every
    pixel that its own instance keeps stays, and a pixel claimed only by other instances goes
    to the lowest id among them.
    """
    kw = dict(open_radius=open_radius, close_radius=close_radius, shape=shape, fill_holes=fill_holes,
              min_size=min_size, largest_component=largest_component, connectivity=connectivity)
    if instances.ndim == 3:
        return np.stack([refine_reference(x, **kw) for x in instances]) if len(instances) else instances.copy()
    steps = [("erode", open_radius), ("dilate", open_radius)] if open_radius > 0 else []
    steps += [("dilate", close_radius), ("erode", close_radius)] if close_radius > 0 else []
    objects = ndi.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    background = ndi.generate_binary_structure(2, 1 if connectivity == 8 else 2)
    kept: dict[int, np.ndarray] = {}
    for k in sorted(int(v) for v in np.unique(instances) if v != 0):
        m = instances == k
        for op, r in steps:
            se = pm.structuring_element(r, shape).numpy().astype(bool)
            m = ndi.binary_erosion(m, se, border_value=1) if op == "erode" else ndi.binary_dilation(m, se)
        if fill_holes:
            m = ndi.binary_fill_holes(m, structure=background)
        if min_size > 0 or largest_component:
            lab, n = ndi.label(m, structure=objects)
            size = np.bincount(lab.ravel(), minlength=n + 1)
            size[0] = 0
            ok = size >= max(min_size, 1)
            if largest_component and ok.any():  # ties: the first in raster order (scipy's numbering)
                ok = np.arange(n + 1) == int(np.argmax(np.where(ok, size, -1)))
            m = ok[lab]
        kept[k] = m
    out = np.zeros_like(instances)
    for k, m in kept.items():
        out[m & (instances == k)] = k
    for k, m in kept.items():  # ascending ids: the lowest claims first
        out[m & (out == 0)] = k
    return out


def canonical(labels: np.ndarray) -> np.ndarray:
    """``labels`` (0 = background) renumbered 1..n in the raster order of each label's first
    pixel: two labellings of one partition become equal."""
    flat = labels.ravel()
    values, first = np.unique(flat, return_index=True)
    by_first = [int(v) for _, v in sorted(zip(first.tolist(), values.tolist())) if v != 0]
    new = {v: i + 1 for i, v in enumerate(by_first)}
    return np.array([new.get(int(v), 0) for v in flat], dtype=np.int64).reshape(labels.shape)
