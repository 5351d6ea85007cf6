"""The panoptic network of a run: one semantic model plus the instance models of every
category-centric mode in ``cfg.categories``, in one module (so that one optimizer,
one DDP wrapper and one EMA teacher cover them all)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["PanopticNet", "instance_groups", "build_panoptic_net", "build_param_groups", "group_key", "set_lr",
           "build_optimizer"]


def group_key(mode: str, group: str) -> str:
    """ModuleDict key of the instance model of ``group`` in category ``mode``."""
    return f"{mode}__{group.replace(' ', '_').replace('.', '_')}"


def instance_groups(label_space, categories: Sequence[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """key -> (mode, thing train ids) for every instance model of the given modes."""
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for mode in categories:
        for group, ids in label_space.groups(mode).items():
            out[group_key(mode, group)] = (mode, tuple(int(i) for i in ids))
    return out


class PanopticNet(nn.Module):
    """Semantic model + instance models.

    Args:
        semantic: forward(x [B,3,H,W]) -> logits [B,C,H,W].
        instance: key -> module with forward(x) -> {"embedding": [B,D,H,W], "objectness": [B,H,W] logits}.
        groups: key -> (mode, thing train ids), as :func:`instance_groups` gives.
    """

    def __init__(self, semantic: nn.Module, instance: dict[str, nn.Module],
                 groups: dict[str, tuple[str, tuple[int, ...]]]):
        super().__init__()
        if set(instance) != set(groups):
            raise ValueError(f"instance models {sorted(instance)} and groups {sorted(groups)} should match")
        self.semantic = semantic
        self.instance = nn.ModuleDict(instance)
        self.groups = dict(groups)

    def keys_for(self, mode: str) -> list[str]:
        return [k for k, (m, _) in self.groups.items() if m == mode]

    def forward(self, x: torch.Tensor, *, semantic: bool = True, keys: Sequence[str] | None = None) -> dict:
        """Returns ``{"logits": [B,C,H,W] (if semantic), "instance": {key: {"embedding", "objectness"}}}``."""
        out: dict = {}
        if semantic:
            out["logits"] = self.semantic(x)
        ks = list(self.instance) if keys is None else list(keys)
        out["instance"] = {k: self.instance[k](x) for k in ks}
        return out


def build_panoptic_net(cfg) -> PanopticNet:
    """Build the networks of a :class:`pst.config.Config` with pst.models."""
    from pst.models import build_instance, build_semantic

    m = cfg.model
    space = cfg.space
    semantic = build_semantic(m.semantic, num_classes=space.num_classes, backbone=m.backbone,
                              output_stride=m.output_stride, pretrained=m.pretrained, width=m.width,
                              decoder_stride=m.decoder_stride)
    groups = instance_groups(space, cfg.categories)
    inst = {k: build_instance(backbone=m.instance_backbone or m.backbone, embed_dim=m.embed_dim,
                              pretrained=m.pretrained, width=m.width, coord_scale=m.embed_coords)
            for k in groups}
    return PanopticNet(semantic, inst, groups)


def build_param_groups(net: PanopticNet, lr: float, *, head_lr_mult: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups (pst.models.param_groups per sub-model: new layers
    get ``head_lr_mult`` times the rate); each group remembers its ``initial_lr``."""
    from pst.models import param_groups

    groups = param_groups(net.semantic, lr, head_lr_mult=head_lr_mult, weight_decay=weight_decay)
    for m in net.instance.values():
        groups += param_groups(m, lr, head_lr_mult=head_lr_mult, weight_decay=weight_decay)
    for g in groups:
        g["initial_lr"] = g["lr"]
    return groups


def build_optimizer(net: PanopticNet, stage_cfg) -> torch.optim.Optimizer:
    """The optimizer of a training stage (``cfg.source`` or ``cfg.selftrain``): SGD with
    momentum (DeepLab/SAC practice) or AdamW (``optimizer: adamw``, beta1 = ``momentum``),
    over :func:`build_param_groups`."""
    groups = build_param_groups(net, stage_cfg.lr, head_lr_mult=stage_cfg.head_lr_mult,
                                weight_decay=stage_cfg.weight_decay)
    if stage_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=stage_cfg.lr, betas=(stage_cfg.momentum, 0.999))
    if stage_cfg.optimizer != "sgd":
        raise ValueError(f"optimizer should be 'sgd' or 'adamw', got {stage_cfg.optimizer!r}")
    return torch.optim.SGD(groups, lr=stage_cfg.lr, momentum=stage_cfg.momentum)


def set_lr(optimizer: torch.optim.Optimizer, step: int, total: int, *, power: float, warmup: int = 0) -> float:
    """Poly schedule ``(1 - step/total)^power`` with linear warm-up; returns the factor."""
    f = (1.0 - min(step, total - 1) / max(total, 1)) ** power
    if warmup and step < warmup:
        f *= (step + 1) / warmup
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * f
    return f
