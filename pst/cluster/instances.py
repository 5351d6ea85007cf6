"""Instance pseudo-labels from per-pixel embeddings: anchors by objectness, clustering
inside each thing class's mask, nearest-mode assignment. One call per batch; every image
and class is a segment of one compiled call, never a Python loop per instance.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any, Sequence

import torch

from pst._interrupt import interruptible_ops as ops  # every op call stops on Ctrl-C
from pst._threads import thread_capped
from pst._trusted import trusted_inputs
from pst._checks import check_bandwidth, check_scalar, check_tensor
from pst.cluster._common import offsets_from_counts

log = logging.getLogger(__name__)

__all__ = ["METHODS", "cluster_instances", "sample_anchors"]

METHODS = ("meanshift", "meanshift++", "agglomerative")


@thread_capped
def sample_anchors(
    objectness: Any,
    mask: Any,
    k: int,
    *,
    min_distance: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Anchor pixels drawn by objectness, without replacement, at least ``min_distance`` apart.

    In each image, pixels of ``mask`` are drawn with probability proportional to their
    objectness (Gumbel-top-k on a counter-based generator: the same ``seed`` gives the
    same anchors on every device and thread count, and an image's anchors do not depend
    on the other images of the batch); a candidate closer than
    ``min_distance`` pixels (Euclidean) to an anchor already taken is skipped.

    Args:
        objectness: [B, H, W] or [H, W] float, >= 0 (probabilities or any weights).
        mask: same shape, bool: where anchors may be drawn.
        k: anchors per image.

    Returns:
        [B, k] (or [k] for 2-D input) int64 flat pixel indices ``h * W + w``, -1 where an
        image has fewer than k acceptable pixels.
    """
    obj = check_tensor(objectness, "objectness", kind="floating", convert=True)
    if obj.dim() not in (2, 3):
        raise ValueError(f"objectness should be [B, H, W] or [H, W], got shape {list(obj.shape)}")
    m = check_tensor(mask, "mask", shape=obj.shape, kind="integer or bool", convert=True).to(obj.device)
    check_scalar(k, "k", kind=numbers.Integral, min_val=0)
    check_scalar(min_distance, "min_distance", min_val=0.0)
    check_scalar(seed, "seed", kind=numbers.Integral)
    squeeze = obj.dim() == 2
    if squeeze:
        obj, m = obj[None], m[None]
    b, h, w = obj.shape
    flat = m.reshape(b, -1).bool()
    img, pix = flat.nonzero(as_tuple=True)  # row-major: grouped by image
    weights = obj.reshape(b, -1)[img, pix].to(torch.float64)
    if weights.numel() and not bool(torch.isfinite(weights).all()):
        raise ValueError("objectness contains NaN or infinity inside mask")
    if weights.numel() and bool((weights < 0).any()):
        raise ValueError("objectness should be >= 0 inside mask")
    coords = torch.stack([torch.div(pix, w, rounding_mode="floor"), pix % w], 1).to(torch.float64)
    offsets = offsets_from_counts(flat.sum(1))
    rows = ops.sample_anchors(weights, coords.contiguous(), offsets, int(k), float(min_distance), int(seed))
    out = torch.where(rows >= 0, pix[rows.clamp_min(0)] if pix.numel() else rows, rows)
    return out[0] if squeeze else out


