"""Paired augmentations on sample dicts, and the teacher's multi-view helpers.

A *sample* is a dict with

- ``"image"``: float32 [3, H, W] in [0, 1] (or a batch [B, 3, H, W]);
- ``"semantic"``: int64 [H, W] train ids, 255 = ignore (or [B, H, W]);
- ``"instances"``: int64 [H, W], 0 = no instance (or [B, H, W]);
- other keys (``"name"``, ...) are passed through untouched.

Every transform takes one sample or a collated batch (each sample of the batch draws its
own random parameters) and returns a new dict; the input is not modified. Randomness
comes from the ``generator`` argument (a ``torch.Generator``) or, without one, torch's
global generator (which DataLoader seeds per worker).

Geometric transforms (:class:`RandomScaleCrop`, :class:`RandomFlip`) resample the image
bilinearly and the label maps with nearest neighbour, at the same positions, and record
the mapping in ``"theta"``: float32 [2, 3] ([B, 2, 3]) such that a point ``q`` of the
output in normalised coordinates (``F.affine_grid`` convention, ``align_corners=False``)
lies at ``theta @ [q, 1]`` in the original image. :func:`warp_back` uses it to map
predictions made on the augmented image back to the original frame. Pixels that come
from outside the source image (zoom > 1) get 255 (semantic) and 0 (instances); the image
repeats its border there (so the half-pixel rim of a zoomed crop is not darkened).

Photometric transforms (:class:`ColorJitter`, :class:`Blur`, :class:`Greyscale`) change
only the image. The first one applied stores the unchanged image under ``"clean"``: the
teacher's clean view of the same crop (in SAC, Araslanov & Roth 2021, the teacher sees no
photometric noise). Geometric transforms applied afterwards transform ``"clean"`` too.

For the teacher, :func:`multi_view` makes several scale-crop / flip views of a batch and
:func:`warp_back` averages the predictions on those views in the original frame.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from pst.labels import IGNORE

__all__ = [
    "Compose",
    "RandomScaleCrop",
    "RandomFlip",
    "Resize",
    "ColorJitter",
    "Blur",
    "Greyscale",
    "multi_view",
    "warp_back",
    "identity_theta",
]

_IMAGE_KEYS = ("image", "clean")
_LABEL_KEYS = (("semantic", IGNORE), ("instances", 0))


# ----------------------------------------------------------------------------- helpers

def _batched(sample: dict) -> tuple[dict, bool]:
    """Shallow copy of ``sample`` with every tensor batched; and whether it was batched already."""
    if not isinstance(sample, dict):
        raise TypeError(f"a transform expects a sample dict, got {type(sample).__name__}")
    if "image" not in sample:
        raise ValueError(f"a sample needs an 'image' entry, got keys {sorted(sample)}")
    image = sample["image"]
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError(f"sample['image'] should be a float tensor, got "
                        f"{image.dtype if isinstance(image, torch.Tensor) else type(image).__name__}")
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"sample['image'] should be [3, H, W] or [B, 3, H, W], got {list(image.shape)}")
    batched = image.dim() == 4
    out = dict(sample)
    B, H, W = (image.shape[0] if batched else 1), image.shape[-2], image.shape[-1]
    for key in _IMAGE_KEYS:
        if key in out:
            x = out[key]
            if list(x.shape[-3:]) != [3, H, W] or x.dim() != image.dim():
                raise ValueError(f"sample[{key!r}] should have the image's shape {list(image.shape)}, "
                                 f"got {list(x.shape)}")
            out[key] = x if batched else x.unsqueeze(0)
    for key, _ in _LABEL_KEYS:
        if key in out:
            x = out[key]
            if not isinstance(x, torch.Tensor) or x.is_floating_point():
                raise TypeError(f"sample[{key!r}] should be an integer tensor, got "
                                f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
            want = [B, H, W] if batched else [H, W]
            if list(x.shape) != want:
                raise ValueError(f"sample[{key!r}] should be {want} to match the image, got {list(x.shape)}")
            out[key] = x if batched else x.unsqueeze(0)
    if "theta" in out:
        t = out["theta"]
        want = [B, 2, 3] if batched else [2, 3]
        if list(t.shape) != want:
            raise ValueError(f"sample['theta'] should be {want}, got {list(t.shape)}")
        out["theta"] = t if batched else t.unsqueeze(0)
    return out, batched


def _unbatched(sample: dict, batched: bool) -> dict:
    if batched:
        return sample
    out = dict(sample)
    for key in (*_IMAGE_KEYS, *(k for k, _ in _LABEL_KEYS), "theta"):
        if key in out:
            out[key] = out[key][0]
    return out


def _rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """n uniforms in [0, 1), float32, drawn on the CPU (reproducible whatever the device)."""
    return torch.rand(n, generator=generator).to(device)


def identity_theta(batch: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """[batch, 2, 3] identity affine maps."""
    return torch.eye(2, 3, device=device, dtype=dtype).expand(batch, 2, 3).clone()


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """theta of "apply ``inner`` (output -> its input) then ``outer`` (that input -> original)"."""
    A = outer[:, :, :2] @ inner[:, :, :2]
    t = outer[:, :, :2] @ inner[:, :, 2:] + outer[:, :, 2:]
    return torch.cat([A, t], dim=2)


def _invert(theta: torch.Tensor) -> torch.Tensor:
    A = theta[:, :, :2]
    if not torch.isfinite(theta).all():
        raise ValueError("theta should be finite")
    det = A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]
    if (det.abs() < 1e-8).any():
        raise ValueError(f"theta should be invertible, got determinants {det.tolist()}")
    Ainv = torch.linalg.inv(A.double()).to(theta.dtype)
    return torch.cat([Ainv, -Ainv @ theta[:, :, 2:]], dim=2)


def _resample(sample: dict, theta: torch.Tensor, size: tuple[int, int]) -> dict:
    """Resample a batched sample: output pixel q takes the input at theta @ [q, 1] (normalised)."""
    image = sample["image"]
    B = image.shape[0]
    theta = theta.to(device=image.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [B, 1, size[0], size[1]], align_corners=False)
    out = dict(sample)
    for key in _IMAGE_KEYS:
        if key in out:
            out[key] = F.grid_sample(out[key], grid, mode="bilinear", padding_mode="border", align_corners=False)
    for key, fill in _LABEL_KEYS:
        if key in out:
            lab = out[key]
            if lab.numel() and (lab.min() < 0 or lab.max() >= 2**24):
                raise ValueError(f"sample[{key!r}] values should be in [0, 2^24), got "
                                 f"[{int(lab.min())}, {int(lab.max())}]")
            # shift by one so that the zero padding marks "outside the source image"
            x = (lab + 1).to(torch.float32).unsqueeze(1)
            y = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
            y = y.squeeze(1).round().to(lab.dtype)
            out[key] = torch.where(y == 0, torch.full_like(y, fill), y - 1)
    prev = out.get("theta")
    prev = identity_theta(B, device=theta.device) if prev is None else prev.to(theta.device, torch.float32)
    out["theta"] = _compose(prev, theta)
    return out


def _check_range(name: str, value, lo: float, hi: float | None = None) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} should be a (lo, hi) pair, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and lo < a <= b and (hi is None or b <= hi)):
        bound = f" <= {hi}" if hi is not None else ""
        raise ValueError(f"{name} should be (lo, hi) with {lo} < lo <= hi{bound}, got {tuple(value)}")
    return a, b


def _check_prob(name: str, p) -> float:
    if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} should be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size should be (H, W) or None, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size should be (H, W) with H, W >= 1, got {tuple(size)}")
    return h, w


def _window_theta(B: int, H: int, W: int, h: int, w: int, zoom: tuple[float, float], flip: bool,
                  generator, device) -> torch.Tensor:
    """Random scale-crop (+ flip) maps: [B, 2, 3].

    The window has the output's aspect ratio; at zoom z its size is z times the largest
    such window that fits the input; its position is uniform over the input (centred
    range when the window is larger than the input).
    """
    u = _rand(3 * B, generator, "cpu").view(3, B)
    z = zoom[0] + (zoom[1] - zoom[0]) * u[0]
    base = min(H / h, W / w)
    wh, ww = z * base * h, z * base * w  # window size in input pixels
    y0 = (H - wh) * u[1]
    x0 = (W - ww) * u[2]
    sy, sx = wh / H, ww / W
    cy, cx = (2 * y0 + wh) / H - 1, (2 * x0 + ww) / W - 1
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = sx
    theta[:, 1, 1] = sy
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    if flip:
        f = _rand(B, generator, "cpu") < 0.5
        theta[:, 0, 0] = torch.where(f, -sx, sx)
    return theta.to(device)


# ----------------------------------------------------------------------------- geometric

class Compose:
    """Apply transforms in order: ``Compose([RandomScaleCrop(), RandomFlip(), ColorJitter()])``."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose expects callables, got {type(t).__name__}")

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        for t in self.transforms:
            sample = t(sample, generator=generator)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomScaleCrop:
    """Random crop of a window with the output's aspect ratio, resized to ``size``.

    Args:
        size: output (H, W); None keeps the input size.
        zoom: (lo, hi) range of the window size relative to the largest window that fits
            (1 = the whole image when the aspect ratios agree; 0.5 = half the height and
            width, i.e. a 2x zoom-in). Values above 1 zoom out and pad.
    """

    def __init__(self, size: Sequence[int] | None = None, zoom: Sequence[float] = (0.5, 1.0)):
        self.size = _check_size(size)
        self.zoom = _check_range("zoom", zoom, 0.0)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        s, batched = _batched(sample)
        B, _, H, W = s["image"].shape
        h, w = self.size or (H, W)
        theta = _window_theta(B, H, W, h, w, self.zoom, False, generator, s["image"].device)
        return _unbatched(_resample(s, theta, (h, w)), batched)

    def __repr__(self) -> str:
        return f"RandomScaleCrop(size={self.size}, zoom={self.zoom})"


