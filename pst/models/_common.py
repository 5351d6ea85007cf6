"""Pieces shared by the semantic and instance networks."""

from __future__ import annotations

import torch
from torch import nn

# ImageNet statistics (torchvision's pretrained weights expect them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """[B, 3, H, W] RGB in [0, 1] -> ImageNet-normalised. Buffers are not saved in state dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def check_image(x: torch.Tensor) -> None:
    """Raise a clear error for anything but a floating [B, 3, H, W] tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x should be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"x should have shape [B, 3, H, W], got {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x should be a floating tensor (RGB in [0, 1]), got {x.dtype}")


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def head_channels(width: int, base: int) -> int:
    """``base`` channels at width 64, scaled linearly with ``width``, at least 8."""
    return max(8, base * width // 64)
