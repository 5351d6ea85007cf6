"""Semantic + instance -> panoptic fusion, and merging of several instance maps.

Panoptic maps (int64, [H, W] or [B, H, W]) hold ``class * label_divisor + instance``,
``class`` a train id of a :class:`pst.labels.LabelSpace`:

* stuff segments have instance 0 (one segment per stuff class and image);
* thing instances have instance 1..K, the id of the instance map they come from
  (ids are unique within an image, across classes);
* thing pixels that belong to no instance are either void or, with
  ``unassigned_things="segment"``, one segment per thing class and image with instance 0;
* void is ``VOID = -1``. Zero cannot be void: ``0 * label_divisor + 0`` is the stuff
  segment of train id 0 (road in the Cityscapes spaces).

In *ground-truth* panoptic maps (as read by :mod:`pst.formats.cityscapes`) a thing class
with instance 0 is a crowd region (Cityscapes instanceIds value ``label_id < 1000``),
which :class:`pst.metrics.PanopticQuality` treats as the official evaluation does.

Everything is vectorised with ``bincount`` / ``gather`` on the input's device; the only
Python loops run over the (few) input maps of :func:`merge_instance_maps`.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

import torch

from pst._checks import INT_DTYPES, tensor
from pst.labels import IGNORE, LABEL_DIVISOR

__all__ = [
    "VOID",
    "fuse",
    "merge_instance_maps",
    "masks_to_instance_map",
    "panoptic_to_semantic",
    "MergedInstances",
]

logger = logging.getLogger(__name__)

VOID = -1

# Panoptic-DeepLab's Cityscapes setting (STUFF_AREA 2048 at 1024x2048): stuff regions
# below this many pixels become void. It scales with the image area.
DEFAULT_STUFF_AREA = 2048


def _check_int_map(x, name: str) -> torch.Tensor:
    x = tensor(x, name)
    if x.dtype not in INT_DTYPES:
        raise TypeError(f"{name} should be an integer tensor, got dtype {x.dtype}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} should have shape [H, W] or [B, H, W], got {tuple(x.shape)}")
    return x.long()


def _check_thing_ids(thing_ids, num_classes: int | None = None) -> tuple[int, ...]:
    try:
        ids = tuple(int(t) for t in thing_ids)
    except TypeError:
        raise TypeError(f"thing_ids should be a sequence of ints, got {type(thing_ids).__name__}") from None
    if len(set(ids)) != len(ids):
        raise ValueError(f"thing_ids should not repeat a class, got {ids}")
    if any(t < 0 for t in ids) or (num_classes is not None and any(t >= num_classes for t in ids)):
        raise ValueError(f"thing_ids should lie in [0, {num_classes}), got {ids}")
    return ids


def panoptic_to_semantic(panoptic: torch.Tensor, *, label_divisor: int = LABEL_DIVISOR,
                         ignore_index: int = IGNORE) -> torch.Tensor:
    """The class map of a panoptic map.

    Args:
        panoptic: [...] int64 panoptic ids, ``VOID`` (any negative value) for void.
    Returns:
        [...] int64 train ids, ``ignore_index`` where the panoptic map is void.
    """
    pan = _check_int_map(panoptic, "panoptic") if panoptic.dim() in (2, 3) else panoptic.long()
    return torch.where(pan < 0, torch.full_like(pan, ignore_index), torch.div(pan, label_divisor, rounding_mode="floor"))


def fuse(
    semantic: torch.Tensor,
    instances: torch.Tensor,
    *,
    thing_ids: Sequence[int],
    label_divisor: int = LABEL_DIVISOR,
    ignore_index: int = IGNORE,
    num_classes: int | None = None,
    instance_classes: torch.Tensor | None = None,
    scores: torch.Tensor | None = None,
    min_score: float | None = None,
    thing_area: int = 0,
    stuff_area: int = DEFAULT_STUFF_AREA,
    unassigned_things: str = "void",
    thing_pixels_only: bool = False,
) -> torch.Tensor:
    """Fuse a semantic map and a (non-overlapping) instance map into a panoptic map.

    Rules, in order:

    1. Each instance takes the class that most of its pixels have in ``semantic``,
       counting only pixels of thing classes (ties go to the lower train id), unless
       ``instance_classes`` gives the class. An instance with no thing pixel, fewer than
       ``thing_area`` pixels, or a score below ``min_score`` is dropped; its pixels are
       treated as if no instance covered them.
    2. Instance pixels become ``class * label_divisor + instance_id``, whatever the
       semantic class under them (with ``thing_pixels_only=True`` only the instance's
       pixels whose semantic class is a thing class do, as in Panoptic-DeepLab).
    3. Remaining thing-class pixels: ``unassigned_things="void"`` makes them void;
       ``"segment"`` makes them one segment ``class * label_divisor`` per class and image.
    4. Remaining stuff pixels form one segment per class and image; a segment smaller
       than ``stuff_area`` pixels becomes void (so does an unassigned thing segment).
    5. ``ignore_index`` pixels that no instance covers are void.

    Overlapping instances (several category-centric models, or a list of scored masks)
    are resolved before fusion by :func:`merge_instance_maps` / :func:`masks_to_instance_map`.

    Args:
        semantic: [H, W] or [B, H, W] integer train ids, ``ignore_index`` for void.
        instances: same shape, integer; 0 = no instance, 1..K instance ids (per image).
        thing_ids: train ids of the thing classes.
        label_divisor: must exceed every instance id.
        num_classes: number of classes; inferred from the data and ``thing_ids`` if None.
        instance_classes: optional [K] or [B, K] int64, class of instance k at index k-1
            (thing ids only), replacing the majority vote.
        scores: optional [K] or [B, K] float, score of instance k at index k-1; used with
            ``min_score``.
        min_score: drop instances whose score is below this value (needs ``scores``).
        thing_area: drop instances with fewer pixels.
        stuff_area: minimum pixel count of a stuff (or unassigned-thing) segment;
            default 2048 (Panoptic-DeepLab, Cityscapes at 1024x2048).
        unassigned_things: "void" or "segment" (see rule 3).
        thing_pixels_only: see rule 2.
    Returns:
        int64 panoptic map of the input's shape, on the input's device (``VOID`` = -1).
    """
    sem = _check_int_map(semantic, "semantic")
    inst = _check_int_map(instances, "instances")
    if sem.shape != inst.shape:
        raise ValueError(f"semantic and instances should have the same shape, got {tuple(sem.shape)} and {tuple(inst.shape)}")
    if sem.device != inst.device:
        raise ValueError(f"semantic and instances should be on one device, got {sem.device} and {inst.device}")
    if unassigned_things not in ("void", "segment"):
        raise ValueError(f"unassigned_things should be 'void' or 'segment', got {unassigned_things!r}")
    if label_divisor < 1:
        raise ValueError(f"label_divisor should be positive, got {label_divisor}")
    if thing_area < 0 or stuff_area < 0:
        raise ValueError(f"thing_area and stuff_area should be >= 0, got {thing_area} and {stuff_area}")
    if min_score is not None and scores is None:
        raise ValueError("min_score needs scores (one per instance id)")

    batched = sem.dim() == 3
    if not batched:
        sem, inst = sem[None], inst[None]
    B = sem.shape[0]
    device = sem.device
    N = sem[0].numel() if B else 0
    sem = sem.reshape(B, N)
    inst = inst.reshape(B, N)
    things = _check_thing_ids(thing_ids)

    valid_sem = sem != ignore_index
    if bool((sem[valid_sem] < 0).any()):
        raise ValueError(f"semantic should hold train ids >= 0 or ignore_index={ignore_index}, got negative values")
    max_cls = int(sem[valid_sem].max()) if bool(valid_sem.any()) else -1
    if num_classes is None:
        num_classes = max([max_cls, *things]) + 1 if (things or max_cls >= 0) else 1
    elif max_cls >= num_classes:
        raise ValueError(f"semantic holds class {max_cls}, but num_classes is {num_classes}")
    things = _check_thing_ids(things, num_classes)
    C = num_classes
    if bool((inst < 0).any()):
        raise ValueError("instances should be >= 0 (0 = no instance), got negative ids")
    K = int(inst.max()) if inst.numel() else 0
    if K >= label_divisor:
        raise ValueError(f"instance ids should be below label_divisor={label_divisor}, got {K}")

    is_thing = torch.zeros(C + 1, dtype=torch.bool, device=device)  # index C = ignore
    if things:
        is_thing[list(things)] = True
    cls_idx = torch.where(valid_sem, sem, torch.full_like(sem, C))
    pix_thing = is_thing[cls_idx]

    # --- per-instance statistics: [B, K+1] areas and [B, K+1, C] class votes
    bk = torch.arange(B, device=device)[:, None] * (K + 1) + inst
    counted = pix_thing if thing_pixels_only else torch.ones_like(pix_thing)
    area = torch.bincount(bk[counted], minlength=B * (K + 1)).view(B, K + 1)
    keep = area >= max(thing_area, 1)
    keep[:, 0] = False
    if instance_classes is None:
        votes = torch.bincount((bk * C + cls_idx)[pix_thing & (inst > 0)], minlength=B * (K + 1) * C)
        votes = votes.view(B, K + 1, C)
        best, inst_cls = votes.max(dim=-1)  # first maximum: ties go to the lower id
        keep &= best > 0
    else:
        inst_cls = _per_instance(instance_classes, "instance_classes", B, K, batched, device).long()
        known = inst_cls[keep]
        out_of_range = (known < 0) | (known >= C)
        if bool(out_of_range.any()) or not bool(is_thing[known].all()):
            raise ValueError(f"instance_classes should hold thing ids {things}, got {sorted(set(known.tolist()))}")
    if min_score is not None:
        sc = _per_instance(scores, "scores", B, K, batched, device).to(torch.float64)
        if bool(torch.isnan(sc[keep]).any()):
            raise ValueError("scores should not be NaN")
        keep &= sc >= min_score

    # --- pixels
    pix_keep = keep.gather(1, inst)
    if thing_pixels_only:
        pix_keep &= pix_thing
    pan = torch.full_like(sem, VOID)
    pan_inst = inst_cls.gather(1, inst) * label_divisor + inst
    pan = torch.where(pix_keep, pan_inst, pan)

    rest = ~pix_keep & valid_sem
    region = rest & (~pix_thing | (unassigned_things == "segment"))
    bc = torch.arange(B, device=device)[:, None] * C + cls_idx
    region_area = torch.bincount(bc[region], minlength=B * C).view(B, C)
    big = region_area.gather(1, cls_idx.clamp(max=C - 1)) >= stuff_area
    pan = torch.where(region & big, sem * label_divisor, pan)
    pan = pan.view(semantic.shape if batched else (1, *semantic.shape))
    return pan if batched else pan[0]


def _per_instance(x, name: str, B: int, K: int, batched: bool, device) -> torch.Tensor:
    """A [K] / [B, K] per-instance tensor as [B, K+1] (column 0 = no instance)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor, got {type(x).__name__}")
    x = x.to(device)
    if x.dim() == 1 and not batched:
        x = x[None]
    if x.dim() != 2 or x.shape[0] != B:
        want = f"[B={B}, K]" if batched else "[K]"
        raise ValueError(f"{name} should have shape {want} (entry k-1 for instance id k), got {tuple(x.shape)}")
    if x.shape[1] < K:
        raise ValueError(f"{name} has {x.shape[1]} entries per image, but the instance map holds id {K}")
    pad = torch.zeros((B, 1), dtype=x.dtype, device=device)
    return torch.cat([pad, x[:, :K]], dim=1)


