"""Cityscapes (gtFine) in its released layout.

::

    root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png

labelIds hold the official Cityscapes label ids (0..33), mapped to train ids of the label
space with :meth:`LabelSpace.cityscapes_id_lut`; instanceIds hold ``label_id * 1000 + k``
for thing instances and ``label_id`` elsewhere (crowd regions included), cityscapesScripts'
convention. Instances are renumbered 1..K per image, over the thing classes of the label
space only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from pst.data.base import FileDataset, ScanResult, check_ids, check_same_size, read_label, read_rgb, relabel_instances
from pst.labels import CITYSCAPES19, IGNORE, LabelSpace

__all__ = ["Cityscapes"]

_IMAGE_SUFFIX = "_leftImg8bit.png"
_VALID_IDS = np.ones(34, dtype=bool)  # Cityscapes label ids 0..33


class Cityscapes(FileDataset):
    """Cityscapes images with semantic (train ids) and instance ground truth.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: "train", "val" or "test" (any folder name under leftImg8bit/).
        label_space: CITYSCAPES19 (default) or SYNTHIA16 (the 16 classes of SYNTHIA -> Cityscapes).
        transform: optional callable on each sample dict.
        strict: False keeps the complete samples of a tree with missing files (logged) instead of raising.
        with_labels: False reads only images (semantic all 255, instances all 0): unlabelled target data.

    Raises FileNotFoundError when the tree is missing folders or files (all listed).
    """

    dataset_name = "cityscapes"

    def __init__(self, root: str | os.PathLike, split: str = "train", *, label_space: LabelSpace = CITYSCAPES19,
                 transform: Callable[[dict], dict] | None = None, with_labels: bool = True, strict: bool = True):
        self._need_labels = with_labels
        super().__init__(root, split, label_space=label_space, transform=transform, with_labels=with_labels,
                         strict=strict)
        self._lut = label_space.cityscapes_id_lut()
        self._is_thing = np.zeros(256, dtype=bool)
        self._is_thing[list(label_space.thing_ids)] = True

    def _scan(self, root: Path, split: str) -> ScanResult:
        return scan_cityscapes(root, split, with_labels=self._need_labels)

    def _load(self, item: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, image_path, label_path, inst_path = item
        image = read_rgb(image_path)
        H, W = image.shape[:2]
        if not self.with_labels:
            return image, np.full((H, W), IGNORE, np.int64), np.zeros((H, W), np.int64)
        label = read_label(label_path)
        check_same_size(image, label, image_path, label_path)
        check_ids(label, _VALID_IDS, label_path, "Cityscapes label ids (0..33)")
        semantic = self._lut[label]
        inst = read_label(inst_path)
        check_same_size(image, inst, image_path, inst_path)
        if inst.min() < 0:
            raise ValueError(f"{inst_path}: negative instance ids")
        cls = np.where(inst >= 1000, inst // 1000, inst)
        wrong = int((cls != label).sum())
        if wrong:
            raise ValueError(f"{inst_path}: disagrees with {label_path.name} at {wrong} pixels "
                             f"(expected label_id * 1000 + k on thing instances, label_id elsewhere)")
        instances = relabel_instances(inst, (inst >= 1000) & self._is_thing[semantic])
        return image, semantic, instances


def scan_cityscapes(root: Path, split: str, *, with_labels: bool = True) -> ScanResult:
    """Find the image / label files of one split; report what is missing."""
    res = ScanResult()
    root = Path(root)
    if not root.is_dir():
        res.errors.append(f"{root}: root folder does not exist")
        return res
    img_dir = root / "leftImg8bit" / split
    gt_dir = root / "gtFine" / split
    layout = f"leftImg8bit/{split}/<city>/<city>_<seq>_<frame>{_IMAGE_SUFFIX}"
    if not img_dir.is_dir():
        res.errors.append(f"{img_dir}: missing folder (expected {layout})")
        return res
    if with_labels and not gt_dir.is_dir():
        res.errors.append(f"{gt_dir}: missing folder (expected gtFine/{split}/<city>/<city>_<seq>_<frame>"
                          f"_gtFine_labelIds.png and _gtFine_instanceIds.png)")
        return res
    stems = set()
    for city in sorted(p for p in img_dir.iterdir() if p.is_dir()):
        for f in sorted(city.iterdir()):
            if not f.name.endswith(_IMAGE_SUFFIX):
                res.warnings.append(f"{f}: ignored (not a *{_IMAGE_SUFFIX} file)")
                continue
            stem = f.name[: -len(_IMAGE_SUFFIX)]
            if not stem.startswith(city.name + "_"):
                res.warnings.append(f"{f}: file name does not start with its city folder name {city.name!r}")
            label = gt_dir / city.name / f"{stem}_gtFine_labelIds.png"
            inst = gt_dir / city.name / f"{stem}_gtFine_instanceIds.png"
            if with_labels:
                missing = [p for p in (label, inst) if not p.is_file()]
                for p in missing:
                    res.errors.append(f"{p}: missing (label of {f.name})")
                if missing:
                    continue
            stems.add((city.name, stem))
            res.items.append((stem, f, label, inst))
    stray = sorted(p for p in img_dir.iterdir() if p.is_file())
    for p in stray:
        res.warnings.append(f"{p}: ignored (images belong in a city folder: {layout})")
    if not res.items and not res.errors:
        res.errors.append(f"{img_dir}: no images found (expected {layout})")
    if with_labels and gt_dir.is_dir():
        for city in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
            for f in sorted(city.glob("*_gtFine_labelIds.png")):
                stem = f.name[: -len("_gtFine_labelIds.png")]
                if (city.name, stem) not in stems and not (img_dir / city.name / f"{stem}{_IMAGE_SUFFIX}").is_file():
                    res.warnings.append(f"{f}: label without an image")
    return res
