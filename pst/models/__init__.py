"""Networks: DeepLab V2/V3/V3+ (semantic) and a U-Net embedding network (instance) on
ResNet-18/34/50/101 backbones whose state dicts follow torchvision's layout.

    build_semantic(name, *, num_classes, backbone="resnet101", output_stride=8, pretrained=None, width=64)
    build_instance(*, backbone="resnet101", embed_dim=8, pretrained=None, width=64)
    param_groups(model, lr, *, head_lr_mult=10.0, weight_decay=5e-4)
"""

from __future__ import annotations

from torch import nn

from pst.models.deeplab import SEMANTIC_HEADS, SemanticModel, build_semantic
from pst.models.resnet import ARCHS, ResNet, load_pretrained, resnet, torchvision_keys
from pst.models.unet import InstanceModel, build_instance

__all__ = [
    "ARCHS",
    "SEMANTIC_HEADS",
    "InstanceModel",
    "ResNet",
    "SemanticModel",
    "build_instance",
    "build_semantic",
    "load_pretrained",
    "param_groups",
    "resnet",
    "torchvision_keys",
]


def param_groups(model: nn.Module, lr: float, *, head_lr_mult: float = 10.0, weight_decay: float = 5e-4
                 ) -> list[dict]:
    """Optimizer parameter groups: backbone at ``lr``, everything else (new layers) at
    ``lr * head_lr_mult`` (SAC/DeepLab practice); weight decay on conv/linear weights only,
    none on BatchNorm parameters and biases.

    Each group also carries ``"name"`` and ``"lr_mult"`` (the factor over ``lr``) so a
    schedule can set ``group["lr"] = base_lr(step) * group["lr_mult"]``. Frozen
    parameters (``requires_grad=False``) and empty groups are left out.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model should be an nn.Module, got {type(model).__name__}")
    if not lr > 0:
        raise ValueError(f"lr should be > 0, got {lr!r}")
    backbone = getattr(model, "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if id(p) in in_backbone else "head"
        decay = p.dim() > 1  # conv / linear weights; BN weights and all biases are 1-D
        buckets.setdefault((part, decay), []).append(p)
    groups = []
    for part, mult in (("backbone", 1.0), ("head", float(head_lr_mult))):
        for decay in (True, False):
            params = buckets.get((part, decay))
            if params:
                groups.append({"params": params, "lr": lr * mult, "lr_mult": mult,
                               "weight_decay": weight_decay if decay else 0.0,
                               "name": f"{part}{'' if decay else '_no_decay'}"})
    return groups
