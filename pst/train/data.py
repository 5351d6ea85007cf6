"""Datasets from the config, deterministic resumable batching, batched augmentations.

The batch of step ``s`` depends only on (seed, stage, s, rank): the sample order is a
permutation per epoch drawn from the seed, and augmentations use a generator seeded by
:func:`step_generator`. A resumed run therefore sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from pst.labels import IGNORE, LabelSpace

__all__ = ["build_dataset", "CachedDataset", "StepSampler", "step_generator", "load_batch",
           "scale_crop", "photometric", "collate", "gt_panoptic", "resize_sample", "maybe_cache"]

logger = logging.getLogger(__name__)


def step_generator(seed: int, *keys: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator seeded from ``seed`` and any hashable ``keys`` (stage, step, rank)."""
    h = zlib.crc32(repr((int(seed),) + tuple(keys)).encode())
    g = torch.Generator(device=device)
    g.manual_seed(h)
    return g


def build_dataset(spec, label_space: LabelSpace, size: Sequence[int] | None = None):
    """The dataset described by a :class:`pst.config.DatasetConfig`.

    toy -> ``pst.data.toy.ToyScenes(n, seed, style, size)``; cityscapes / gta5 / synthia
    -> ``pst.data.build_dataset(name, root, split, label_space, with_labels)``; ``limit``
    keeps the first samples.
    """
    if spec.name == "toy":
        from pst.data.toy import ToyScenes

        kwargs = {} if size is None else {"size": tuple(int(s) for s in size)}
        ds = ToyScenes(spec.n, seed=spec.seed, style=spec.style, **kwargs)
    else:
        from pst.data import build_dataset as build_named

        ds = build_named(spec.name, root=spec.root, split=spec.split, label_space=label_space,
                         with_labels=spec.has_labels)
    if spec.limit and spec.limit < len(ds):
        ds = torch.utils.data.Subset(ds, range(spec.limit))
    if len(ds) == 0:
        raise ValueError(f"dataset {spec.name!r} (root {spec.root!r}, split {spec.split!r}) is empty")
    return ds


