"""Cityscapes files both ways: ground truth in, predictions out (and back in), and evaluation.

Prediction folder written by the exporters here (and read by ``pst evaluate --pred``)::

    PRED_DIR/panoptic.json                  {"annotations": [{"image_id", "file_name",
                                              "segments_info": [{"id", "category_id", "area",
                                              "iscrowd", ["score"]}]}], "categories": [...]}
    PRED_DIR/panoptic/<image_id>_panoptic.png   segment id = R + 256 G + 256^2 B, 0 = void
    PRED_DIR/semantic/<image_id>_labelIds.png   (optional) Cityscapes label ids
    PRED_DIR/instance/<image_id>_pred.txt       (optional) "masks/<file>.png <label id> <score>"
    PRED_DIR/instance/masks/<image_id>_<k>.png  binary masks (0 / 255)

``<image_id>`` is ``<city>_<seq>_<frame>``; ``category_id`` and label ids are Cityscapes
label ids (person = 24), not train ids, as the official scripts expect. These are the
formats of cityscapesScripts' ``evalPanopticSemanticLabeling`` (with the ground-truth JSON
made by ``preparation/createPanopticImgs.py``), ``evalPixelLevelSemanticLabeling``
(point ``CITYSCAPES_RESULTS`` at ``PRED_DIR/semantic``) and
``evalInstanceLevelSemanticLabeling`` (``CITYSCAPES_RESULTS`` = ``PRED_DIR/instance``).

Ground truth: ``gtFine/<split>/<city>/<image_id>_gtFine_{labelIds,instanceIds}.png``.
In instanceIds a thing object is ``label_id * 1000 + k`` with k counted **from 0**
(26000 is the first car), a crowd ("group") region is ``label_id`` (< 1000), stuff and
void pixels are their label id. :func:`gt_panoptic_from_instance_ids` turns this into
pst's convention ``train_id * label_divisor + instance`` with objects ``k + 1`` and crowd
regions instance 0 (see :mod:`pst.panoptic` and :mod:`pst.metrics.panoptic`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch

from pst.io import read_png, save_png, write_json, write_text
from pst.labels import CITYSCAPES_LABELS, CITYSCAPES19, IGNORE, LABEL_DIVISOR, LabelSpace

__all__ = [
    "GroundTruth",
    "PanopticExporter",
    "list_ground_truth",
    "read_ground_truth",
    "gt_panoptic_from_instance_ids",
    "gt_semantic_from_label_ids",
    "instance_void_mask",
    "encode_panoptic_png",
    "decode_panoptic_png",
    "read_panoptic_json",
    "read_panoptic_prediction",
    "export_semantic",
    "read_semantic_prediction",
    "export_instances",
    "read_instance_prediction",
    "evaluate_dirs",
    "results_table",
]

logger = logging.getLogger(__name__)

_ID_RE = re.compile(r"^([A-Za-z0-9\-]+)_(\d+)_(\d+)")
# Cityscapes stores at most 1000 objects per class and image (instanceIds = label * 1000 + k)
_CS_DIVISOR = 1000


def image_id_from_name(name: str) -> str:
    """``<city>_<seq>_<frame>`` of a Cityscapes file name (``aachen_000000_000019_gtFine_labelIds.png``)."""
    m = _ID_RE.match(os.path.basename(name))
    if not m:
        raise ValueError(f"{name}: not a Cityscapes file name (expected <city>_<seq>_<frame>_...)")
    return "_".join(m.groups())


def _label_ids(label_space: LabelSpace) -> np.ndarray:
    """[C] int64: the Cityscapes label id of each train id."""
    if not label_space.cityscapes_ids or any(i < 0 for i in label_space.cityscapes_ids):
        raise ValueError(f"label space {label_space.name!r} has no Cityscapes label id for every class")
    return np.asarray(label_space.cityscapes_ids, dtype=np.int64)


def _train_lut(label_space: LabelSpace) -> np.ndarray:
    """[34] int64: Cityscapes label id -> train id of ``label_space`` (IGNORE elsewhere)."""
    return label_space.cityscapes_id_lut()[: max(lab.id for lab in CITYSCAPES_LABELS) + 1]


def _check_shape(array: np.ndarray, shape: tuple[int, int] | None, path) -> None:
    if shape is not None and tuple(array.shape[:2]) != tuple(shape):
        raise ValueError(f"{path}: image is {array.shape[0]}x{array.shape[1]} (HxW), "
                         f"but the ground truth is {shape[0]}x{shape[1]}")


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} should be a torch.Tensor or numpy array, got {type(x).__name__}")
    return x


# --------------------------------------------------------------------------- ground truth
def gt_semantic_from_label_ids(label_ids: np.ndarray, label_space: LabelSpace = CITYSCAPES19,
                               *, path: Any = "labelIds") -> np.ndarray:
    """[H, W] Cityscapes label ids (uint8) -> [H, W] int64 train ids, IGNORE where not evaluated."""
    label_ids = np.asarray(label_ids)
    if label_ids.ndim != 2 or not np.issubdtype(label_ids.dtype, np.integer):
        raise ValueError(f"{path}: expected a single-channel integer label image, got {label_ids.dtype} "
                         f"{label_ids.shape}")
    lut = _train_lut(label_space)
    bad = (label_ids < 0) | (label_ids >= len(lut))
    if bad.any():
        raise ValueError(f"{path}: unknown Cityscapes label ids {sorted(set(label_ids[bad].tolist()))[:5]}")
    return lut[label_ids.astype(np.int64)]


def gt_panoptic_from_instance_ids(instance_ids: np.ndarray, label_space: LabelSpace = CITYSCAPES19, *,
                                  label_divisor: int = LABEL_DIVISOR, path: Any = "instanceIds") -> np.ndarray:
    """[H, W] Cityscapes instanceIds -> [H, W] int64 ground-truth panoptic map.

    Objects (``v >= 1000``) become ``train_id * label_divisor + (v % 1000 + 1)``; crowd
    regions of thing classes and stuff (``v < 1000``) ``train_id * label_divisor``; label
    ids outside the label space (void, caravan, trailer, ...) become ``VOID`` (-1).
    """
    v = np.asarray(instance_ids)
    if v.ndim != 2 or not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"{path}: expected a single-channel integer instanceIds image, got {v.dtype} {v.shape}")
    v = v.astype(np.int64)
    lut = _train_lut(label_space)
    label = np.where(v >= _CS_DIVISOR, v // _CS_DIVISOR, v)
    bad = (v < 0) | (label >= len(lut))
    if bad.any():
        raise ValueError(f"{path}: unknown Cityscapes ids {sorted(set(v[bad].tolist()))[:5]}")
    inst = np.where(v >= _CS_DIVISOR, v % _CS_DIVISOR + 1, 0)
    if label_divisor <= _CS_DIVISOR and (inst >= label_divisor).any():
        raise ValueError(f"{path}: instance number {int(inst.max()) - 1} does not fit label_divisor={label_divisor}")
    train = lut[label]
    return np.where(train == IGNORE, -1, train * label_divisor + inst)


def instance_void_mask(instance_ids: np.ndarray, label_space: LabelSpace = CITYSCAPES19) -> np.ndarray:
    """[H, W] bool: the pixels the official instance evaluation counts as void.

    ``evalInstanceLevelSemanticLabeling`` takes void from the *instanceIds* image: pixels
    whose value is the id of a label that is not evaluated. Objects of such labels
    (caravan 29xxx, trailer 30xxx) are therefore not void there, unlike in the panoptic
    and pixel-level evaluations.
    """
    v = np.asarray(instance_ids).astype(np.int64)
    lut = _train_lut(label_space)
    return (v < _CS_DIVISOR) & (lut[np.clip(v, 0, len(lut) - 1)] == IGNORE)


class GroundTruth(NamedTuple):
    """One ground-truth image: ``semantic`` [H, W] int64 train ids (IGNORE = void),
    ``panoptic`` [H, W] int64 (VOID = -1, crowd = thing class + instance 0),
    ``instance_void`` [H, W] bool (void for instance AP)."""

    image_id: str
    semantic: np.ndarray
    panoptic: np.ndarray
    instance_void: np.ndarray


def list_ground_truth(root: str | os.PathLike, split: str = "val") -> list[tuple[str, Path, Path]]:
    """``[(image_id, labelIds path, instanceIds path)]`` of ``root/gtFine/<split>/*/``, sorted by id."""
    base = Path(root) / "gtFine" / split
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such folder (expected a Cityscapes tree with gtFine/{split}/<city>/)")
    out = []
    for inst in sorted(base.glob("*/*_gtFine_instanceIds.png")):
        lab = inst.with_name(inst.name.replace("_instanceIds.png", "_labelIds.png"))
        if not lab.is_file():
            raise FileNotFoundError(f"{lab}: missing (its instanceIds file {inst.name} exists)")
        out.append((image_id_from_name(inst.name), lab, inst))
    if not out:
        raise FileNotFoundError(f"{base}: no */*_gtFine_instanceIds.png files")
    ids = [o[0] for o in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{base}: duplicate image ids")
    return out


def read_ground_truth(label_path: str | os.PathLike, instance_path: str | os.PathLike,
                      label_space: LabelSpace = CITYSCAPES19, *, label_divisor: int = LABEL_DIVISOR) -> GroundTruth:
    """Read one image's ``*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png``."""
    lab = read_png(label_path)
    inst = read_png(instance_path)
    if lab.shape != inst.shape[:2] or inst.ndim != 2:
        raise ValueError(f"{instance_path}: shape {inst.shape} differs from {label_path} {lab.shape}")
    return GroundTruth(
        image_id=image_id_from_name(str(label_path)),
        semantic=gt_semantic_from_label_ids(lab, label_space, path=label_path),
        panoptic=gt_panoptic_from_instance_ids(inst, label_space, label_divisor=label_divisor, path=instance_path),
        instance_void=instance_void_mask(inst, label_space),
    )


# --------------------------------------------------------------------------- panoptic
def encode_panoptic_png(ids: np.ndarray) -> np.ndarray:
    """[H, W] non-negative ids < 2^24 -> [H, W, 3] uint8 (id = R + 256 G + 256^2 B)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 1 << 24):
        raise ValueError(f"panoptic PNG ids should lie in [0, 2^24), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def decode_panoptic_png(rgb: np.ndarray, *, path: Any = "panoptic PNG") -> np.ndarray:
    """[H, W, 3|4] uint8 -> [H, W] int64 ids (R + 256 G + 256^2 B)."""
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit RGB image (id = R + 256 G + 256^2 B), got {rgb.dtype} {rgb.shape}")
    c = rgb[..., :3].astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 65536 * c[..., 2]


class PanopticExporter:
    """Write panoptic predictions in the cityscapesScripts / COCO-panoptic format.

    ``add(image_id, panoptic)`` per image writes ``out_dir/panoptic/<image_id>_panoptic.png``;
    ``close()`` (or leaving the ``with`` block) writes ``out_dir/panoptic.json``.
    A segment ``train_id * label_divisor + k`` is written with PNG id ``label_id * 1000 + k``
    and ``category_id`` = its Cityscapes label id; void (negative ids) is PNG id 0.

    Args:
        out_dir: the prediction folder.
        label_space: classes with Cityscapes ids (CITYSCAPES19, SYNTHIA16, TOY).
        label_divisor: of the panoptic maps passed to ``add``.
    """

    def __init__(self, out_dir: str | os.PathLike, label_space: LabelSpace = CITYSCAPES19, *,
                 label_divisor: int = LABEL_DIVISOR):
        self.out_dir = Path(out_dir)
        self.label_space = label_space
        self.label_divisor = int(label_divisor)
        self._label_ids = _label_ids(label_space)
        self.annotations: list[dict] = []
        self._seen: set[str] = set()

    def __enter__(self) -> "PanopticExporter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def add(self, image_id: str, panoptic: Any, scores: dict[int, float] | None = None) -> Path:
        """Write one image.

        Args:
            image_id: ``<city>_<seq>_<frame>``.
            panoptic: [H, W] integer panoptic map (torch or numpy), negative = void.
            scores: optional ``{panoptic id: score}`` stored as each segment's ``score``.
        Returns:
            the PNG path.
        """
        if image_id in self._seen:
            raise ValueError(f"image {image_id!r} was already added")
        pan = _as_numpy(panoptic, "panoptic")
        if pan.ndim != 2 or not np.issubdtype(pan.dtype, np.integer):
            raise ValueError(f"panoptic should be an [H, W] integer map, got {pan.dtype} {pan.shape}")
        pan = pan.astype(np.int64)
        div, C = self.label_divisor, len(self._label_ids)
        ids, inverse, area = np.unique(pan, return_inverse=True, return_counts=True)
        cls, inst = ids // div, ids % div
        void = ids < 0
        bad = ~void & (cls >= C)
        if bad.any():
            raise ValueError(f"{image_id}: panoptic ids {ids[bad][:5].tolist()} have classes outside "
                             f"[0, {C}) of label space {self.label_space.name!r}")
        if (inst[~void] >= _CS_DIVISOR).any():
            raise ValueError(f"{image_id}: instance numbers should be below {_CS_DIVISOR} for the Cityscapes "
                             f"format, got {int(inst[~void].max())}")
        label = self._label_ids[np.where(void, 0, cls)]
        png_ids = np.where(void, 0, label * _CS_DIVISOR + inst)
        things = set(self.label_space.thing_ids)
        segments = []
        for k in np.flatnonzero(~void):
            seg = {"id": int(png_ids[k]), "category_id": int(label[k]), "area": int(area[k]), "iscrowd": 0}
            if scores is not None and int(ids[k]) in scores:
                seg["score"] = float(scores[int(ids[k])])
            seg["isthing"] = int(int(cls[k]) in things)
            segments.append(seg)
        file_name = f"{image_id}_panoptic.png"
        path = self.out_dir / "panoptic" / file_name
        save_png(path, encode_panoptic_png(png_ids[inverse].reshape(pan.shape)))
        self.annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
        self._seen.add(image_id)
        return path

    def close(self) -> Path:
        """Write ``panoptic.json``; returns its path."""
        things = set(self.label_space.thing_ids)
        categories = [{"id": int(self._label_ids[c]), "name": name, "isthing": int(c in things),
                       "color": list(self.label_space.colors[c])}
                      for c, name in enumerate(self.label_space.classes)]
        path = self.out_dir / "panoptic.json"
        write_json(path, {"annotations": self.annotations, "categories": categories})
        return path


def read_panoptic_json(path: str | os.PathLike) -> dict[str, dict]:
    """``{image_id: annotation}`` of a COCO-panoptic prediction JSON, with its format checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: expected an object with an 'annotations' list")
    out = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "file_name", "segments_info"} <= set(ann):
            raise ValueError(f"{path}: annotation {i} should have image_id, file_name and segments_info")
        for seg in ann["segments_info"]:
            if not isinstance(seg, dict) or "id" not in seg or "category_id" not in seg:
                raise ValueError(f"{path}: image {ann['image_id']}: every segment needs 'id' and 'category_id'")
        if ann["image_id"] in out:
            raise ValueError(f"{path}: image {ann['image_id']} appears twice")
        out[str(ann["image_id"])] = ann
    return out


