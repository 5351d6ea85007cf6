"""DeepLab semantic segmentation heads on the dilated ResNet of :mod:`pst.models.resnet`.

- DeepLabV2 (Chen et al. 2017): ASPP as a *sum* of four dilated 3x3 classifiers, rates
  6/12/18/24, on layer4 (the network of AdaptSegNet/SAC, output stride 8).
- DeepLabV3 (Chen et al. 2017b): ASPP of a 1x1, three dilated 3x3 (rates 6/12/18 at
  output stride 16, doubled at 8) and image pooling, concatenated and projected.
- DeepLabV3+ (Chen et al. 2018): DeepLabV3's ASPP plus a decoder on layer1 (stride 4).

Head widths are 256 (ASPP/decoder) and 48 (low-level projection) at ``width=64`` and
scale linearly with ``width``. Every model normalises its input internally and returns
logits at input resolution.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from pst.models._common import Normalize, check_image, conv_bn_relu, head_channels
from pst.models.resnet import resnet

__all__ = ["DeepLabV2Head", "DeepLabV3Head", "DeepLabV3PlusHead", "SemanticModel", "SEMANTIC_HEADS",
           "build_semantic"]


class DeepLabV2Head(nn.Module):
    """Sum of dilated 3x3 convs from layer4 straight to class logits."""

    def __init__(self, channels: tuple[int, ...], num_classes: int, *, width: int, output_stride: int,
                 rates: tuple[int, ...] = (6, 12, 18, 24)) -> None:
        super().__init__()
        cin = channels[-1]
        self.branches = nn.ModuleList(nn.Conv2d(cin, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:  # DeepLab's classifier init
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class ASPP(nn.Module):
    """DeepLabV3 ASPP: 1x1, dilated 3x3s and image pooling -> concat -> 1x1 projection.

    The pooling branch has no BatchNorm (BN on a 1x1 map fails with batch 1 in training).
    """

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, 1))


def _aspp_rates(output_stride: int) -> tuple[int, int, int]:
    return (12, 24, 36) if output_stride == 8 else (6, 12, 18)


class DeepLabV3Head(nn.Module):
    """ASPP -> 3x3 conv -> 1x1 classifier, on layer4."""

    def __init__(self, channels: tuple[int, ...], num_classes: int, *, width: int, output_stride: int) -> None:
        super().__init__()
        c = head_channels(width, 256)
        self.aspp = ASPP(channels[-1], c, _aspp_rates(output_stride))
        self.conv = conv_bn_relu(c, c)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.conv(self.aspp(feats[-1])))


class DeepLabV3PlusHead(nn.Module):
    """ASPP on layer4, upsampled to layer1 (stride 4), concatenated with its 1x1 projection,
    two 3x3 convs, 1x1 classifier. ``decoder_stride=2`` takes the low-level features from
    the stem (stride 2) instead: the same decoder at twice the resolution, for small inputs
    (the 128x256 toy scenes are 1/8 of a Cityscapes frame)."""

    def __init__(self, channels: tuple[int, ...], num_classes: int, *, width: int, output_stride: int,
                 decoder_stride: int = 4) -> None:
        super().__init__()
        if decoder_stride not in (2, 4):
            raise ValueError(f"decoder_stride should be 2 or 4, got {decoder_stride!r}")
        c = head_channels(width, 256)
        low = head_channels(width, 48)
        self.low_index = 1 if decoder_stride == 4 else 0
        self.aspp = ASPP(channels[-1], c, _aspp_rates(output_stride))
        self.low = conv_bn_relu(channels[self.low_index], low, 1)
        self.fuse = nn.Sequential(conv_bn_relu(c + low, c), conv_bn_relu(c, c))
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        low = self.low(feats[self.low_index])
        x = F.interpolate(self.aspp(feats[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, low], 1)))


SEMANTIC_HEADS: dict[str, type[nn.Module]] = {
    "deeplabv2": DeepLabV2Head,
    "deeplabv3": DeepLabV3Head,
    "deeplabv3plus": DeepLabV3PlusHead,
}


class SemanticModel(nn.Module):
    """Backbone + head. ``forward(x [B, 3, H, W] float in [0, 1])`` -> logits [B, C, H, W]
    (float32, or the autocast dtype under autocast) at input resolution.

    ``backbone`` holds the (pretrainable) ResNet, ``head`` the new layers; see
    :func:`pst.models.param_groups`.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x)
        logits = self.head(self.backbone(self.normalize(x)))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_semantic(name: str, *, num_classes: int, backbone: str = "resnet101", output_stride: int = 8,
                   pretrained: str | os.PathLike | None = None, width: int = 64,
                   decoder_stride: int = 4) -> SemanticModel:
    """A DeepLab model chosen by name from :data:`SEMANTIC_HEADS`.

    Args:
        name: ``"deeplabv2" | "deeplabv3" | "deeplabv3plus"``.
        num_classes: output channels C.
        backbone: ``"resnet18" | "resnet34" | "resnet50" | "resnet101"``.
        output_stride: 8 or 16 (dilation replaces the last strides).
        pretrained: local torchvision-layout ImageNet ``.pth`` for the backbone, or None.
        width: backbone base width (64 = torchvision; 16 = tiny CPU model).
        decoder_stride: DeepLabV3+ only: 4 (the paper's) or 2 (low-level features from the stem).

    Returns:
        :class:`SemanticModel`; ``forward(x [B, 3, H, W] float in [0, 1]) -> [B, C, H, W]`` logits.
    """
    if name not in SEMANTIC_HEADS:
        raise ValueError(f"name should be one of {sorted(SEMANTIC_HEADS)}, got {name!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes should be a positive int, got {num_classes!r}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride should be 8 or 16, got {output_stride!r}")
    net = resnet(backbone, width=width, output_stride=output_stride, pretrained=pretrained)
    extra = {"decoder_stride": decoder_stride} if name == "deeplabv3plus" else {}
    if decoder_stride != 4 and not extra:
        raise ValueError(f"decoder_stride applies to deeplabv3plus only, got {decoder_stride} for {name!r}")
    head = SEMANTIC_HEADS[name](net.channels, num_classes, width=width, output_stride=output_stride, **extra)
    return SemanticModel(net, head, num_classes)
