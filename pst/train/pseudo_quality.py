"""How good are the self-training pseudo-labels? Scored against target labels that
training never sees.

When the target data set has labels (the toy target always has; a Cityscapes run with
``data.target.has_labels: true`` has), :func:`pst.train.selftrain.self_train` feeds every
training batch's pseudo-labels to a :class:`PseudoLabelQuality` together with the batch's
hidden labels, and at every evaluation step (``selftrain.eval_every`` and the last step)
stores what accumulated over the batches *since the previous evaluation step* (all of
them, not a sample: one batch alone is noisy), then starts again. The labels go nowhere
else: no loss, no threshold, no statistic of training reads them.

Per category mode (the instance pseudo-labels of its instance models, merged as
:func:`pst.train.evaluate.predict` merges them, :func:`pst.train.infer.merge_by_score`):

* ``mIoU``: of the semantic pseudo-labels over the pixels they keep (pixels under the
  class-wise threshold are left out, not counted as errors); ``kept``: the fraction of
  pixels the thresholds keep;
* ``PQ_things`` / ``SQ_things`` / ``RQ_things``: of the pseudo-panoptic map (semantic
  pseudo-labels fused with the instance pseudo-labels, no area filter) against the
  ground truth, with PQ's matching (IoU > 0.5) and void rules;
* ``precision`` = TP / (TP + FP) and ``recall`` = TP / (TP + FN) of those matches over
  all thing classes, and ``FP_share`` = 1 - precision: the share of instance
  pseudo-labels that match no object. Its rise over self-training is the known failure
  signature (the student learns to produce the teacher's false instances).

Values are fractions; None where undefined (e.g. no instance pseudo-label at all).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from pst.labels import IGNORE, LabelSpace

__all__ = ["PseudoLabelQuality", "mode_instance_maps", "QUALITY_KEYS"]

QUALITY_KEYS = ("mIoU", "kept", "PQ_things", "SQ_things", "RQ_things", "precision", "recall", "FP_share")


def mode_instance_maps(groups: dict, maps: dict[str, torch.Tensor], objectness: dict[str, torch.Tensor],
                       confidence: torch.Tensor, modes: Sequence[str]) -> dict[str, torch.Tensor]:
    """One instance map per category mode: the maps of its instance models (``groups``:
    key -> (mode, thing ids)), merged by score (mean objectness x confidence) with
    :func:`pst.train.infer.merge_by_score` when a mode has several."""
    from pst.train.infer import merge_by_score

    out = {}
    for mode in modes:
        keys = [k for k, (m, _) in groups.items() if m == mode]
        if keys:
            out[mode] = merge_by_score([maps[k] for k in keys], [objectness[k] * confidence for k in keys])[0]
    return out


def _none_if_nan(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


class PseudoLabelQuality:
    """Streaming quality of pseudo-labels against hidden labels (module docstring).

    Args:
        space: the label space.
        modes: the category modes whose instance pseudo-labels are scored.
    """

    def __init__(self, space: LabelSpace, modes: Sequence[str]):
        if not modes:
            raise ValueError("modes should name at least one category mode")
        self.space = space
        self.modes = list(modes)
        self.reset()

    def reset(self) -> None:
        from pst.metrics.panoptic import PanopticQuality
        from pst.metrics.semantic import SemanticIoU

        self._iou = SemanticIoU(label_space=self.space)
        self._pq = {m: PanopticQuality(self.space) for m in self.modes}
        self._kept = 0
        self._pixels = 0
        self.images = 0
        self.batches = 0

    @torch.no_grad()
    def update(self, semantic: torch.Tensor, instances: dict[str, torch.Tensor], gt_semantic: torch.Tensor,
               gt_instances: torch.Tensor) -> None:
        """Add a batch.

        Args:
            semantic: [B, H, W] int64 semantic pseudo-labels (``IGNORE`` under threshold).
            instances: category mode -> [B, H, W] int64 instance pseudo-labels (0 = none).
            gt_semantic, gt_instances: [B, H, W] the hidden labels (train ids, instance ids).
        """
        from pst.panoptic import fuse
        from pst.train.data import gt_panoptic

        missing = [m for m in self.modes if m not in instances]
        if missing:
            raise ValueError(f"no instance pseudo-labels for category modes {missing}")
        gt_sem = gt_semantic.to(semantic.device).long()
        ignored = semantic == IGNORE
        self._iou.update(semantic, torch.where(ignored, torch.full_like(gt_sem, IGNORE), gt_sem))
        self._kept += int((~ignored).sum())
        self._pixels += semantic.numel()
        gt = gt_panoptic(gt_sem, gt_instances.to(semantic.device), self.space.thing_ids)
        for mode in self.modes:
            pan = fuse(semantic, instances[mode], thing_ids=self.space.thing_ids, num_classes=self.space.num_classes,
                       thing_area=0, stuff_area=0)
            self._pq[mode].update(pan, gt)
        self.images += semantic.shape[0]
        self.batches += 1

    def compute(self) -> list[dict]:
        """One dict per mode: ``mode``, ``images``, ``batches``, :data:`QUALITY_KEYS` and
        the thing counts ``TP``, ``FP``, ``FN``."""
        miou = self._iou.compute()["mIoU"]
        kept = self._kept / self._pixels if self._pixels else float("nan")
        things = set(self.space.thing_ids)
        out = []
        for mode in self.modes:
            r = self._pq[mode].compute()
            tp, fp, fn = (sum(row[k] for c, row in enumerate(r["per_class"]) if c in things)
                          for k in ("TP", "FP", "FN"))
            precision = tp / (tp + fp) if tp + fp else float("nan")
            rec = {"mode": mode, "images": self.images, "batches": self.batches, "mIoU": miou, "kept": kept,
                   "PQ_things": r["PQ_things"], "SQ_things": r["SQ_things"], "RQ_things": r["RQ_things"],
                   "precision": precision, "recall": tp / (tp + fn) if tp + fn else float("nan"),
                   "FP_share": 1.0 - precision}
            out.append({**{k: (_none_if_nan(v) if k in QUALITY_KEYS else v) for k, v in rec.items()},
                        "TP": int(tp), "FP": int(fp), "FN": int(fn)})
        return out