def read_panoptic_prediction(png_path: str | os.PathLike, annotation: dict, label_space: LabelSpace = CITYSCAPES19,
                             *, shape: tuple[int, int] | None = None, label_divisor: int = LABEL_DIVISOR) -> np.ndarray:
    """One predicted panoptic PNG + its JSON annotation -> [H, W] int64 panoptic map.

    Every segment listed in the JSON becomes ``train_id * label_divisor + k`` (k counted
    per class from 0 for stuff classes, from 1 for thing classes, in JSON order); PNG id 0
    not listed in the JSON is void (-1). Raises ``ValueError`` naming the file for ids in
    the PNG missing from the JSON (and the reverse, as the official script does), unknown
    category ids and a size that differs from ``shape``.
    """
    ids = decode_panoptic_png(read_png(png_path), path=png_path)
    _check_shape(ids, shape, png_path)
    lut = _train_lut(label_space)
    things = set(label_space.thing_ids)
    segs = {}
    counters: dict[int, int] = {}
    for seg in annotation["segments_info"]:
        sid, cat = int(seg["id"]), int(seg["category_id"])
        if sid in segs:
            raise ValueError(f"{png_path}: segment id {sid} is listed twice in the JSON")
        if not 0 <= cat < len(lut) or lut[cat] == IGNORE:
            raise ValueError(f"{png_path}: segment {sid} has unknown category_id {cat} (expected a Cityscapes "
                             f"label id of label space {label_space.name!r})")
        c = int(lut[cat])
        k = counters.get(c, 0 if c not in things else 1)
        if k >= label_divisor:
            raise ValueError(f"{png_path}: more than {label_divisor - 1} segments of class {label_space.classes[c]}")
        counters[c] = k + 1
        segs[sid] = c * label_divisor + k
    present = np.unique(ids)
    missing = [int(i) for i in present if int(i) not in segs and i != 0]
    if missing:
        raise ValueError(f"{png_path}: segment ids {missing[:10]} are in the PNG but not in the JSON")
    unused = sorted(set(segs) - {int(i) for i in present})
    if unused:
        raise ValueError(f"{png_path}: segment ids {unused[:10]} are in the JSON but not in the PNG")
    keys = np.array(sorted(segs), dtype=np.int64)
    vals = np.array([segs[k] for k in keys.tolist()], dtype=np.int64)
    pos = np.searchsorted(keys, ids)
    pos = np.clip(pos, 0, max(len(keys) - 1, 0))
    if len(keys) == 0:
        return np.full(ids.shape, -1, dtype=np.int64)
    found = keys[pos] == ids
    return np.where(found, vals[pos], -1)


