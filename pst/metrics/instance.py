"""Instance-level AP in the manner of cityscapesScripts' ``evalInstanceLevelSemanticLabeling``.

Predictions are scored masks with a thing class; they may overlap. For every thing
class and every overlap threshold t in 0.5:0.95:0.05 (``np.arange(0.5, 1.0, 0.05)``):

* ground-truth objects are the thing instances (instance >= 1) with at least
  ``min_region_size`` (100) pixels; crowd regions (instance 0) and smaller objects are
  "ignore" regions;
* a prediction and an object of the same class match when their IoU (plain, void
  included) exceeds t. An object with matches is a true positive scored with the best
  matching prediction; the other predictions that match it are false positives. An
  object without match is a (hard) false negative;
* a prediction that matches no object is skipped if it exceeds t with a crowd or small
  region of its class; otherwise it is a false positive unless the fraction of its
  pixels on void, crowd and small regions of its class is above t (a crowd region
  smaller than ``min_region_size`` counts twice there, as in the official code);
* AP integrates the precision-recall curve step-wise exactly as the official script:
  one point per distinct score, precision 1 at recall 0 appended. A class without
  objects in the whole data set has AP NaN (left out of the mean); with objects but no
  predictions, 0.

``AP`` averages the 10 thresholds and the classes, ``AP50`` is the mean over classes at
t = 0.5. Void pixels are ground-truth void (negative ids or class ``ignore_index``);
``update(..., void_mask=...)`` overrides them (the Cityscapes reader uses this for the
official script's quirk that caravan/trailer *instances* are not void for AP).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from pst.labels import IGNORE, LABEL_DIVISOR, LabelSpace
from pst.metrics._common import as_int_tensor, nanmean, resolve_classes

__all__ = ["InstanceAP", "cityscapes_average_precision"]

# np.arange, not a literal list: the thresholds must be the very floats of the official script
OVERLAPS = np.arange(0.5, 1.0, 0.05)

_IGNORED, _TP, _FP = 0, 1, 2


def cityscapes_average_precision(scores: np.ndarray, is_true: np.ndarray, hard_fn: int) -> float:
    """Area under the step-wise precision-recall curve of the Cityscapes instance script.

    Args:
        scores: [E] float64 confidences of the examples (TPs and FPs).
        is_true: [E] bool, True for the TPs.
        hard_fn: ground-truth objects that no prediction matched.
    Returns:
        AP in [0, 1]; 0.0 when there are no examples.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_true = np.asarray(is_true, dtype=np.float64)
    if scores.size == 0:
        return 0.0
    order = np.argsort(scores)
    s_sorted = scores[order]
    cum_true = np.cumsum(is_true[order])
    _, first = np.unique(s_sorted, return_index=True)
    n_examples = len(s_sorted)
    n_true = cum_true[-1]
    cum_true = np.append(cum_true, 0)  # index -1 -> 0 trues below the lowest score
    below = cum_true[first - 1]
    tp = n_true - below
    fp = n_examples - first - tp
    fn = below + hard_fn
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate([recall[:1], recall, [0.0]])
    step = 0.5 * (padded[:-2] - padded[2:])
    return float(np.dot(precision, step))


