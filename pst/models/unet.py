"""U-Net on a ResNet encoder with an embedding head and an objectness head.

The decoder goes from layer4 back to the stem (stride 2) through four up-blocks
(bilinear upsampling to the skip's size, concatenation, two 3x3 conv-BN-ReLU); the two
heads run at stride 2 on the last decoder block (embedding: a 1x1 conv; objectness: a
3x3 conv-BN-ReLU and a 1x1 conv, so it does not have to share its last features with the
embedding) and their outputs are bilinearly upsampled to the input size.
Decoder widths are 256/128/64/64 at ``width=64`` and scale with ``width``.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from pst.models._common import Normalize, check_image, conv_bn_relu, head_channels
from pst.models.resnet import resnet

__all__ = ["InstanceModel", "build_instance"]


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(cin + cskip, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], 1))


class InstanceModel(nn.Module):
    """``forward(x [B, 3, H, W] float in [0, 1])`` -> dict with
    ``"embedding"``: [B, D, H, W] and ``"objectness"``: [B, H, W] logits (float32, or the
    autocast dtype under autocast).

    ``backbone`` is the (pretrainable) encoder; ``decoder``, ``embed_head`` and
    ``objectness_head`` are new layers (see :func:`pst.models.param_groups`).
    """

    def __init__(self, backbone: nn.Module, *, embed_dim: int, width: int, coord_scale: float = 0.0) -> None:
        super().__init__()
        if not (coord_scale >= 0 and math.isfinite(coord_scale)):
            raise ValueError(f"coord_scale should be a finite number >= 0, got {coord_scale!r}")
        if coord_scale and embed_dim < 2:
            raise ValueError(f"coord_scale needs embed_dim >= 2 (two channels carry the coordinates), got {embed_dim}")
        self.coord_scale = float(coord_scale)
        self.normalize = Normalize()
        self.backbone = backbone
        self.embed_dim = embed_dim
        ch = backbone.channels  # stem, layer1..4
        dec = tuple(head_channels(width, c) for c in (256, 128, 64, 64))
        self.decoder = nn.ModuleList([
            UpBlock(ch[4], ch[3], dec[0]),
            UpBlock(dec[0], ch[2], dec[1]),
            UpBlock(dec[1], ch[1], dec[2]),
            UpBlock(dec[2], ch[0], dec[3]),
        ])
        c = dec[3]
        self.embed_head = nn.Conv2d(c, embed_dim, 1)
        self.objectness_head = nn.Sequential(conv_bn_relu(c, c), nn.Conv2d(c, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image(x)
        stem, c1, c2, c3, c4 = self.backbone(self.normalize(x))
        y = c4
        for block, skip in zip(self.decoder, (c3, c2, c1, stem)):
            y = block(y, skip)
        size = x.shape[-2:]
        emb = F.interpolate(self.embed_head(y), size=size, mode="bilinear", align_corners=False)
        if self.coord_scale:
            emb = add_coordinates(emb, self.coord_scale)
        obj = F.interpolate(self.objectness_head(y), size=size, mode="bilinear", align_corners=False)
        return {"embedding": emb, "objectness": obj[:, 0]}


def add_coordinates(emb: torch.Tensor, coord_scale: float) -> torch.Tensor:
    """``emb`` [B, D, H, W] with the pixel's row / column divided by ``coord_scale`` added to
    channels 0 / 1 (spatial embeddings, Neven et al. 2019): the network then predicts an
    offset towards its instance's centre, which is local and the same for look-alike
    neighbours, instead of an arbitrary code that must differ between them."""
    B, D, H, W = emb.shape
    ys = (torch.arange(H, device=emb.device, dtype=emb.dtype) + 0.5) / coord_scale
    xs = (torch.arange(W, device=emb.device, dtype=emb.dtype) + 0.5) / coord_scale
    grid = torch.stack([ys[:, None].expand(H, W), xs[None, :].expand(H, W)])  # [2, H, W]
    return torch.cat([emb[:, :2] + grid, emb[:, 2:]], dim=1)


def build_instance(*, backbone: str = "resnet101", embed_dim: int = 8, pretrained: str | os.PathLike | None = None,
                   width: int = 64, output_stride: int = 32, coord_scale: float = 0.0) -> InstanceModel:
    """U-Net instance-embedding network.

    Args:
        backbone: ``"resnet18" | "resnet34" | "resnet50" | "resnet101"`` encoder.
        embed_dim: embedding channels D.
        pretrained: local torchvision-layout ImageNet ``.pth`` for the encoder, or None.
        width: encoder base width (64 = torchvision; 16 = tiny CPU model).
        output_stride: encoder stride, 32 (plain U-Net) or 16/8 (dilated deepest stages).
        coord_scale: > 0 adds the pixel coordinates / ``coord_scale`` to embedding channels
            0 and 1 (:func:`add_coordinates`); 0 = free embeddings.

    Returns:
        :class:`InstanceModel`; ``forward(x) -> {"embedding": [B, D, H, W], "objectness": [B, H, W]}``.
    """
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
        raise ValueError(f"embed_dim should be a positive int, got {embed_dim!r}")
    net = resnet(backbone, width=width, output_stride=output_stride, pretrained=pretrained)
    return InstanceModel(net, embed_dim=embed_dim, width=width, coord_scale=coord_scale)