@thread_capped
def cluster_instances(
    embeddings: Any,
    semantic: Any,
    objectness: Any | None = None,
    *,
    thing_classes: Sequence[int],
    method: str = "meanshift",
    bandwidth: float = 0.5,
    merge_distance: float | None = None,
    min_size: int = 0,
    n_anchors: int = 64,
    anchor_min_distance: float = 0.0,
    max_iter: int = 100,
    seed: int = 0,
    linkage: str = "average",
) -> torch.Tensor:
    """Instance-id map of a batch by clustering embeddings inside each thing class's mask.

    For every image b and thing class c, the pixels with ``semantic == c`` form one
    segment, clustered on its own:

    - ``"meanshift"``: ``n_anchors`` anchor pixels drawn by objectness
      (:func:`sample_anchors`; uniformly when ``objectness`` is None) seed a flat-kernel
      mean shift of radius ``bandwidth`` over the segment's embeddings; modes seen by
      no pixel are dropped and a mode within ``bandwidth`` of a stronger one is removed
      (scikit-learn's rule).
    - ``"meanshift++"``: grid mean shift of cell side ``bandwidth`` over all the
      segment's pixels (:func:`pst.cluster.grid_mean_shift`); no anchors.
    - ``"agglomerative"``: ``linkage`` clustering on a sparse kNN graph, cut at distance
      ``merge_distance`` (or ``2 * bandwidth`` when it is None).

    Every pixel of the segment then takes its nearest mode. With ``merge_distance`` (the
    "mean-shift+" step, for the mean-shift methods) clusters are visited largest first
    and one whose mode lies within ``merge_distance`` of a kept mode joins it. Clusters
    of fewer than ``min_size`` pixels are dropped (their pixels get 0).

    Args:
        embeddings: [B, D, H, W] float32/float64.
        semantic: [B, H, W] integer class ids (train ids).
        objectness: [B, H, W] float in [0, 1] (or any non-negative weights), or None.
        thing_classes: the class ids to cluster.

    Returns:
        [B, H, W] int64 on the embeddings' device: 0 = no instance, 1..K per image,
        numbered by class (in ``thing_classes`` order), then cluster size (largest first).
    """
    emb = check_tensor(embeddings, "embeddings", kind="floating", convert=True)
    if emb.dim() != 4:
        raise ValueError(f"embeddings should be [B, D, H, W], got shape {list(emb.shape)}")
    if emb.dtype not in (torch.float32, torch.float64):
        emb = emb.float()
    b, d, h, w = emb.shape
    dev = emb.device
    sem = check_tensor(semantic, "semantic", shape=(b, h, w), kind="integer or bool", convert=True).to(dev)
    obj = None
    if objectness is not None:
        obj = check_tensor(objectness, "objectness", shape=(b, h, w), kind="floating", convert=True).to(dev)
    if method not in METHODS:
        raise ValueError(f"method should be one of {METHODS}, got {method!r}")
    bandwidth = check_bandwidth(bandwidth)
    check_scalar(merge_distance, "merge_distance", min_val=0.0, include_min=False, allow_none=True)
    check_scalar(min_size, "min_size", kind=numbers.Integral, min_val=0)
    check_scalar(n_anchors, "n_anchors", kind=numbers.Integral, min_val=1)
    check_scalar(max_iter, "max_iter", kind=numbers.Integral, min_val=1)
    thing = [int(c) for c in thing_classes]
    if len(set(thing)) != len(thing):
        raise ValueError(f"thing_classes has repeated ids: {thing}")
    if any(c < 0 for c in thing):
        raise ValueError(f"thing_classes should hold class ids >= 0, got {thing}")
    out = torch.zeros((b, h, w), dtype=torch.long, device=dev)
    if not thing or b * h * w == 0:
        return out

    # segment of every pixel: image * n_things + index of its class in thing_classes (-1: none)
    # (ids above the map's largest class match no pixel: the table stops there, whatever their size)
    lut_size = max(int(sem.max()) if sem.numel() else 0, 0) + 1
    lut = torch.full((lut_size,), -1, dtype=torch.long, device=dev)
    present = [i for i, c in enumerate(thing) if c < lut_size]
    lut[torch.tensor([thing[i] for i in present], dtype=torch.long, device=dev)] = torch.tensor(
        present, dtype=torch.long, device=dev)
    semc = sem.long()
    valid = (semc >= 0) & (semc < lut.numel())
    cls_idx = torch.where(valid, lut[semc.clamp(0, lut.numel() - 1)], torch.full_like(semc, -1))
    seg_of_pixel = torch.where(cls_idx >= 0, torch.arange(b, device=dev).view(b, 1, 1) * len(thing) + cls_idx,
                               torch.full_like(cls_idx, -1)).reshape(-1)
    n_seg = b * len(thing)
    pix = (seg_of_pixel >= 0).nonzero().squeeze(1)
    if pix.numel() == 0:
        return out
    seg = seg_of_pixel[pix]
    seg, perm = torch.sort(seg, stable=True)
    pix = pix[perm]  # grouped by segment, row-major inside each
    counts = torch.bincount(seg, minlength=n_seg)
    offsets = offsets_from_counts(counts)
    feats = emb.permute(0, 2, 3, 1).reshape(-1, d)[pix].contiguous()
    if not bool(torch.isfinite(feats).all()):
        raise ValueError("embeddings contain NaN or infinity inside the thing masks")

    # offsets, seed segments and anchor weights are built here and checked once (above and in
    # _mean_shift_segments): the CUDA ops need not copy them to the host to check them again
    if method == "meanshift":
        with trusted_inputs():
            labels, n_modes = _mean_shift_segments(feats, offsets, pix, obj, h, w, bandwidth=bandwidth,
                                                   n_anchors=n_anchors, anchor_min_distance=anchor_min_distance,
                                                   max_iter=max_iter, seed=seed, merge_distance=merge_distance)
    elif method == "meanshift++":
        with trusted_inputs():
            labels, n_modes = _grid_segments(feats, offsets, bandwidth=bandwidth, max_iter=max_iter,
                                             merge_distance=merge_distance)
    else:
        labels, n_modes = _agglomerative_segments(feats, offsets, threshold=merge_distance or 2 * bandwidth,
                                                  linkage=linkage)
    # labels: [N] global cluster index (0..n_modes-1, grouped by segment) -> per-image ids by size
    sizes = torch.bincount(labels, minlength=n_modes)
    cluster_seg = torch.zeros(n_modes, dtype=torch.long, device=dev)
    cluster_seg[labels] = seg
    keep = sizes >= max(min_size, 1)
    # order: image, class (segment), then size descending, then first pixel (deterministic)
    first = torch.full((n_modes,), pix.numel(), dtype=torch.long, device=dev)
    first.scatter_reduce_(0, labels, torch.arange(pix.numel(), device=dev), reduce="amin")
    order = torch.arange(n_modes, device=dev)
    for key, desc in ((first, False), (sizes, True), (cluster_seg, False)):
        order = order[torch.sort(key[order], descending=desc, stable=True).indices]
    order = order[keep[order]]
    image = torch.div(cluster_seg[order], len(thing), rounding_mode="floor")
    # running number inside each image, from 1
    rank = torch.arange(order.numel(), device=dev)
    start = torch.zeros(b + 1, dtype=torch.long, device=dev)
    torch.cumsum(torch.bincount(image, minlength=b), 0, out=start[1:])
    ids = torch.zeros(n_modes, dtype=torch.long, device=dev)
    ids[order] = rank - start[image] + 1
    out.view(-1)[pix] = ids[labels]
    return out