class RandomFlip:
    """Horizontal flip with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = _check_prob("p", p)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        s, batched = _batched(sample)
        B = s["image"].shape[0]
        flip = _rand(B, generator, "cpu") < self.p
        out = dict(s)
        m = flip.to(s["image"].device)
        for key in (*_IMAGE_KEYS, *(k for k, _ in _LABEL_KEYS)):
            if key in out:
                x = out[key]
                mm = m.view(B, *([1] * (x.dim() - 1)))
                out[key] = torch.where(mm, x.flip(-1), x)
        theta = identity_theta(B)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
        prev = out.get("theta")
        prev = identity_theta(B) if prev is None else prev.detach().to("cpu", torch.float32)
        out["theta"] = _compose(prev, theta).to(s["image"].device)
        return _unbatched(out, batched)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


class Resize:
    """Resize to ``size`` = (H, W): image bilinear (antialiased when shrinking), labels nearest."""

    def __init__(self, size: Sequence[int]):
        if size is None:
            raise ValueError("Resize needs a size (H, W), got None")
        self.size = _check_size(size)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        s, batched = _batched(sample)
        h, w = self.size
        H, W = s["image"].shape[-2:]
        out = dict(s)
        if (H, W) != (h, w):
            shrink = h < H or w < W
            for key in _IMAGE_KEYS:
                if key in out:
                    out[key] = F.interpolate(out[key], size=(h, w), mode="bilinear", align_corners=False,
                                             antialias=shrink).clamp_(0.0, 1.0)
            for key, _ in _LABEL_KEYS:
                if key in out:
                    x = out[key].to(torch.float32).unsqueeze(1)
                    out[key] = F.interpolate(x, size=(h, w), mode="nearest-exact").squeeze(1).to(s[key].dtype)
        if "theta" not in out:  # the normalised frame is unchanged by a resize
            out["theta"] = identity_theta(s["image"].shape[0], device=s["image"].device)
        return _unbatched(out, batched)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


# ----------------------------------------------------------------------------- photometric

def _with_clean(s: dict) -> dict:
    out = dict(s)
    if "clean" not in out:
        out["clean"] = out["image"]
    return out


_LUMA = (0.299, 0.587, 0.114)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] luma."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class ColorJitter:
    """Random brightness, contrast, saturation (factors in [1 - s, 1 + s]) and hue
    (rotation about the grey axis by up to ``hue`` of a turn), in that order.

    SAC's default strength is 0.4 for the first three (github.com/visinf/da-sac).
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 1.0):
        for name, v, hi in (("brightness", brightness, 1.0), ("contrast", contrast, 1.0),
                            ("saturation", saturation, 1.0), ("hue", hue, 0.5)):
            if not isinstance(v, (int, float)) or not 0.0 <= v <= hi:
                raise ValueError(f"{name} should be in [0, {hi}], got {v!r}")
        self.brightness, self.contrast, self.saturation, self.hue = map(float, (brightness, contrast, saturation, hue))
        self.p = _check_prob("p", p)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        s, batched = _batched(sample)
        s = _with_clean(s)
        x = s["image"]
        B, dev = x.shape[0], x.device
        u = _rand(5 * B, generator, "cpu").view(5, B).to(dev)
        apply = (u[4] < self.p).view(B, 1, 1, 1)
        b = (1 + self.brightness * (2 * u[0] - 1)).view(B, 1, 1, 1)
        c = (1 + self.contrast * (2 * u[1] - 1)).view(B, 1, 1, 1)
        sat = (1 + self.saturation * (2 * u[2] - 1)).view(B, 1, 1, 1)
        y = (x * b).clamp(0, 1)
        mean = _grey(y).mean(dim=(2, 3), keepdim=True)
        y = ((y - mean) * c + mean).clamp(0, 1)
        g = _grey(y)
        y = ((y - g) * sat + g).clamp(0, 1)
        if self.hue > 0:
            ang = (self.hue * (2 * u[3] - 1) * 2 * math.pi).to(x.dtype)
            k = torch.full((3,), 1 / math.sqrt(3), dtype=x.dtype, device=dev)
            K = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=x.dtype, device=dev) / math.sqrt(3)
            cos, sin = ang.cos().view(B, 1, 1), ang.sin().view(B, 1, 1)
            R = cos * torch.eye(3, dtype=x.dtype, device=dev) + sin * K + (1 - cos) * torch.outer(k, k)
            y = torch.einsum("bij,bjhw->bihw", R, y).clamp(0, 1)
        s["image"] = torch.where(apply, y, x)
        return _unbatched(s, batched)

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p={self.p})")


