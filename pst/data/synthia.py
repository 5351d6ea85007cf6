"""SYNTHIA-RAND-CITYSCAPES in its released layout.

::

    root/RGB/NNNNNNN.png
    root/GT/LABELS/NNNNNNN.png   # 16-bit, 3 channels: R = SYNTHIA class id, G = instance id

Class ids (0..22, see :data:`pst.labels.SYNTHIA_ID_TO_NAME`) map to train ids with
:func:`pst.labels.synthia_id_lut`; classes outside the label space become 255. Instances
are the distinct (class, G) pairs with G > 0 on the thing classes of the label space,
renumbered 1..K per image. The label PNGs are read with OpenCV (PIL cannot read 16-bit
colour PNGs); OpenCV returns channels in BGR order, so R is channel 2.

Splits: "all" and "train" are every image (no official split); another name reads
``root/<split>.txt`` (file names, one per line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from pst.data.base import FileDataset, ScanResult, check_ids, check_same_size, read_png_unchanged, read_rgb, \
    relabel_instances
from pst.data.gta5 import scan_image_label_pairs
from pst.labels import IGNORE, SYNTHIA16, LabelSpace, synthia_id_lut

__all__ = ["Synthia"]

_VALID_IDS = np.ones(23, dtype=bool)  # SYNTHIA-RAND-CITYSCAPES class ids 0..22


class Synthia(FileDataset):
    """SYNTHIA-RAND-CITYSCAPES images with semantic and instance ground truth.

    Args:
        root: folder holding ``RGB/`` and ``GT/LABELS/``.
        split: "all" / "train" (every image) or a name with a ``root/<split>.txt`` list.
        label_space: SYNTHIA16 (default) or CITYSCAPES19 (terrain, truck, train never occur).
        transform: optional callable on each sample dict.
        strict: False keeps the complete samples of a tree with missing files (logged) instead of raising.
        with_labels: False reads only images.
    """

    dataset_name = "synthia"

    def __init__(self, root: str | os.PathLike, split: str = "all", *, label_space: LabelSpace = SYNTHIA16,
                 transform: Callable[[dict], dict] | None = None, with_labels: bool = True, strict: bool = True):
        self._need_labels = with_labels
        super().__init__(root, split, label_space=label_space, transform=transform, with_labels=with_labels,
                         strict=strict)
        self._lut = synthia_id_lut(label_space)
        self._is_thing = np.zeros(256, dtype=bool)
        self._is_thing[list(label_space.thing_ids)] = True

    def _scan(self, root: Path, split: str) -> ScanResult:
        return scan_synthia(root, split, with_labels=self._need_labels)

    def _load(self, item: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        _, image_path, label_path = item
        image = read_rgb(image_path)
        H, W = image.shape[:2]
        if not self.with_labels:
            return image, np.full((H, W), IGNORE, np.int64), np.zeros((H, W), np.int64)
        raw = read_png_unchanged(label_path)
        if raw.ndim != 3 or raw.shape[2] < 3:
            raise ValueError(f"{label_path}: expected a 3-channel label PNG (R = class id, G = instance id), "
                             f"got shape {list(raw.shape)}")
        if raw.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{label_path}: expected an 8- or 16-bit PNG, got {raw.dtype}")
        check_same_size(image, raw, image_path, label_path)
        cls = raw[..., 2].astype(np.int64)  # OpenCV order is BGR: R is channel 2
        inst = raw[..., 1].astype(np.int64)
        check_ids(cls, _VALID_IDS, label_path, "SYNTHIA class ids (0..22) in the R channel")
        semantic = self._lut[cls]
        instances = relabel_instances(cls * 65536 + inst, (inst > 0) & self._is_thing[semantic])
        return image, semantic, instances


def scan_synthia(root: Path, split: str, *, with_labels: bool = True) -> ScanResult:
    root = Path(root)
    return scan_image_label_pairs(root, split, root / "RGB", root / "GT" / "LABELS", with_labels=with_labels,
                                  img_layout="RGB/NNNNNNN.png",
                                  lab_layout="GT/LABELS/NNNNNNN.png, 16-bit, R = class, G = instance")