def _mean_shift_segments(feats, offsets, pix, obj, h, w, *, bandwidth, n_anchors, anchor_min_distance,
                         max_iter, seed, merge_distance):
    dev = feats.device
    n_seg = offsets.numel() - 1
    seg = torch.repeat_interleave(torch.arange(n_seg, device=dev), offsets.diff())
    weights = obj.reshape(-1)[pix].to(torch.float64) if obj is not None else torch.ones(pix.numel(), dtype=torch.float64,
                                                                                       device=dev)
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("objectness should be finite and >= 0 inside the thing masks")
    # a pixel of zero objectness is never drawn; keep every segment seedable
    weights = weights + 1e-12
    coords = torch.stack([torch.div(pix % (h * w), w, rounding_mode="floor"), pix % w], 1).to(torch.float64)
    anchors = ops.sample_anchors(weights, coords.contiguous(), offsets, int(n_anchors), float(anchor_min_distance),
                                 int(seed))  # [G, k] rows, -1 pad
    ok = anchors >= 0
    rows = anchors[ok]
    seed_seg = torch.arange(n_seg, device=dev).view(-1, 1).expand_as(anchors)[ok].contiguous()
    seeds = feats[rows].contiguous()
    modes, counts, _ = ops.mean_shift(feats, offsets, seeds, seed_seg, bandwidth, int(max_iter), 1e-3 * bandwidth)
    seen = counts > 0
    modes, counts, seed_seg = modes[seen].contiguous(), counts[seen], seed_seg[seen].contiguous()
    keeper, order = ops.merge_modes(modes, counts.to(torch.float64), seed_seg, bandwidth)
    kept = order[keeper[order] == order]  # grouped by segment (merge_modes visits by segment)
    centers, center_seg = modes[kept].contiguous(), seed_seg[kept]
    center_offsets = offsets_from_counts(torch.bincount(center_seg, minlength=n_seg))
    labels, _ = ops.nearest_center(feats, offsets, centers, center_offsets)
    if merge_distance is not None and centers.shape[0] > 1:
        sizes = torch.bincount(labels, minlength=centers.shape[0]).to(torch.float64)
        keeper2, _ = ops.merge_modes(centers, sizes, center_seg.contiguous(), float(merge_distance))
        labels = keeper2[labels]
    return labels, centers.shape[0]


def _grid_segments(feats, offsets, *, bandwidth, max_iter, merge_distance):
    modes, weights, mode_seg, labels, _ = ops.grid_mean_shift(feats, offsets, bandwidth, int(max_iter),
                                                              1e-3 * bandwidth)
    if merge_distance is not None and modes.shape[0] > 1:
        keeper, _ = ops.merge_modes(modes.contiguous(), weights.to(torch.float64), mode_seg.contiguous(),
                                    float(merge_distance))
        labels = keeper[labels]
    return labels, modes.shape[0]


def _agglomerative_segments(feats, offsets, *, threshold, linkage):
    from pst.cluster.agglomerative import agglomerative  # noqa: PLC0415 (optional heavy import)

    labels = torch.empty(feats.shape[0], dtype=torch.long, device=feats.device)
    base = 0
    off = offsets.tolist()
    for g in range(len(off) - 1):
        lo, hi = off[g], off[g + 1]
        if hi == lo:
            continue
        if hi - lo == 1:
            labels[lo] = base
            base += 1
            continue
        with warnings.catch_warnings():  # separate instances make a disconnected kNN graph: expected here
            warnings.simplefilter("ignore", UserWarning)
            lab = agglomerative(feats[lo:hi], n_clusters=None, distance_threshold=threshold, linkage=linkage)
        labels[lo:hi] = lab.to(labels.device) + base
        base += int(lab.max()) + 1
    return labels, base