class InstanceAP:
    """Streaming Cityscapes instance AP (AP@[.5:.95], AP50), per class and mean.

    Args:
        label_space: classes and thing ids; or ``num_classes`` + ``thing_ids``.
        label_divisor, ignore_index: of the ground-truth panoptic maps.
        min_region_size: smallest ground-truth object (pixels) that counts (official: 100).
    """

    def __init__(
        self,
        label_space: LabelSpace | None = None,
        *,
        num_classes: int | None = None,
        thing_ids: Sequence[int] | None = None,
        label_divisor: int = LABEL_DIVISOR,
        ignore_index: int = IGNORE,
        min_region_size: int = 100,
    ):
        self.num_classes, self.thing_ids, self.class_names = resolve_classes(label_space, num_classes, thing_ids)
        if not self.thing_ids:
            raise ValueError("InstanceAP needs at least one thing class")
        self.label_divisor = int(label_divisor)
        self.ignore_index = int(ignore_index)
        self.min_region_size = int(min_region_size)
        self.overlaps = OVERLAPS
        self.reset()

    def reset(self) -> None:
        T, C = len(self.overlaps), self.num_classes
        self._labels: list[torch.Tensor] = []
        self._scores: list[torch.Tensor] = []
        self._status: list[torch.Tensor] = []
        self._hard_fn = np.zeros((T, C), dtype=np.int64)
        self._n_gt = np.zeros(C, dtype=np.int64)
        self._n_pred = np.zeros(C, dtype=np.int64)
        self.num_images = 0

    def update(
        self,
        masks: Any,
        labels: Any,
        scores: Any,
        gt: Any,
        *,
        void_mask: Any = None,
    ) -> None:
        """Add one image.

        Args:
            masks: [N, H, W] bool (or 0/1) predicted masks, may overlap; N may be 0.
            labels: [N] int train ids (thing classes).
            scores: [N] float confidences.
            gt: [H, W] int ground-truth panoptic map (thing + instance 0 = crowd).
            void_mask: optional [H, W] bool, the pixels that count as void (default:
                the void pixels of ``gt``).
        """
        g = as_int_tensor(gt, "gt")
        if g.dim() != 2:
            raise ValueError(f"gt should have shape [H, W], got {tuple(g.shape)}")
        device = g.device
        H, W = g.shape
        if isinstance(masks, np.ndarray):
            masks = torch.from_numpy(masks)
        if not isinstance(masks, torch.Tensor):
            raise TypeError(f"masks should be a torch.Tensor or numpy array, got {type(masks).__name__}")
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (H, W):
            raise ValueError(f"masks should have shape [N, {H}, {W}] to match gt, got {tuple(masks.shape)}")
        if masks.dtype != torch.bool:
            if masks.is_floating_point() or bool(((masks != 0) & (masks != 1)).any()):
                raise ValueError(f"masks should be bool or 0/1 integers, got dtype {masks.dtype}")
            masks = masks != 0
        masks = masks.to(device)
        N = masks.shape[0]
        lab = as_int_tensor(labels, "labels").to(device).reshape(-1)
        sc = torch.as_tensor(scores).to(device=device, dtype=torch.float64).reshape(-1)
        if lab.numel() != N or sc.numel() != N:
            raise ValueError(f"labels and scores should have one entry per mask ({N}), got {lab.numel()} and {sc.numel()}")
        if bool(torch.isnan(sc).any()):
            raise ValueError("scores should not be NaN")
        is_thing = torch.zeros(self.num_classes, dtype=torch.bool, device=device)
        is_thing[list(self.thing_ids)] = True
        bad = (lab < 0) | (lab >= self.num_classes)
        if bool(bad.any()) or not bool(is_thing[lab.clamp(0, self.num_classes - 1)].all()):
            raise ValueError(f"labels should be thing ids {self.thing_ids}, got {sorted(set(lab.tolist()))}")

        div, C = self.label_divisor, self.num_classes
        gflat = g.reshape(-1)
        g_cls = torch.div(gflat, div, rounding_mode="floor")
        g_void = (gflat < 0) | (g_cls == self.ignore_index)
        bad_g = ~g_void & (g_cls >= C)
        if bool(bad_g.any()):
            raise ValueError(f"gt holds panoptic ids {sorted(set(gflat[bad_g].tolist()))[:5]} of unknown classes")
        if void_mask is None:
            void = g_void
        else:
            void = torch.as_tensor(void_mask).to(device)
            if void.shape != (H, W) or void.dtype != torch.bool:
                raise ValueError(f"void_mask should be a [{H}, {W}] bool tensor, got {void.dtype} {tuple(void.shape)}")
            void = void.reshape(-1)
        g_thing = ~g_void & is_thing[g_cls.clamp(0, C - 1)]

        # ground-truth thing segments (objects and crowd regions) -> compact index
        seg_ids, seg_inv = torch.unique(torch.where(g_thing, gflat, torch.full_like(gflat, -1)), return_inverse=True)
        has_none = bool((seg_ids < 0).any())
        seg_inv = seg_inv - int(has_none)  # -1 = no thing segment
        seg_ids = seg_ids[int(has_none):]
        G = seg_ids.numel()
        seg_cls = torch.div(seg_ids, div, rounding_mode="floor")
        seg_crowd = seg_ids % div == 0
        seg_px = torch.bincount(seg_inv[seg_inv >= 0], minlength=G)
        big = ~seg_crowd & (seg_px >= self.min_region_size)
        small = seg_px < self.min_region_size
        self._n_gt += np.bincount(seg_cls[big].cpu().numpy(), minlength=C)[:C]

        flat_masks = masks.reshape(N, H * W)
        pred_px = flat_masks.sum(1)
        nonempty = pred_px > 0
        self._n_pred += np.bincount(lab[nonempty].cpu().numpy(), minlength=C)[:C]
        T = len(self.overlaps)
        status = torch.zeros((N, T), dtype=torch.int8, device=device)
        if N:
            n_idx, pix = flat_masks.nonzero(as_tuple=True)
            sp = seg_inv[pix]
            on_seg = sp >= 0
            inter = torch.bincount(n_idx[on_seg] * max(G, 1) + sp[on_seg], minlength=N * max(G, 1))[: N * G].view(N, G)
            void_inter = torch.bincount(n_idx[void[pix]], minlength=N)
            same = lab[:, None] == seg_cls[None, :]
            union = seg_px[None, :] + pred_px[:, None] - inter
            iou = inter.to(torch.float64) / union.clamp(min=1).to(torch.float64)
            thr = torch.as_tensor(self.overlaps, dtype=torch.float64, device=device)
            over = same[None] & (inter[None] > 0) & (iou[None] > thr[:, None, None])  # [T, N, G]
            on_big = over & big[None, None, :]
            # best-scoring matched prediction of each object -> TP; other matches -> FP
            masked = torch.where(on_big, sc[None, :, None], torch.full_like(iou[None], -torch.inf))
            best = masked.argmax(dim=1)  # [T, G]
            has_match = on_big.any(dim=1)  # [T, G]
            is_best = torch.zeros((T, N), dtype=torch.bool, device=device)
            t_idx, g_idx = has_match.nonzero(as_tuple=True)
            is_best[t_idx, best[t_idx, g_idx]] = True
            matched_big = on_big.any(dim=2)  # [T, N]
            found = over.any(dim=2)
            ign_px = void_inter + (inter * (same & seg_crowd[None, :])).sum(1) + (inter * (same & small[None, :])).sum(1)
            frac = ign_px.to(torch.float64) / pred_px.clamp(min=1).to(torch.float64)
            free_fp = ~found & (frac[None, :] <= thr[:, None])
            st = torch.where(matched_big & is_best, _TP, torch.where(matched_big | free_fp, _FP, _IGNORED))
            status = torch.where(nonempty[None, :], st, torch.zeros_like(st)).T.to(torch.int8)
            # hard false negatives: objects without any match
            miss = big[None, :] & ~has_match  # [T, G]
        else:
            miss = big[None, :].expand(T, G)
        t_m, g_m = miss.nonzero(as_tuple=True)
        np.add.at(self._hard_fn, (t_m.cpu().numpy(), seg_cls[g_m].cpu().numpy()), 1)
        keep = nonempty
        self._labels.append(lab[keep].cpu())
        self._scores.append(sc[keep].cpu())
        self._status.append(status[keep].cpu())
        self.num_images += 1

    def compute(self) -> dict[str, Any]:
        """``{"AP", "AP50", "per_class": [{"name", "AP", "AP50"}, ...] (index = train id,
        NaN for stuff classes and thing classes without objects), "ap_matrix": [T][C]}``."""
        C, T = self.num_classes, len(self.overlaps)
        labels = torch.cat(self._labels).numpy() if self._labels else np.zeros(0, dtype=np.int64)
        scores = torch.cat(self._scores).numpy() if self._scores else np.zeros(0)
        status = torch.cat(self._status).numpy() if self._status else np.zeros((0, T), dtype=np.int8)
        ap = np.full((T, C), np.nan)
        for c in self.thing_ids:
            if self._n_gt[c] == 0:
                continue
            if self._n_pred[c] == 0:
                ap[:, c] = 0.0
                continue
            of_c = labels == c
            for t in range(T):
                st = status[of_c, t]
                kept = st != _IGNORED
                ap[t, c] = cityscapes_average_precision(scores[of_c][kept], st[kept] == _TP, int(self._hard_fn[t, c]))
        per_class = []
        for c in range(C):
            per_class.append({"name": self.class_names[c], "AP": float(np.mean(ap[:, c])), "AP50": float(ap[0, c])})
        return {
            "AP": nanmean([r["AP"] for r in per_class]),
            "AP50": nanmean([r["AP50"] for r in per_class]),
            "per_class": per_class,
            "ap_matrix": ap.tolist(),
            "num_images": self.num_images,
        }
