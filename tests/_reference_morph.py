"""Reference implementations of pst.morph for the tests: :func:`pst.morph.refine` as a Python
loop over instances with OpenCV or scipy.ndimage (full-size masks, or bounding-box crops), and
a canonical numbering of label images.

The test oracles live here, apart from the package: ``pst bench morph`` times loops of the
same kind as its peers, and may change them for speed; these stay as plain as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.ndimage as ndi

import pst.morph as pm

__all__ = ["refine_reference", "canonical"]


def _element(radius: int, shape: str) -> np.ndarray:
    return pm.structuring_element(radius, shape).numpy().astype(np.uint8)


def _refine_mask_opencv(mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    import cv2

    m = mask.astype(np.uint8)
    if p["open_radius"] > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _element(p["open_radius"], p["shape"]))
    if p["close_radius"] > 0:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _element(p["close_radius"], p["shape"]))
    if p["fill_holes"]:
        n, lab = cv2.connectedComponents(1 - m, connectivity=12 - p["connectivity"])
        outside = np.zeros(n, bool)
        for edge in (lab[0], lab[-1], lab[:, 0], lab[:, -1]):
            outside[edge] = True
        outside[0] = True  # label 0 = the mask itself
        m[~outside[lab]] = 1
    if p["min_size"] > 0 or p["largest_component"]:
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=p["connectivity"])
        area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
        keep = area >= p["min_size"]
        keep[0] = False
        if p["largest_component"] and keep.any():
            best = np.flatnonzero(keep & (area == area[keep].max()))
            if len(best) > 1:  # ties: the component whose first pixel comes first
                labels, first = np.unique(lab.ravel(), return_index=True)
                pos = dict(zip(labels.tolist(), first.tolist()))
                best = [min(best.tolist(), key=pos.__getitem__)]
            keep[:] = False
            keep[best[0]] = True
        m = keep[lab].astype(np.uint8)
    return m.astype(bool)


def _refine_mask_scipy(mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    m = mask.astype(bool)
    four = ndi.generate_binary_structure(2, 1)
    eight = ndi.generate_binary_structure(2, 2)
    fg = eight if p["connectivity"] == 8 else four
    bg = four if p["connectivity"] == 8 else eight
    # OpenCV's border: outside pixels are ignored, i.e. 1 for an erosion, 0 for a dilation
    if p["open_radius"] > 0:
        se = _element(p["open_radius"], p["shape"]).astype(bool)
        m = ndi.binary_dilation(ndi.binary_erosion(m, se, border_value=1), se, border_value=0)
    if p["close_radius"] > 0:
        se = _element(p["close_radius"], p["shape"]).astype(bool)
        m = ndi.binary_erosion(ndi.binary_dilation(m, se, border_value=0), se, border_value=1)
    if p["fill_holes"]:
        m = ndi.binary_fill_holes(m, structure=bg)
    if p["min_size"] > 0 or p["largest_component"]:
        lab, n = ndi.label(m, structure=fg)
        area = np.bincount(lab.ravel(), minlength=n + 1)
        keep = area >= p["min_size"]
        keep[0] = False
        if p["largest_component"] and keep.any():
            best = int(np.argmax(np.where(keep, area, -1)))  # scipy numbers in raster order
            keep[:] = False
            keep[best] = True
        m = keep[lab]
    return m


def _margin(p: dict[str, Any]) -> int:
    return max(p["open_radius"], 2 * p["close_radius"])


def _paste(instances: np.ndarray, refined: list[tuple[int, tuple[slice, slice], np.ndarray]]) -> np.ndarray:
    """pst's conflict rule: a pixel its own instance keeps stays; the rest go to the lowest id."""
    out = np.zeros_like(instances)
    for k, sl, r in refined:
        region = out[sl]
        region[r & (instances[sl] == k)] = k
    for k, sl, r in sorted(refined, key=lambda t: t[0]):
        region = out[sl]
        region[r & (region == 0)] = k
    return out


def refine_reference(instances: np.ndarray, *, backend: str = "opencv", crop: bool = False, open_radius: int = 0,
                     close_radius: int = 0, shape: str = "square", fill_holes: bool = False, min_size: int = 0,
                     largest_component: bool = False, connectivity: int = 8) -> np.ndarray:
    """:func:`pst.morph.refine` as a Python loop over instances with OpenCV or scipy.ndimage.

    Args:
        instances: integer numpy ``[H, W]`` or ``[B, H, W]``.
        backend: ``"opencv"`` or ``"scipy"``.
        crop: process each instance on its bounding box grown by
            ``max(open_radius, 2 * close_radius)`` instead of the full image.

    Returns:
        numpy array of ``instances``' shape and dtype.
    """
    p = dict(open_radius=open_radius, close_radius=close_radius, shape=shape, fill_holes=fill_holes,
             min_size=min_size, largest_component=largest_component, connectivity=connectivity)
    if instances.ndim == 3:
        return np.stack([refine_reference(x, backend=backend, crop=crop, **p) for x in instances]) \
            if len(instances) else instances.copy()
    fn = {"opencv": _refine_mask_opencv, "scipy": _refine_mask_scipy}[backend]
    h, w = instances.shape
    refined = []
    if crop:
        objs = ndi.find_objects(instances.astype(np.int64)) if instances.size and instances.max() > 0 else []
        mg = _margin(p)
        for i, sl in enumerate(objs):
            if sl is None:
                continue
            ys, xs = sl
            sl = (slice(max(0, ys.start - mg), min(h, ys.stop + mg)), slice(max(0, xs.start - mg), min(w, xs.stop + mg)))
            refined.append((i + 1, sl, fn(instances[sl] == i + 1, p)))
    else:
        full = (slice(0, h), slice(0, w))
        for k in np.unique(instances):
            if k != 0:
                refined.append((int(k), full, fn(instances == k, p)))
    return _paste(instances, refined)


def canonical(labels: np.ndarray) -> np.ndarray:
    """Relabels a label image (0 = background) so components are numbered 1..n in raster order
    of their first pixel: two labellings of the same partition become equal."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    fg = ids != 0
    order = np.argsort(first[fg], kind="stable")
    lut = np.zeros(ids.shape[0], np.int64)
    lut[np.flatnonzero(fg)[order]] = np.arange(1, fg.sum() + 1)
    return lut[np.searchsorted(ids, flat)].reshape(labels.shape)