class CachedDataset(torch.utils.data.Dataset):
    """All samples of a (small) dataset kept in memory, built once."""

    def __init__(self, dataset, desc: str = "caching"):
        from tqdm import tqdm

        self.samples = [dataset[i] for i in tqdm(range(len(dataset)), desc=desc, leave=False, mininterval=2.0)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


class StepSampler:
    """Indices of the batch of step ``s`` for one process: epoch-wise permutations of
    ``range(n)`` from ``seed``, a global batch of ``batch_size * world_size`` per step,
    this process's slice of it."""

    def __init__(self, n: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise ValueError(f"StepSampler needs a non-empty dataset, got n={n}")
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm_cache = {epoch: torch.randperm(self.n, generator=g)}
        return self._perm_cache[epoch]

    def indices(self, step: int) -> list[int]:
        gbs = self.batch_size * self.world
        start = step * gbs + self.rank * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, off = divmod(pos, self.n)
            out.append(int(self._perm(epoch)[off]))
        return out


def collate(samples: list[dict]) -> dict:
    """Stack same-size samples into a batch dict (names kept as a list)."""
    out = {k: torch.stack([s[k] for s in samples]) for k in ("image", "semantic", "instances")}
    out["name"] = [s.get("name", str(i)) for i, s in enumerate(samples)]
    return out


def resize_sample(sample: dict, size: Sequence[int]) -> dict:
    """Resize one sample to ``size`` [H, W] (bilinear image, nearest labels)."""
    H, W = (int(s) for s in size)
    img = sample["image"]
    if tuple(img.shape[-2:]) == (H, W):
        return sample
    out = dict(sample)
    out["image"] = F.interpolate(img[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    for k in ("semantic", "instances"):
        out[k] = F.interpolate(sample[k][None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
    return out


def scale_crop(sample: dict, size: Sequence[int], zoom: Sequence[float], flip: bool,
               generator: torch.Generator) -> dict:
    """Random scale-crop of one sample to ``size``: a box of ``z`` times the largest box
    of the target aspect ratio, ``z`` uniform in ``zoom``, resized to ``size``; then a
    horizontal flip with probability 0.5 when ``flip``."""
    H, W = (int(s) for s in size)
    img = sample["image"]
    h0, w0 = img.shape[-2:]
    z = float(zoom[0] + (zoom[1] - zoom[0]) * torch.rand((), generator=generator))
    scale_full = min(h0 / H, w0 / W)
    ch, cw = max(1, round(H * scale_full * z)), max(1, round(W * scale_full * z))
    y = int(torch.randint(0, h0 - ch + 1, (), generator=generator))
    x = int(torch.randint(0, w0 - cw + 1, (), generator=generator))
    do_flip = bool(flip and torch.rand((), generator=generator) < 0.5)
    out = dict(sample)
    crop_img = img[:, y:y + ch, x:x + cw]
    out["image"] = F.interpolate(crop_img[None], size=(H, W), mode="bilinear", align_corners=False)[0] \
        if (ch, cw) != (H, W) else crop_img
    for k in ("semantic", "instances"):
        lab = sample[k][y:y + ch, x:x + cw]
        if (ch, cw) != (H, W):
            lab = F.interpolate(lab[None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
        out[k] = lab
    if do_flip:
        for k in ("image", "semantic", "instances"):
            out[k] = out[k].flip(-1)
    return out


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift`` (fractions of a full turn, one per image) in
    HSV, keeping saturation and value (as torchvision's ``adjust_hue``).

    Args:
        images: [B, 3, H, W] float in [0, 1].
        shift: [B] float.
    Returns:
        [B, 3, H, W] float in [0, 1].
    """
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images should be [B, 3, H, W] float, got {tuple(images.shape)} {images.dtype}")
    if shift.shape != (images.shape[0],):
        raise ValueError(f"shift should be [{images.shape[0]}] (one per image), got {tuple(shift.shape)}")
    r, g, b = images.unbind(1)
    maxc, _ = images.max(dim=1)
    minc, _ = images.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6,
                    torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    h = (h + shift.to(images.dtype).view(-1, 1, 1)) % 1.0
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    v = maxc
    h6 = h * 6
    sector = torch.floor(h6).clamp(0, 5)
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = sector.long().unsqueeze(1)  # [B, 1, H, W]
    # (r, g, b) per sector 0..5: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    table = torch.stack([torch.stack(c, dim=1) for c in
                         ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], dim=1)  # [B,6,3,H,W]
    return table.gather(1, sector.unsqueeze(2).expand(-1, 1, 3, -1, -1)).squeeze(1)


def photometric(images: torch.Tensor, *, jitter: float, blur_p: float, greyscale_p: float,
                generator: torch.Generator, hue: float = 0.0) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation, each by a factor in
    [1 - jitter, 1 + jitter]; hue rotated by a shift in [-hue, hue] of a full turn,
    :func:`shift_hue`), Gaussian blur with probability ``blur_p`` and greyscale with
    probability ``greyscale_p``, per image. With ``hue=0`` no random number is drawn for
    it, so earlier runs' augmentations are unchanged.

    Args:
        images: [B, 3, H, W] float in [0, 1].
    Returns:
        [B, 3, H, W] float in [0, 1].
    """
    B = images.shape[0]
    dev = images.device
    x = images

    def u(lo, hi):
        return (lo + (hi - lo) * torch.rand(B, generator=generator)).to(dev).view(B, 1, 1, 1)

    if jitter > 0:
        x = x * u(1 - jitter, 1 + jitter)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * u(1 - jitter, 1 + jitter) + mean
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey) * u(1 - jitter, 1 + jitter) + grey
        x = x.clamp(0, 1)
    if hue > 0:
        x = shift_hue(x, u(-hue, hue).view(B))
    if blur_p > 0:
        do = (torch.rand(B, generator=generator) < blur_p).to(dev)
        if bool(do.any()):
            k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=dev, dtype=x.dtype)
            k = (k[:, None] * k[None, :]) / 256.0
            w = k.expand(3, 1, 5, 5)
            blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), w, groups=3)
            x = torch.where(do.view(B, 1, 1, 1), blurred, x)
    if greyscale_p > 0:
        do = (torch.rand(B, generator=generator) < greyscale_p).to(dev)
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        x = torch.where(do.view(B, 1, 1, 1), grey, x)
    return x


def load_batch(dataset, indices: list[int], *, size: Sequence[int], augment, generator: torch.Generator,
               spatial: bool = True, colour: bool = True) -> dict:
    """Read ``indices`` from ``dataset``, scale-crop/flip (``spatial``) each sample to
    ``size``, stack, and apply photometric noise (``colour``) as ``augment``
    (:class:`pst.config.AugmentConfig`) says."""
    samples = []
    for i in indices:
        s = dataset[i]
        if spatial:
            s = scale_crop(s, size, augment.zoom, augment.flip, generator)
        else:
            s = resize_sample(s, size)
        samples.append(s)
    batch = collate(samples)
    if colour:
        batch["image"] = photometric(batch["image"], jitter=augment.color_jitter, blur_p=augment.blur_p,
                                     greyscale_p=augment.greyscale_p, hue=augment.hue, generator=generator)
    return batch


def gt_panoptic(semantic: torch.Tensor, instances: torch.Tensor, thing_ids: Sequence[int],
                label_divisor: int = 1000) -> torch.Tensor:
    """Ground-truth panoptic ids from semantic + instance maps.

    Args:
        semantic: [..., H, W] int64 train ids (IGNORE = void).
        instances: same shape, int64, 0 = none.
    Returns:
        same shape int64: ``class * label_divisor + instance`` for thing pixels (instance
        0 = crowd), ``class * label_divisor`` for stuff, -1 for void.
    """
    is_thing = torch.zeros(256, dtype=torch.bool, device=semantic.device)
    is_thing[list(thing_ids)] = True
    sem = semantic.long()
    thing = is_thing[sem.clamp(0, 255)]
    pan = sem * label_divisor + torch.where(thing, instances.long(), torch.zeros_like(sem))
    return torch.where(sem == IGNORE, torch.full_like(pan, -1), pan)


def maybe_cache(dataset, enabled: bool, desc: str):
    """Wrap a toy/in-memory-sized dataset in :class:`CachedDataset` when ``enabled``."""
    if not enabled:
        return dataset
    return CachedDataset(dataset, desc=desc)


