"""GTA5 ("Playing for Data") in its released layout.

::

    root/images/NNNNN.png
    root/labels/NNNNN.png      # Cityscapes label ids (0..33; 255 also read as void)

No instance ground truth: ``instances`` is all zeros. The label PNGs are palette images
whose indices are the label ids (read as indices, not colours).

Splits: "all" and "train" are every image (the domain-adaptation convention: all 24,966
images train the source model); any other split name reads the file names listed one per
line in ``root/<split>.txt``.

A few released GTA5 label maps differ in size from their images; they are resized to the
image (nearest neighbour) with a warning, and ``pst data check`` lists them as warnings.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from pst.data.base import FileDataset, ScanResult, check_ids, read_label, read_rgb
from pst.labels import CITYSCAPES19, IGNORE, LabelSpace

__all__ = ["GTA5"]

logger = logging.getLogger(__name__)

_VALID_IDS = np.zeros(256, dtype=bool)
_VALID_IDS[:34] = True
_VALID_IDS[255] = True


class GTA5(FileDataset):
    """GTA5 images with semantic ground truth in a label space with Cityscapes ids.

    Args:
        root: folder holding ``images/`` and ``labels/``.
        split: "all" / "train" (every image) or a name with a ``root/<split>.txt`` list.
        label_space: CITYSCAPES19 (default) or SYNTHIA16.
        transform: optional callable on each sample dict.
        strict: False keeps the complete samples of a tree with missing files (logged) instead of raising.
        with_labels: False reads only images.
    """

    dataset_name = "gta5"

    def __init__(self, root: str | os.PathLike, split: str = "all", *, label_space: LabelSpace = CITYSCAPES19,
                 transform: Callable[[dict], dict] | None = None, with_labels: bool = True, strict: bool = True):
        self._need_labels = with_labels
        super().__init__(root, split, label_space=label_space, transform=transform, with_labels=with_labels,
                         strict=strict)
        self._lut = label_space.cityscapes_id_lut()

    def _scan(self, root: Path, split: str) -> ScanResult:
        return scan_gta5(root, split, with_labels=self._need_labels)

    def _load(self, item: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, image_path, label_path = item
        image = read_rgb(image_path)
        H, W = image.shape[:2]
        if not self.with_labels:
            return image, np.full((H, W), IGNORE, np.int64), np.zeros((H, W), np.int64)
        label = read_label(label_path)
        check_ids(label, _VALID_IDS, label_path, "Cityscapes label ids (0..33, or 255)")
        if label.shape != (H, W):
            logger.warning("%s: size %dx%d differs from its image (%dx%d); resized (nearest)",
                           label_path, label.shape[1], label.shape[0], W, H)
            label = _resize_nearest(label, H, W)
        return image, self._lut[label], np.zeros((H, W), np.int64)


def _resize_nearest(label: np.ndarray, H: int, W: int) -> np.ndarray:
    rows = np.minimum(((np.arange(H) + 0.5) * label.shape[0] / H).astype(np.int64), label.shape[0] - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * label.shape[1] / W).astype(np.int64), label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


def read_split_list(root: Path, split: str, res: ScanResult) -> list[str] | None:
    """Names listed in ``root/<split>.txt`` (None: every file); reports a missing list in ``res``."""
    if split in ("all", "train"):
        return None
    path = root / f"{split}.txt"
    if not path.is_file():
        res.errors.append(f"{path}: missing split list (split {split!r}; 'all' and 'train' use every image)")
        return []
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [n if n.endswith(".png") else f"{n}.png" for n in names]


def scan_image_label_pairs(root: Path, split: str, img_dir: Path, lab_dir: Path, *, with_labels: bool,
                           img_layout: str, lab_layout: str) -> ScanResult:
    """Pairs ``(stem, image, label)`` of same-named PNGs in ``img_dir`` and ``lab_dir`` (the
    GTA5 and SYNTHIA layouts), restricted to ``root/<split>.txt`` when the split has a list.
    Missing folders or files are errors; stray files are warnings. ``*_layout`` say what
    the folders should hold, for the messages."""
    res = ScanResult()
    if not root.is_dir():
        res.errors.append(f"{root}: root folder does not exist")
        return res
    if not img_dir.is_dir():
        res.errors.append(f"{img_dir}: missing folder (expected {img_layout})")
    if with_labels and not lab_dir.is_dir():
        res.errors.append(f"{lab_dir}: missing folder (expected {lab_layout})")
    if res.errors:
        return res
    wanted = read_split_list(root, split, res)
    if wanted is None:
        names = sorted(p.name for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png")
        for p in sorted(img_dir.iterdir()):
            if p.is_file() and p.suffix.lower() != ".png":
                res.warnings.append(f"{p}: ignored (not a .png file)")
    else:
        names = wanted
    for name in names:
        image, label = img_dir / name, lab_dir / name
        if not image.is_file():
            res.errors.append(f"{image}: missing (listed in {split}.txt)")
            continue
        if with_labels and not label.is_file():
            res.errors.append(f"{label}: missing (label of {name})")
            continue
        res.items.append((Path(name).stem, image, label))
    if not res.items and not res.errors:
        res.errors.append(f"{img_dir}: no images found (expected {img_layout})")
    if with_labels and wanted is None:
        have = set(names)
        for p in sorted(lab_dir.glob("*.png")):
            if p.name not in have:
                res.warnings.append(f"{p}: label without an image")
    return res


def scan_gta5(root: Path, split: str, *, with_labels: bool = True) -> ScanResult:
    root = Path(root)
    return scan_image_label_pairs(root, split, root / "images", root / "labels", with_labels=with_labels,
                                  img_layout="images/NNNNN.png", lab_layout="labels/NNNNN.png")
