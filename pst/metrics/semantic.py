"""Semantic segmentation IoU from a streaming confusion matrix (cityscapesScripts' rules).

The confusion matrix has one row per class (ground truth; ``ignore_index`` pixels are
left out) and one column per class plus a last "no class" column for predicted
``ignore_index`` pixels. As in ``evalPixelLevelSemanticLabeling``, a pixel predicted as
no class (e.g. a Cityscapes label id that is not evaluated) is a false negative of its
ground-truth class and a false positive of nothing. ``IoU_c = TP / (TP + FP + FN)``,
NaN when the class is absent from both; mIoU averages the classes that are not NaN.
"""

from __future__ import annotations

from typing import Any

import torch

from pst.labels import IGNORE, LabelSpace
from pst.metrics._common import check_pair, nanmean, resolve_classes

__all__ = ["SemanticIoU"]


class SemanticIoU:
    """Streaming per-class IoU and mIoU.

    Args:
        label_space: gives C and the class names; or pass ``num_classes``.
        num_classes: C, when there is no label space (class names are "0".."C-1").
        ignore_index: ground-truth pixels with this value are not counted; predicted
            pixels with it count as "no class".
    """

    def __init__(self, label_space: LabelSpace | None = None, *, num_classes: int | None = None,
                 ignore_index: int = IGNORE):
        self.num_classes, _, self.class_names = resolve_classes(label_space, num_classes, None, need_things=False)
        self.ignore_index = int(ignore_index)
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"ignore_index={ignore_index} is a class id (num_classes={self.num_classes})")
        self.reset()

    def reset(self) -> None:
        self.confusion: torch.Tensor | None = None  # [C, C + 1] int64

    def update(self, pred: Any, gt: Any) -> None:
        """Add images.

        Args:
            pred: [H, W] or [B, H, W] integer train ids, ``ignore_index`` = no class.
            gt: same shape, train ids, ``ignore_index`` = void.
        """
        p, g = check_pair(pred, gt, "semantic maps")
        C = self.num_classes
        valid = g != self.ignore_index
        bad_g = valid & ((g < 0) | (g >= C))
        if bool(bad_g.any()):
            raise ValueError(f"gt holds class ids {sorted(set(g[bad_g].tolist()))[:5]} outside [0, {C}) "
                             f"and not ignore_index={self.ignore_index}")
        p_none = p == self.ignore_index
        bad_p = ~p_none & ((p < 0) | (p >= C))
        if bool(bad_p.any()):
            raise ValueError(f"pred holds class ids {sorted(set(p[bad_p].tolist()))[:5]} outside [0, {C}) "
                             f"and not ignore_index={self.ignore_index}")
        p = torch.where(p_none, torch.full_like(p, C), p)
        idx = g[valid] * (C + 1) + p[valid]
        conf = torch.bincount(idx, minlength=C * (C + 1)).view(C, C + 1)
        self.confusion = conf if self.confusion is None else self.confusion + conf.to(self.confusion.device)

    def compute(self) -> dict[str, Any]:
        """``{"mIoU": float, "IoU": [C floats, NaN for absent classes], "pixel_accuracy": float,
        "per_class": {name: IoU}}``, fractions in [0, 1]."""
        C = self.num_classes
        conf = self.confusion if self.confusion is not None else torch.zeros(C, C + 1, dtype=torch.long)
        conf = conf.cpu().to(torch.float64)
        tp = conf.diagonal()
        fn = conf.sum(1) - tp
        fp = conf[:, :C].sum(0) - tp
        denom = tp + fp + fn
        iou = [float(t / d) if d > 0 else float("nan") for t, d in zip(tp.tolist(), denom.tolist())]
        total = float(conf.sum())
        return {
            "mIoU": nanmean(iou),
            "IoU": iou,
            "pixel_accuracy": float(tp.sum()) / total if total else float("nan"),
            "per_class": dict(zip(self.class_names, iou)),
        }