class Blur:
    """Gaussian blur with probability ``p``, sigma uniform in ``sigma`` (pixels), reflected borders."""

    def __init__(self, p: float = 0.5, sigma: Sequence[float] = (0.1, 2.0)):
        self.p = _check_prob("p", p)
        self.sigma = _check_range("sigma", sigma, 0.0)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        s, batched = _batched(sample)
        s = _with_clean(s)
        x = s["image"]
        B, C, H, W = x.shape
        u = _rand(2 * B, generator, "cpu").view(2, B)
        apply = u[0] < self.p
        if apply.any():
            sigma = self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[1]
            radius = min(int(math.ceil(3 * self.sigma[1])), (min(H, W) - 1))
            if radius >= 1:
                offs = torch.arange(-radius, radius + 1, dtype=torch.float32)
                k = torch.exp(-0.5 * (offs[None] / sigma[:, None]) ** 2)
                k = (k / k.sum(1, keepdim=True)).to(device=x.device, dtype=x.dtype)  # [B, K]
                k = k.repeat_interleave(C, dim=0)  # [B*C, K]
                y = x.reshape(1, B * C, H, W)
                y = F.pad(y, (0, 0, radius, radius), mode="reflect")
                y = F.conv2d(y, k.view(B * C, 1, -1, 1), groups=B * C)
                y = F.pad(y, (radius, radius, 0, 0), mode="reflect")
                y = F.conv2d(y, k.view(B * C, 1, 1, -1), groups=B * C).view(B, C, H, W)
                s["image"] = torch.where(apply.to(x.device).view(B, 1, 1, 1), y, x)
        return _unbatched(s, batched)

    def __repr__(self) -> str:
        return f"Blur(p={self.p}, sigma={self.sigma})"


