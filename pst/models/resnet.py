"""ResNet backbones (He et al. 2016, "v1.5": stride on the 3x3 conv) with dilation.

Written here because torchvision cannot be imported everywhere pst runs; the module
layout, and so the state-dict keys, follow torchvision's ``resnet18/34/50/101``
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``layer1.0.downsample.0`` / ``.1``), so
ImageNet weights saved by torchvision load with :func:`load_pretrained` from a local
file. The classifier (``fc``) is not part of the backbone; its keys are skipped on load.
Nothing is downloaded.

``width`` scales every channel count: 64 is torchvision's network, 16 a tiny one for
CPU demos (pretrained weights only fit width 64). ``output_stride`` 8 or 16 replaces the
strides of layer3/layer4 (8) or layer4 (16) by dilation, as DeepLab does; 32 keeps
them (the U-Net encoder).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["ARCHS", "BasicBlock", "Bottleneck", "ResNet", "resnet", "load_pretrained", "torchvision_keys"]


class BasicBlock(nn.Module):
    """Two 3x3 convs (resnet18/34). Channels: in ``inplanes`` -> out ``planes``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, dilated) -> 1x1 (resnet50/101). Out channels ``4 * planes``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name -> (block, blocks per stage); torchvision's table.
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}

_DILATE = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}


class ResNet(nn.Module):
    """ResNet feature extractor (no pooling head, no classifier).

    Attributes:
        channels: output channels of ``stem`` and ``layer1..4`` (5 ints).
        strides: their strides w.r.t. the input (5 ints), e.g. (2, 4, 8, 8, 8) at output stride 8.

    ``forward(x [B, 3, H, W] float)`` returns the list of the five feature maps
    ``[stem (after relu, before maxpool), layer1, layer2, layer3, layer4]``.
    """

    def __init__(self, block: type[nn.Module], layers: tuple[int, int, int, int], *,
                 width: int = 64, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in _DILATE:
            raise ValueError(f"output_stride should be 8, 16 or 32, got {output_stride!r}")
        self.inplanes = width
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        dil = _DILATE[output_stride]
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2, dilate=dil[0])
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2, dilate=dil[1])
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2, dilate=dil[2])
        e = block.expansion
        self.channels = (width, width * e, 2 * width * e, 4 * width * e, 8 * width * e)
        s3 = 16 if not dil[1] else 8
        self.strides = (2, 4, 8, s3, min(32, output_stride))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every block starts as the identity,
        # which makes the from-scratch tiny models train faster (Goyal et al. 2017).
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes, 1, self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [stem, c1, c2, c3, c4]


def resnet(name: str, *, width: int = 64, output_stride: int = 32, pretrained: str | os.PathLike | None = None
           ) -> ResNet:
    """Build ``resnet18|34|50|101``; ``pretrained`` is a local torchvision-layout ``.pth`` file."""
    if name not in ARCHS:
        raise ValueError(f"backbone should be one of {sorted(ARCHS)}, got {name!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width should be a positive int, got {width!r}")
    block, layers = ARCHS[name]
    net = ResNet(block, layers, width=width, output_stride=output_stride)
    if pretrained is not None:
        load_pretrained(net, pretrained)
    return net


def torchvision_keys(name: str, *, with_fc: bool = True) -> list[str]:
    """State-dict keys of torchvision's ``models.<name>()``, built from its published layout."""
    block, layers = ARCHS[name]
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    convs = ("conv1", "conv2") if block is BasicBlock else ("conv1", "conv2", "conv3")
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for i, n in enumerate(layers, start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            for k, c in enumerate(convs, start=1):
                keys.append(f"{p}.{c}.weight")
                keys += [f"{p}.bn{k}.{s}" for s in bn]
            # First block of each stage has a projection, except resnet18/34's layer1.
            if j == 0 and not (i == 1 and block is BasicBlock):
                keys.append(f"{p}.downsample.0.weight")
                keys += [f"{p}.downsample.1.{s}" for s in bn]
    if with_fc:
        keys += ["fc.weight", "fc.bias"]
    return keys


def _unwrap(obj: Any, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "backbone"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict (str -> tensor), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "backbone.", "encoder."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_pretrained(net: ResNet, path: str | os.PathLike) -> ResNet:
    """Load torchvision-layout ImageNet weights from a local ``.pth`` into ``net`` (in place).

    Accepts a plain state dict, or one under ``"state_dict"`` / ``"model"``; prefixes
    ``module.``, ``backbone.``, ``encoder.`` are stripped; ``fc.*`` is ignored;
    ``num_batches_tracked`` may be absent (old torchvision files).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: keys missing or unexpected, or shapes that differ (e.g. ``width != 64``).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"{path}: could not read a state dict ({type(exc).__name__}: {exc})") from exc
    sd = {k: v for k, v in _unwrap(obj, path).items() if not k.startswith("fc.")}
    own = net.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: expected {list(own[k].shape)}, got {list(sd[k].shape)}"
              for k in own if k in sd and own[k].shape != sd[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
    if problems:
        raise ValueError(f"{path} does not fit this backbone: " + "; ".join(problems))
    net.load_state_dict(sd, strict=False)
    log.info("loaded %d backbone tensors from %s", len(sd), path)
    return net
