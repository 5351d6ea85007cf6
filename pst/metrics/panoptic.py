"""Panoptic quality (PQ, SQ, RQ) and PQ-dagger, streaming, with the Cityscapes rules.

The counting follows cityscapesScripts' ``evalPanopticSemanticLabeling`` (the COCO
panopticapi procedure) exactly, so that the numbers agree with the official script to
floating-point rounding:

* per image, a predicted and a ground-truth segment of the same class match when
  ``IoU > 0.5``; the union leaves out the predicted segment's pixels that are void in
  the ground truth (``|P| + |G| - |P n G| - |P n void|``);
* a ground-truth segment that is not matched is a false negative, unless it is a crowd
  region (a thing class with instance 0 in the ground truth: Cityscapes instanceIds
  value ``label_id < 1000``); crowd regions are never matched;
* a predicted segment that is not matched is a false positive, unless more than half
  of its pixels are void or crowd of its own class in the ground truth;
* per class ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU(TP) / TP``,
  ``RQ = TP / (TP + FP/2 + FN/2)``; the averages (all, things, stuff) run over the
  classes with ``TP + FP + FN > 0``.

PQ-dagger (Porzi et al., "Seamless Scene Segmentation", CVPR 2019): thing classes keep
their PQ; for a stuff class c, ``PQ-dagger_c = (1 / |S_c|) * sum IoU(S, P)`` over the
ground-truth segments ``S`` of class c (one per image that contains c) and the
predicted segments ``P`` of class c that overlap S at all (no 0.5 threshold, so there
is no matching). Predicted stuff segments in images without that class cost nothing
(no false positives). This is the per-image IoU averaged over the images that contain
the class - not the dataset-level IoU of mIoU. The IoU uses the same union as PQ
(void pixels of the prediction left out). torchmetrics' ``ModifiedPanopticQuality``
implements the same definition (it also drops predicted-void pixels from the union).
The PQ-dagger average runs over thing classes with ``TP + FP + FN > 0`` and stuff
classes with at least one ground-truth segment.

Inputs are panoptic maps ``class * label_divisor + instance`` (see :mod:`pst.panoptic`):

* prediction: every distinct non-void id is one segment (instance 0 included); void is
  any negative id or class ``ignore_index``;
* ground truth: thing class + instance >= 1 is an object, thing class + instance 0 a
  crowd region, a stuff class one segment whatever its instance part; void as above.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from pst.labels import IGNORE, LABEL_DIVISOR, LabelSpace
from pst.metrics._common import check_pair, nanmean, resolve_classes

__all__ = ["PanopticQuality", "panoptic_image_stats"]


def panoptic_image_stats(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    num_classes: int,
    is_thing: torch.Tensor,
    label_divisor: int = LABEL_DIVISOR,
    ignore_index: int = IGNORE,
) -> dict[str, torch.Tensor]:
    """PQ and PQ-dagger counts of one image.

    Args:
        pred, gt: [N] int64 panoptic ids of one image (flattened), on one device.
        num_classes: C.
        is_thing: [C + 1] bool on that device, True for thing classes (entry C False).
    Returns:
        dict of [C] tensors: ``tp``, ``fp``, ``fn`` (int64), ``iou`` (float64 sum of the
        TP IoUs), ``dagger_iou`` (float64), ``dagger_count`` (int64).
    """
    C = num_classes
    div = label_divisor
    device = gt.device

    def classes(x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        cls = torch.div(x, div, rounding_mode="floor")
        void = (x < 0) | (cls == ignore_index)
        bad = ~void & (cls >= C)
        if bool(bad.any()):
            ids = sorted(set(x[bad].tolist()))[:5]
            raise ValueError(f"{name} holds panoptic ids {ids} whose class (id // {div}) is not in "
                             f"[0, {C}) nor ignore_index={ignore_index}")
        return cls, void

    p_cls, p_void = classes(pred, "pred")
    g_cls, g_void = classes(gt, "gt")
    pred = torch.where(p_void, torch.full_like(pred, -1), pred)
    # ground truth: a stuff class is one segment; void -> -1
    g_stuff = ~g_void & ~is_thing[g_cls.clamp(0, C)]
    gt = torch.where(g_void, torch.full_like(gt, -1), torch.where(g_stuff, g_cls * div, gt))

    gu, ginv = torch.unique(gt, return_inverse=True)
    pu, pinv = torch.unique(pred, return_inverse=True)
    Ng, Np = gu.numel(), pu.numel()
    inter = torch.bincount(ginv * Np + pinv, minlength=Ng * Np).view(Ng, Np)
    gt_area = inter.sum(1)
    pred_area = inter.sum(0)

    g_seg_void = gu < 0
    p_seg_void = pu < 0
    g_seg_cls = torch.where(g_seg_void, torch.full_like(gu, C), torch.div(gu, div, rounding_mode="floor"))
    p_seg_cls = torch.where(p_seg_void, torch.full_like(pu, C), torch.div(pu, div, rounding_mode="floor"))
    g_thing = is_thing[g_seg_cls]
    g_crowd = g_thing & (gu % div == 0) & ~g_seg_void
    g_ok = ~g_seg_void & ~g_crowd
    p_ok = ~p_seg_void
    void_row = (inter * g_seg_void[:, None]).sum(0)  # [Np] pixels of each prediction on gt void

    same = g_seg_cls[:, None] == p_seg_cls[None, :]
    union = gt_area[:, None] + pred_area[None, :] - inter - void_row[None, :]
    overlap = same & (inter > 0) & p_ok[None, :]
    match = overlap & g_ok[:, None] & (2 * inter > union)  # IoU > 0.5, exactly
    iou = inter.to(torch.float64) / union.clamp(min=1).to(torch.float64)

    zeros_i = torch.zeros(C + 1, dtype=torch.long, device=device)
    zeros_f = torch.zeros(C + 1, dtype=torch.float64, device=device)
    gi, pi = match.nonzero(as_tuple=True)
    tp = zeros_i.index_add(0, g_seg_cls[gi], torch.ones_like(gi))
    iou_sum = zeros_f.index_add(0, g_seg_cls[gi], iou[gi, pi])

    g_matched = match.any(1)
    p_matched = match.any(0)
    fn_seg = g_ok & ~g_matched
    fn = zeros_i.index_add(0, g_seg_cls[fn_seg], torch.ones_like(g_seg_cls[fn_seg]))

    crowd_inter = (inter * (same & g_crowd[:, None])).sum(0)
    ignored = 2 * (void_row + crowd_inter) > pred_area
    fp_seg = p_ok & ~p_matched & ~ignored
    fp = zeros_i.index_add(0, p_seg_cls[fp_seg], torch.ones_like(p_seg_cls[fp_seg]))

    g_stuff_seg = ~g_seg_void & ~g_thing
    dag_count = zeros_i.index_add(0, g_seg_cls[g_stuff_seg], torch.ones_like(g_seg_cls[g_stuff_seg]))
    di, dp = (overlap & g_stuff_seg[:, None]).nonzero(as_tuple=True)
    dag_iou = zeros_f.index_add(0, g_seg_cls[di], iou[di, dp])
    return {"tp": tp[:C], "fp": fp[:C], "fn": fn[:C], "iou": iou_sum[:C],
            "dagger_iou": dag_iou[:C], "dagger_count": dag_count[:C]}


class PanopticQuality:
    """Streaming PQ / SQ / RQ (all, things, stuff) and PQ-dagger over a data set.

    ``update(pred, gt)`` per image (or batch), ``compute()`` at the end, ``reset()`` to
    start again. Counts live on the device of the first ``gt`` passed (bincount there).

    Args:
        label_space: gives the classes and the thing/stuff split; or pass
            ``num_classes`` and ``thing_ids``.
        label_divisor: panoptic id = class * label_divisor + instance.
        ignore_index: a class id that means void (as do negative panoptic ids).
    """

    def __init__(
        self,
        label_space: LabelSpace | None = None,
        *,
        num_classes: int | None = None,
        thing_ids: Sequence[int] | None = None,
        label_divisor: int = LABEL_DIVISOR,
        ignore_index: int = IGNORE,
    ):
        self.label_space = label_space
        self.num_classes, self.thing_ids, self.class_names = resolve_classes(label_space, num_classes, thing_ids)
        if label_divisor < 1:
            raise ValueError(f"label_divisor should be positive, got {label_divisor}")
        self.label_divisor = int(label_divisor)
        self.ignore_index = int(ignore_index)
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"ignore_index={ignore_index} is a class id (num_classes={self.num_classes})")
        self.reset()

    def reset(self) -> None:
        self._stats: dict[str, torch.Tensor] | None = None
        self._is_thing: torch.Tensor | None = None
        self.num_images = 0

    def update(self, pred: Any, gt: Any) -> None:
        """Add images.

        Args:
            pred: [H, W] or [B, H, W] integer panoptic ids (torch or numpy).
            gt: same shape, ground-truth panoptic ids (thing + instance 0 = crowd).
        """
        p, g = check_pair(pred, gt, "panoptic maps")
        device = g.device
        if self._is_thing is None or self._is_thing.device != device:
            self._is_thing = torch.zeros(self.num_classes + 1, dtype=torch.bool, device=device)
            self._is_thing[list(self.thing_ids)] = True
        for b in range(p.shape[0]):
            s = panoptic_image_stats(p[b], g[b], num_classes=self.num_classes, is_thing=self._is_thing,
                                     label_divisor=self.label_divisor, ignore_index=self.ignore_index)
            if self._stats is None:
                self._stats = s
            else:
                self._stats = {k: self._stats[k] + v.to(self._stats[k].device) for k, v in s.items()}
            self.num_images += 1

    def compute(self) -> dict[str, Any]:
        """The scores, as fractions in [0, 1].

        Returns:
            dict with ``PQ``, ``SQ``, ``RQ``, ``PQ_things``, ``SQ_things``, ``RQ_things``,
            ``PQ_stuff``, ``SQ_stuff``, ``RQ_stuff``, ``PQ_dagger`` (floats; NaN when no
            class counts), ``n``, ``n_things``, ``n_stuff`` (classes averaged) and
            ``per_class``: a list (index = train id) of dicts with ``name``, ``PQ``,
            ``SQ``, ``RQ``, ``PQ_dagger`` (NaN for classes that do not count; the official
            script prints 0.0 for them) and the counts ``TP``, ``FP``, ``FN``.
        """
        C = self.num_classes
        if self._stats is None:
            st = {k: [0] * C for k in ("tp", "fp", "fn", "dagger_count")}
            st.update({k: [0.0] * C for k in ("iou", "dagger_iou")})
        else:
            st = {k: v.tolist() for k, v in self._stats.items()}
        things = set(self.thing_ids)
        per_class = []
        for c in range(C):
            tp, fp, fn, iou = st["tp"][c], st["fp"][c], st["fn"][c], st["iou"][c]
            nan = float("nan")
            if tp + fp + fn > 0:
                denom = tp + 0.5 * fp + 0.5 * fn
                pq, sq, rq = iou / denom, (iou / tp if tp else 0.0), tp / denom
            else:
                pq = sq = rq = nan
            if c in things:
                dagger = pq
            else:
                cnt = st["dagger_count"][c]
                dagger = st["dagger_iou"][c] / cnt if cnt else nan
            per_class.append({"name": self.class_names[c], "PQ": pq, "SQ": sq, "RQ": rq, "PQ_dagger": dagger,
                              "TP": int(tp), "FP": int(fp), "FN": int(fn)})

        out: dict[str, Any] = {}
        for suffix, members in (("", range(C)), ("_things", sorted(things)),
                                ("_stuff", [c for c in range(C) if c not in things])):
            rows = [per_class[c] for c in members if not math.isnan(per_class[c]["PQ"])]
            for key in ("PQ", "SQ", "RQ"):
                out[key + suffix] = sum(r[key] for r in rows) / len(rows) if rows else float("nan")
            out["n" + suffix] = len(rows)
        out["PQ_dagger"] = nanmean([r["PQ_dagger"] for r in per_class])
        out["num_images"] = self.num_images
        out["per_class"] = per_class
        return out