class Greyscale:
    """Replace the image by its luma (ITU-R 601) in all three channels, with probability ``p``."""

    def __init__(self, p: float = 0.2):
        self.p = _check_prob("p", p)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        s, batched = _batched(sample)
        s = _with_clean(s)
        x = s["image"]
        B = x.shape[0]
        apply = (_rand(B, generator, "cpu") < self.p).to(x.device).view(B, 1, 1, 1)
        s["image"] = torch.where(apply, _grey(x).expand_as(x), x)
        return _unbatched(s, batched)

    def __repr__(self) -> str:
        return f"Greyscale(p={self.p})"


# ----------------------------------------------------------------------------- teacher views

def multi_view(images: torch.Tensor, n_views: int, *, zoom: Sequence[float] = (0.5, 1.0), flip: bool = True,
               include_identity: bool = True, size: Sequence[int] | None = None,
               generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Clean (geometric only) augmented views of a batch, for the teacher's pseudo-labels.

    Args:
        images: float [B, 3, H, W] (any channel count C works: [B, C, H, W]).
        n_views: number of views (>= 1).
        zoom: (lo, hi) window size range, as in :class:`RandomScaleCrop` (SAC: (0.5, 1)).
        flip: flip each view horizontally with probability 1/2.
        include_identity: the first view is the image itself (the same tensor when ``size`` is
            the input's), so every pixel is covered.
        size: (h, w) of the views; None: the input's (H, W).
        generator: torch.Generator for the random windows.

    Returns:
        views: ``n_views`` tensors [B, C, h, w]; params: ``n_views`` float32 [B, 2, 3] affine
        maps (view -> original, normalised coordinates) for :func:`warp_back`.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4:
        raise ValueError(f"images should be a float tensor [B, C, H, W], got "
                         f"{list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
                         + (f" {images.dtype}" if isinstance(images, torch.Tensor) else ""))
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views should be an int >= 1, got {n_views!r}")
    zoom = _check_range("zoom", zoom, 0.0)
    B, C, H, W = images.shape
    if B == 0 or H == 0 or W == 0:
        raise ValueError(f"images should be non-empty, got {list(images.shape)}")
    h, w = _check_size(size) or (H, W)
    views, params = [], []
    for v in range(n_views):
        if v == 0 and include_identity:
            theta = identity_theta(B)
        else:
            theta = _window_theta(B, H, W, h, w, zoom, flip, generator, "cpu")
        theta = theta.to(images.device)
        if v == 0 and include_identity and (h, w) == (H, W):
            views.append(images)  # exact, no resampling
            params.append(theta)
            continue
        grid = F.affine_grid(theta.to(images.dtype), [B, C, h, w], align_corners=False)
        views.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False))
        params.append(theta)
    return views, params