# --------------------------------------------------------------------------- semantic
def export_semantic(out_dir: str | os.PathLike, image_id: str, semantic: Any,
                    label_space: LabelSpace = CITYSCAPES19) -> Path:
    """Write ``out_dir/<image_id>_labelIds.png``: train ids -> Cityscapes label ids (IGNORE -> 0).

    Args:
        semantic: [H, W] integer train ids, IGNORE (255) for unlabelled pixels.
    """
    sem = _as_numpy(semantic, "semantic")
    if sem.ndim != 2 or not np.issubdtype(sem.dtype, np.integer):
        raise ValueError(f"semantic should be an [H, W] integer map, got {sem.dtype} {sem.shape}")
    sem = sem.astype(np.int64)
    ids = _label_ids(label_space)
    C = len(ids)
    bad = (sem != IGNORE) & ((sem < 0) | (sem >= C))
    if bad.any():
        raise ValueError(f"{image_id}: semantic holds train ids {sorted(set(sem[bad].tolist()))[:5]} outside "
                         f"[0, {C}) and not {IGNORE}")
    out = np.where(sem == IGNORE, 0, ids[np.clip(sem, 0, C - 1)]).astype(np.uint8)
    path = Path(out_dir) / f"{image_id}_labelIds.png"
    save_png(path, out)
    return path


