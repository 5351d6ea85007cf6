"""Input checks and label-space resolution shared by the metrics."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from pst._checks import INT_DTYPES
from pst.labels import LabelSpace


def as_int_tensor(x: Any, name: str) -> torch.Tensor:
    """An int64 tensor from a torch tensor (kept on its device) or a numpy array."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"{name} should hold integers, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype not in INT_DTYPES:
        raise TypeError(f"{name} should be an integer tensor, got dtype {x.dtype}")
    return x.long()


def check_pair(pred: Any, gt: Any, what: str = "maps") -> tuple[torch.Tensor, torch.Tensor]:
    """pred, gt as int64 tensors of one shape, [H, W] or [B, H, W] -> [B, H*W] (pred moved to gt's device)."""
    p = as_int_tensor(pred, "pred")
    g = as_int_tensor(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt should have the same shape, got {tuple(p.shape)} and {tuple(g.shape)}")
    if p.dim() not in (2, 3):
        raise ValueError(f"pred and gt {what} should have shape [H, W] or [B, H, W], got {tuple(p.shape)}")
    p = p.to(g.device)
    if p.dim() == 2:
        p, g = p[None], g[None]
    n = p[0].numel() if p.shape[0] else 0
    return p.reshape(p.shape[0], n), g.reshape(g.shape[0], n)


def resolve_classes(
    label_space: LabelSpace | None,
    num_classes: int | None,
    thing_ids: Sequence[int] | None,
    *,
    need_things: bool = True,
) -> tuple[int, tuple[int, ...], tuple[str, ...]]:
    """(num_classes, thing ids, class names) from a label space or explicit arguments."""
    if label_space is not None and not isinstance(label_space, LabelSpace):
        raise TypeError(f"label_space should be a pst.labels.LabelSpace (or pass num_classes=...), "
                        f"got {type(label_space).__name__}")
    if label_space is not None:
        if num_classes is not None and num_classes != label_space.num_classes:
            raise ValueError(
                f"num_classes={num_classes} disagrees with label space {label_space.name!r} "
                f"({label_space.num_classes} classes)")
        if thing_ids is not None and tuple(thing_ids) != label_space.thing_ids:
            raise ValueError(f"thing_ids={tuple(thing_ids)} disagree with label space {label_space.name!r} "
                             f"({label_space.thing_ids})")
        return label_space.num_classes, label_space.thing_ids, label_space.classes
    if num_classes is None:
        raise ValueError("pass a label_space or num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes should be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    if thing_ids is None:
        if need_things:
            raise ValueError("pass thing_ids (train ids of the thing classes) with num_classes")
        thing_ids = ()
    things = tuple(int(t) for t in thing_ids)
    if len(set(things)) != len(things) or any(t < 0 or t >= num_classes for t in things):
        raise ValueError(f"thing_ids should be distinct ids in [0, {num_classes}), got {things}")
    return num_classes, things, tuple(str(i) for i in range(num_classes))


def nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN if there are none."""
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")