def warp_back(outputs: Sequence[torch.Tensor], params: Sequence[torch.Tensor], size: Sequence[int], *,
              return_weight: bool = False):
    """Map per-view outputs back to the original frame and average them.

    Args:
        outputs: per view float [B, C, h, w] (e.g. softmax probabilities); views may differ in size.
        params: per view float [B, 2, 3] (from :func:`multi_view`, or a sample's ``"theta"``).
        size: (H, W) of the original frame.
        return_weight: also return the coverage weight.

    Returns:
        float [B, C, H, W]: at each pixel the mean over the views that cover it (bilinear
        resampling, weighted by coverage); 0 where no view covers it. With
        ``return_weight``: also float [B, H, W], the summed coverage (0 = not covered).
    """
    if len(outputs) == 0 or len(outputs) != len(params):
        raise ValueError(f"outputs and params should be non-empty and of equal length, "
                         f"got {len(outputs)} and {len(params)}")
    H, W = _check_size(size)
    first = outputs[0]
    if not isinstance(first, torch.Tensor) or first.dim() != 4 or not first.is_floating_point():
        raise ValueError(f"outputs should be float tensors [B, C, h, w], got "
                         f"{list(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__}")
    B, C = first.shape[:2]
    total = torch.zeros(B, C, H, W, dtype=first.dtype, device=first.device)
    weight = torch.zeros(B, 1, H, W, dtype=first.dtype, device=first.device)
    for i, (out, theta) in enumerate(zip(outputs, params)):
        if out.dim() != 4 or out.shape[:2] != (B, C):
            raise ValueError(f"outputs[{i}] should be [{B}, {C}, h, w], got {list(out.shape)}")
        if not isinstance(theta, torch.Tensor) or list(theta.shape) != [B, 2, 3]:
            raise ValueError(f"params[{i}] should be [{B}, 2, 3], got "
                             f"{list(theta.shape) if isinstance(theta, torch.Tensor) else type(theta).__name__}")
        inv = _invert(theta.to(device=out.device, dtype=torch.float32)).to(out.dtype)
        grid = F.affine_grid(inv, [B, 1, H, W], align_corners=False)
        total += F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        ones = torch.ones(B, 1, *out.shape[-2:], dtype=out.dtype, device=out.device)
        weight += F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    covered = weight > 1e-3
    mean = torch.where(covered, total / weight.clamp_min(1e-3), torch.zeros_like(total))
    if return_weight:
        return mean, weight.squeeze(1)
    return mean