def read_semantic_prediction(path: str | os.PathLike, label_space: LabelSpace = CITYSCAPES19, *,
                             shape: tuple[int, int] | None = None) -> np.ndarray:
    """A labelIds PNG -> [H, W] int64 train ids; label ids that are not evaluated -> IGNORE
    (they count as false negatives of the ground-truth class, as in the official script)."""
    arr = read_png(path)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel labelIds image, got shape {arr.shape}")
    _check_shape(arr, shape, path)
    return gt_semantic_from_label_ids(arr, label_space, path=path)


# --------------------------------------------------------------------------- instances
def export_instances(out_dir: str | os.PathLike, image_id: str, masks: Any, labels: Any, scores: Any,
                     label_space: LabelSpace = CITYSCAPES19) -> Path:
    """Write ``out_dir/<image_id>_pred.txt`` and ``out_dir/masks/<image_id>_<k>.png``.

    Args:
        masks: [N, H, W] bool predicted masks (may overlap).
        labels: [N] integer train ids (thing classes).
        scores: [N] float confidences.
    Returns:
        the txt path.
    """
    m = _as_numpy(masks, "masks")
    lab = _as_numpy(labels, "labels").reshape(-1)
    sc = _as_numpy(scores, "scores").astype(np.float64).reshape(-1)
    if m.ndim != 3:
        raise ValueError(f"masks should have shape [N, H, W], got {m.shape}")
    if len(lab) != len(m) or len(sc) != len(m):
        raise ValueError(f"labels and scores should have one entry per mask ({len(m)}), got {len(lab)} and {len(sc)}")
    if np.isnan(sc).any():
        raise ValueError("scores should not be NaN")
    ids = _label_ids(label_space)
    things = set(label_space.thing_ids)
    if any(int(c) not in things for c in lab):
        raise ValueError(f"labels should be thing train ids {sorted(things)}, got {sorted(set(lab.tolist()))}")
    out_dir = Path(out_dir)
    lines = []
    for k in range(len(m)):
        rel = f"masks/{image_id}_{k}.png"
        save_png(out_dir / rel, (m[k] != 0).astype(np.uint8) * 255)
        lines.append(f"{rel} {int(ids[int(lab[k])])} {float(sc[k])!r}\n")
    path = out_dir / f"{image_id}_pred.txt"
    write_text(path, "".join(lines))
    return path


