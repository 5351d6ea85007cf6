"""Shared parts of the file-based datasets: image / label readers with errors that name the
file and the problem, and the dataset base class (scan once, decode per item)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pst.labels import IGNORE, LabelSpace

__all__ = ["ScanResult", "FileDataset", "read_rgb", "read_label", "read_png_unchanged", "relabel_instances",
           "check_same_size", "check_ids"]

logger = logging.getLogger(__name__)

# How many problems an exception message lists before "... and N more".
_MAX_LISTED = 10


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB (palette, grey and RGBA images are converted).

    Raises FileNotFoundError (missing) or ValueError (unreadable / truncated / not an image),
    naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "RGBA", "P", "L", "LA", "PA"):
                raise ValueError(f"{path}: expected an 8-bit RGB image, got PIL mode {im.mode!r}")
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
    return arr


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG (8-bit, 16-bit or palette indices) as int64 [H, W].

    Raises FileNotFoundError / ValueError naming the file; a colour (RGB) image is refused
    with a hint that colour-coded labels are not label ids.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label image of ids, got {mode} with shape "
                         f"{list(arr.shape)} (a colour-coded label image?)")
    return arr.astype(np.int64)


def read_png_unchanged(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG with OpenCV as stored (16-bit and multi-channel kept; channels in BGR order)."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a dependency of pst.data
        raise ImportError("reading 16-bit colour PNGs needs OpenCV: pip install opencv-python-headless") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if arr is None:
        raise ValueError(f"{path}: not a readable PNG (empty, truncated or not an image)")
    return arr


def relabel_instances(keys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Instance ids 1..K (in increasing key order) for the distinct ``keys`` inside ``mask``; 0 elsewhere.

    keys: int [H, W]; mask: bool [H, W] -> int64 [H, W].
    """
    out = np.zeros(keys.shape, dtype=np.int64)
    if mask.any():
        _, inverse = np.unique(keys[mask], return_inverse=True)
        out[mask] = inverse.reshape(-1) + 1
    return out


@dataclass
class ScanResult:
    """What a dataset scan found: ``items`` (name, paths...) and the problems, as messages."""

    items: list[tuple] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _summarise(messages: list[str]) -> str:
    shown = messages[:_MAX_LISTED]
    more = len(messages) - len(shown)
    return "\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")


class FileDataset(torch.utils.data.Dataset):
    """Base class: a scanned list of files; items are decoded on access.

    Subclasses define ``_scan(root, split) -> ScanResult`` (which must not raise for a
    malformed tree but report it) and ``_load(item) -> (image uint8 [H, W, 3],
    semantic int64 [H, W] train ids, instances int64 [H, W])``.

    ``strict=False`` keeps the complete samples of a tree with missing files (the problems
    are logged and kept in ``self.scan``) instead of raising.

    Items are sample dicts: image float32 [3, H, W] in [0, 1], semantic int64 [H, W]
    (255 = ignore), instances int64 [H, W] (0 = none, 1..K), name str.
    """

    dataset_name = "dataset"

    def __init__(self, root: str | os.PathLike, split: str, *, label_space: LabelSpace,
                 transform: Callable[[dict], dict] | None = None, with_labels: bool = True, strict: bool = True):
        if not isinstance(label_space, LabelSpace):
            raise TypeError(f"label_space should be a pst.labels.LabelSpace, got {type(label_space).__name__}")
        self.root = Path(root)
        self.split = split
        self.label_space = label_space
        self.transform = transform
        self.with_labels = with_labels
        scan = self._scan(self.root, split)
        self.scan = scan
        for w in scan.warnings:
            logger.warning("%s: %s", self.dataset_name, w)
        if scan.errors and not strict:
            logger.error("%s tree at %s (split %r): %d problems; using the %d complete samples:%s", self.dataset_name,
                         self.root, split, len(scan.errors), len(scan.items), _summarise(scan.errors))
        elif scan.errors:
            raise FileNotFoundError(f"{self.dataset_name} tree at {self.root} (split {split!r}) is incomplete "
                                    f"({len(scan.errors)} problems):" + _summarise(scan.errors))
        self.items = scan.items

    def _scan(self, root: Path, split: str) -> ScanResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, item: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> dict:
        """Sample ``index`` without the transform."""
        if index < 0:
            index += len(self.items)
        if not 0 <= index < len(self.items):
            raise IndexError(f"index {index} out of range for {len(self.items)} samples")
        item = self.items[index]
        image, semantic, instances = self._load(item)
        H, W = image.shape[:2]
        if not self.with_labels:
            semantic = np.full((H, W), IGNORE, dtype=np.int64)
            instances = np.zeros((H, W), dtype=np.int64)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            "semantic": torch.from_numpy(semantic),
            "instances": torch.from_numpy(instances),
            "name": item[0],
        }

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"label_space={self.label_space.name!r}, n={len(self)})")


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise ValueError(f"{label_path}: size {label.shape[1]}x{label.shape[0]} (WxH) differs from its image "
                         f"{image_path.name} ({image.shape[1]}x{image.shape[0]})")


def check_ids(label: np.ndarray, valid: np.ndarray, path: Path, what: str) -> None:
    """Raise if ``label`` holds ids outside ``valid`` (bool [N] table over ids 0..N-1)."""
    if label.size == 0:
        raise ValueError(f"{path}: empty label image")
    lo, hi = int(label.min()), int(label.max())
    bad = np.zeros(0, dtype=np.int64)
    if lo < 0 or hi >= len(valid):
        vals = np.unique(label)
        bad = vals[(vals < 0) | (vals >= len(valid))]
    else:
        present = np.bincount(label.ravel(), minlength=len(valid)).astype(bool)
        bad = np.flatnonzero(present & ~valid)
    if bad.size:
        raise ValueError(f"{path}: label ids {bad[:10].tolist()}{' ...' if bad.size > 10 else ''} are not {what}")