class MergedInstances(NamedTuple):
    """Result of :func:`merge_instance_maps`.

    Attributes:
        instances: [H, W] / [B, H, W] int64, 0 = none, ids 1..K' consecutive per image.
        scores: [K'] / [B, K'] float64 score of id k at index k-1 (NaN past an image's count).
        source: [K'] / [B, K'] int64 index of the input map each id came from (-1 padding).
        source_id: [K'] / [B, K'] int64 id it had in that map (0 padding).
    """

    instances: torch.Tensor
    scores: torch.Tensor
    source: torch.Tensor
    source_id: torch.Tensor


def merge_instance_maps(maps: Sequence[torch.Tensor], scores: Sequence[torch.Tensor]) -> MergedInstances:
    """Merge the instance maps of several models (e.g. category-centric ones) into one.

    Where instances of different maps overlap, the pixel goes to the instance with the
    highest score (ties: the earlier map). Ids are renumbered 1..K' per image in the
    order (map, id); instances left without pixels disappear.

    Args:
        maps: M integer tensors, all [H, W] or all [B, H, W]; 0 = no instance, 1..K_m.
        scores: M float tensors, [K_m] or [B, K_m]: score of id k of map m at index k-1.
    Returns:
        :class:`MergedInstances`.
    """
    if len(maps) == 0:
        raise ValueError("merge_instance_maps needs at least one instance map, got none")
    if len(maps) != len(scores):
        raise ValueError(f"merge_instance_maps needs one scores tensor per map, got {len(maps)} maps and {len(scores)} scores")
    ref = _check_int_map(maps[0], "maps[0]")
    batched = ref.dim() == 3
    shape = ref.shape
    device = ref.device
    B = shape[0] if batched else 1
    flat, pix_scores, offsets, score_list, sizes = [], [], [], [], []
    offset = 0
    for m, (mp, sc) in enumerate(zip(maps, scores)):
        mp = _check_int_map(mp, f"maps[{m}]")
        if mp.shape != shape:
            raise ValueError(f"maps[{m}] has shape {tuple(mp.shape)}, maps[0] has {tuple(shape)}")
        if mp.device != device:
            raise ValueError(f"maps[{m}] is on {mp.device}, maps[0] on {device}")
        if bool((mp < 0).any()):
            raise ValueError(f"maps[{m}] should be >= 0 (0 = no instance), got negative ids")
        mp = mp.reshape(B, mp.numel() // B if B else 0)
        if not isinstance(sc, torch.Tensor) or not (sc.is_floating_point() or sc.dtype in INT_DTYPES):
            raise TypeError(f"scores[{m}] should be a float tensor, got {type(sc).__name__}")
        sc = sc.to(device=device, dtype=torch.float64)
        if sc.dim() == 1 and not batched:
            sc = sc[None]
        if sc.dim() != 2 or sc.shape[0] != B:
            raise ValueError(f"scores[{m}] should have shape {'[B, K]' if batched else '[K]'}, got {tuple(sc.shape)}")
        K = sc.shape[1]
        top = int(mp.max()) if mp.numel() else 0
        if top > K:
            raise ValueError(f"maps[{m}] holds instance id {top}, but scores[{m}] has only {K} entries per image")
        if bool(torch.isnan(sc).any()):
            raise ValueError(f"scores[{m}] should not be NaN")
        padded = torch.cat([torch.full((B, 1), -torch.inf, dtype=torch.float64, device=device), sc], dim=1)
        pix_scores.append(padded.gather(1, mp))
        flat.append(mp)
        score_list.append(sc)
        sizes.append(K)
        offsets.append(offset)
        offset += K
    K_total = offset
    stack = torch.stack(flat)  # [M, B, N]
    best = torch.stack(pix_scores).argmax(dim=0)  # first maximum: earlier map on ties
    ids = stack.gather(0, best[None])[0]
    off = torch.tensor(offsets, dtype=torch.long, device=device)[best]
    merged = torch.where(ids > 0, ids + off, torch.zeros_like(ids))  # [B, N], global ids 1..K_total

    # consecutive renumbering per image
    present = torch.bincount((torch.arange(B, device=device)[:, None] * (K_total + 1) + merged).flatten(),
                             minlength=B * (K_total + 1)).view(B, K_total + 1) > 0
    present[:, 0] = False
    lut = torch.cumsum(present.long(), dim=1) * present
    out = lut.gather(1, merged)
    Kp = int(present.sum(1).max()) if B else 0

    all_scores = torch.cat(score_list, dim=1)  # [B, K_total]
    src = torch.cat([torch.full((k,), m, dtype=torch.long, device=device) for m, k in enumerate(sizes)])
    src_id = torch.cat([torch.arange(1, k + 1, dtype=torch.long, device=device) for k in sizes])
    new_scores = torch.full((B, Kp), torch.nan, dtype=torch.float64, device=device)
    new_src = torch.full((B, Kp), -1, dtype=torch.long, device=device)
    new_src_id = torch.zeros((B, Kp), dtype=torch.long, device=device)
    b_idx, g_idx = present.nonzero(as_tuple=True)  # g_idx: global id 1..K_total
    n_idx = lut[b_idx, g_idx] - 1
    new_scores[b_idx, n_idx] = all_scores[b_idx, g_idx - 1]
    new_src[b_idx, n_idx] = src[g_idx - 1]
    new_src_id[b_idx, n_idx] = src_id[g_idx - 1]
    out = out.view(shape)
    if not batched:
        return MergedInstances(out, new_scores[0], new_src[0], new_src_id[0])
    return MergedInstances(out, new_scores, new_src, new_src_id)


def masks_to_instance_map(masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Paint possibly overlapping scored masks into one instance map.

    Each pixel goes to the highest-scoring mask that covers it (ties: the lower index).
    Memory is proportional to the number of mask pixels, not to N * H * W floats.

    Args:
        masks: [N, H, W] bool (or 0/1 integer).
        scores: [N] float.
    Returns:
        [H, W] int64: 0 where no mask, else 1 + the index of the winning mask (so an id
        maps back to the input list; masks that keep no pixel are absent).
    """
    if not isinstance(masks, torch.Tensor) or not isinstance(scores, torch.Tensor):
        raise TypeError(f"masks and scores should be torch.Tensors, got {type(masks).__name__} and {type(scores).__name__}")
    if masks.dim() != 3:
        raise ValueError(f"masks should have shape [N, H, W], got {tuple(masks.shape)}")
    if scores.shape != (masks.shape[0],):
        raise ValueError(f"scores should have shape [N]=[{masks.shape[0]}], got {tuple(scores.shape)}")
    if masks.dtype != torch.bool:
        if masks.dtype not in INT_DTYPES or bool(((masks != 0) & (masks != 1)).any()):
            raise ValueError(f"masks should be bool or 0/1 integers, got dtype {masks.dtype}")
        masks = masks.bool()
    scores = scores.to(device=masks.device, dtype=torch.float64)
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores should not be NaN")
    N, H, W = masks.shape
    out = torch.zeros(H * W, dtype=torch.long, device=masks.device)
    if N == 0:
        return out.view(H, W)
    # rank 0 = best: sort by score descending, index ascending (stable sort of -score)
    order = torch.sort(-scores, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(N, device=masks.device)
    n, pix = masks.reshape(N, -1).nonzero(as_tuple=True)
    best = torch.full((H * W,), N, dtype=torch.long, device=masks.device)
    best = best.scatter_reduce(0, pix, rank[n], reduce="amin")
    covered = best < N
    out[covered] = order[best[covered]] + 1
    return out.view(H, W)