def read_instance_prediction(txt_path: str | os.PathLike, label_space: LabelSpace = CITYSCAPES19, *,
                             shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An official instance prediction txt -> (masks [N, H, W] bool, labels [N] int64 train ids,
    scores [N] float64). Lines whose label id is not a thing class of ``label_space`` are
    skipped (the official script skips labels it does not evaluate)."""
    txt_path = Path(txt_path)
    if not txt_path.is_file():
        raise FileNotFoundError(f"{txt_path}: no such file")
    lut = _train_lut(label_space)
    things = set(label_space.thing_ids)
    masks, labels, scores = [], [], []
    for n, line in enumerate(txt_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 3:
            raise ValueError(f"{txt_path}:{n}: expected '<relative mask path> <label id> <confidence>', got {line!r}")
        rel, lab_s, conf_s = parts
        if os.path.isabs(rel):
            raise ValueError(f"{txt_path}:{n}: the mask path should be relative, got {rel}")
        try:
            lab, conf = int(float(lab_s)), float(conf_s)
        except ValueError:
            raise ValueError(f"{txt_path}:{n}: label id and confidence should be numbers, got {lab_s!r} {conf_s!r}") from None
        if math.isnan(conf):
            raise ValueError(f"{txt_path}:{n}: confidence is NaN")
        if not 0 <= lab < len(lut) or int(lut[lab]) not in things:
            continue
        mask_path = txt_path.parent / rel
        img = read_png(mask_path)
        if img.ndim == 3:  # the official script converts to greyscale ("L"); any non-zero is foreground
            img = np.asarray(_to_grey(img))
        _check_shape(img, shape, mask_path)
        masks.append(img != 0)
        labels.append(int(lut[lab]))
        scores.append(conf)
    H, W = shape if shape is not None else (masks[0].shape if masks else (0, 0))
    return (np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool),
            np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64))


def _to_grey(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(rgb).convert("L"))


def _find_one(folder: Path, image_id: str, ext: str) -> Path | None:
    hits = sorted(p for p in folder.rglob(f"{image_id}*{ext}") if p.is_file() and "masks" not in p.parent.name)
    if len(hits) > 1:
        raise ValueError(f"{folder}: several predictions for {image_id}: {[h.name for h in hits]}")
    return hits[0] if hits else None


# --------------------------------------------------------------------------- evaluation
def evaluate_dirs(
    gt_root: str | os.PathLike,
    pred_dir: str | os.PathLike,
    *,
    split: str = "val",
    label_space: LabelSpace = CITYSCAPES19,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a prediction folder (layout in the module docstring) on a Cityscapes tree.

    PQ / SQ / RQ / PQ-dagger come from ``PRED_DIR/panoptic``; mIoU from ``PRED_DIR/semantic``
    when that folder exists, else from the class map of the panoptic predictions (void =
    no class); AP / AP50 only when ``PRED_DIR/instance`` exists.

    Returns:
        dict with ``PQ``, ``SQ``, ``RQ``, ``PQ_things``, ``SQ_things``, ``RQ_things``,
        ``PQ_stuff``, ``SQ_stuff``, ``RQ_stuff``, ``PQ_dagger``, ``mIoU``, [``AP``, ``AP50``],
        ``per_class`` ({class name: {PQ, SQ, RQ, PQ_dagger, TP, FP, FN, IoU, [AP, AP50]}}),
        ``num_images``, ``mIoU_source``: fractions in [0, 1], NaN where undefined.
    """
    from pst.metrics import InstanceAP, PanopticQuality, SemanticIoU
    from pst.panoptic import panoptic_to_semantic

    pred_dir = Path(pred_dir)
    gt_list = list_ground_truth(gt_root, split)
    annotations = read_panoptic_json(pred_dir / "panoptic.json")
    pan_dir = pred_dir / "panoptic"
    if not pan_dir.is_dir():
        raise FileNotFoundError(f"{pan_dir}: no such folder (panoptic prediction PNGs)")
    sem_dir = pred_dir / "semantic"
    inst_dir = pred_dir / "instance"
    use_sem, use_inst = sem_dir.is_dir(), inst_dir.is_dir()
    pq = PanopticQuality(label_space)
    miou = SemanticIoU(label_space)
    ap = InstanceAP(label_space) if use_inst else None
    extra = set(annotations) - {g[0] for g in gt_list}
    if extra:
        logger.warning("%d predictions have no ground truth in split %r (ignored), e.g. %s",
                       len(extra), split, sorted(extra)[0])
    items: Iterable = gt_list
    if progress:
        from tqdm import tqdm

        items = tqdm(gt_list, desc="evaluate", unit="img")
    for image_id, lab_path, inst_path in items:
        gt = read_ground_truth(lab_path, inst_path, label_space)
        shape = gt.semantic.shape
        if image_id not in annotations:
            raise ValueError(f"{pred_dir / 'panoptic.json'}: no prediction for image {image_id}")
        ann = annotations[image_id]
        pan = read_panoptic_prediction(pan_dir / ann["file_name"], ann, label_space, shape=shape)
        gt_pan = torch.from_numpy(gt.panoptic).to(device)
        pan_t = torch.from_numpy(pan).to(device)
        pq.update(pan_t, gt_pan)
        if use_sem:
            sem_path = _find_one(sem_dir, image_id, ".png")
            if sem_path is None:
                raise FileNotFoundError(f"{sem_dir}: no semantic prediction {image_id}*.png")
            sem = torch.from_numpy(read_semantic_prediction(sem_path, label_space, shape=shape)).to(device)
        else:
            sem = panoptic_to_semantic(pan_t)
        miou.update(sem, torch.from_numpy(gt.semantic).to(device))
        if ap is not None:
            txt = _find_one(inst_dir, image_id, ".txt")
            if txt is None:
                raise FileNotFoundError(f"{inst_dir}: no instance prediction {image_id}*.txt")
            masks, labels, scores = read_instance_prediction(txt, label_space, shape=shape)
            ap.update(torch.from_numpy(masks).to(device), torch.from_numpy(labels).to(device),
                      torch.from_numpy(scores), gt_pan, void_mask=torch.from_numpy(gt.instance_void).to(device))
    return combine_results(pq.compute(), miou.compute(), ap.compute() if ap is not None else None,
                           mIoU_source="semantic" if use_sem else "panoptic")


def combine_results(pq: dict, miou: dict, ap: dict | None = None, **extra: Any) -> dict[str, Any]:
    """One flat results dict from the outputs of the three metrics' ``compute()``."""
    out: dict[str, Any] = {k: pq[k] for k in ("PQ", "SQ", "RQ", "PQ_things", "SQ_things", "RQ_things",
                                              "PQ_stuff", "SQ_stuff", "RQ_stuff", "PQ_dagger")}
    out["mIoU"] = miou["mIoU"]
    if ap is not None:
        out["AP"], out["AP50"] = ap["AP"], ap["AP50"]
    per_class = {}
    for c, row in enumerate(pq["per_class"]):
        entry = {k: row[k] for k in ("PQ", "SQ", "RQ", "PQ_dagger", "TP", "FP", "FN")}
        entry["IoU"] = miou["IoU"][c]
        if ap is not None:  # same class order (train ids); NaN for stuff classes
            entry["AP"], entry["AP50"] = ap["per_class"][c]["AP"], ap["per_class"][c]["AP50"]
        per_class[row["name"]] = entry
    out["per_class"] = per_class
    out["num_images"] = pq.get("num_images", 0)
    out.update(extra)
    return out


def results_table(results: dict[str, Any], label_space: LabelSpace | None = None) -> str:
    """A plain-text table (percentages) of :func:`evaluate_dirs` results."""
    things = set(label_space.things) if label_space is not None else set()
    has_ap = "AP" in results

    def f(x) -> str:
        return "    -" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:5.1f}"

    head = f"{'class':<14}|    PQ     SQ     RQ    PQ†    IoU" + ("     AP   AP50" if has_ap else "")
    lines = [head, "-" * len(head)]
    for name, r in results["per_class"].items():
        kind = "*" if name in things else " "
        row = f"{(name + kind)[:14]:<14}| {f(r['PQ'])}  {f(r['SQ'])}  {f(r['RQ'])}  {f(r['PQ_dagger'])}  {f(r['IoU'])}"
        if has_ap:
            row += f"  {f(r.get('AP'))}  {f(r.get('AP50'))}"
        lines.append(row)
    lines.append("-" * len(head))
    lines.append(f"{'all':<14}| {f(results['PQ'])}  {f(results['SQ'])}  {f(results['RQ'])}  "
                 f"{f(results['PQ_dagger'])}  {f(results['mIoU'])}"
                 + (f"  {f(results['AP'])}  {f(results['AP50'])}" if has_ap else ""))
    lines.append(f"{'things':<14}| {f(results['PQ_things'])}  {f(results['SQ_things'])}  {f(results['RQ_things'])}")
    lines.append(f"{'stuff':<14}| {f(results['PQ_stuff'])}  {f(results['SQ_stuff'])}  {f(results['RQ_stuff'])}")
    return "\n".join(lines)


def to_json_safe(obj: Any) -> Any:
    """NaN / inf -> None, recursively, so the results are strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    return obj
