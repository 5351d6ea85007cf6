"""Label spaces: class lists, thing/stuff split, category groups and dataset id mappings.

Internally every semantic map holds *train ids* of a :class:`LabelSpace` (0..C-1, with
``IGNORE`` = 255 for void), instance maps hold 0 for "no instance" and 1..K per image,
and panoptic maps hold ``class_id * label_divisor + instance`` (``label_divisor`` = 1000,
as in the Cityscapes instanceIds convention).

The Cityscapes table below lists the official label ids, train ids and colours of
cityscapesScripts' ``helpers/labels.py``; the SYNTHIA ids follow the SYNTHIA-RAND-CITYSCAPES
README.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

IGNORE = 255
LABEL_DIVISOR = 1000


class CityscapesLabel(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = (
    CityscapesLabel("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    CityscapesLabel("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    CityscapesLabel("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    CityscapesLabel("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    CityscapesLabel("static", 4, 255, "void", False, True, (0, 0, 0)),
    CityscapesLabel("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    CityscapesLabel("ground", 6, 255, "void", False, True, (81, 0, 81)),
    CityscapesLabel("road", 7, 0, "flat", False, False, (128, 64, 128)),
    CityscapesLabel("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    CityscapesLabel("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    CityscapesLabel("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    CityscapesLabel("building", 11, 2, "construction", False, False, (70, 70, 70)),
    CityscapesLabel("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    CityscapesLabel("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    CityscapesLabel("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    CityscapesLabel("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    CityscapesLabel("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    CityscapesLabel("pole", 17, 5, "object", False, False, (153, 153, 153)),
    CityscapesLabel("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    CityscapesLabel("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    CityscapesLabel("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    CityscapesLabel("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    CityscapesLabel("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    CityscapesLabel("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    CityscapesLabel("person", 24, 11, "human", True, False, (220, 20, 60)),
    CityscapesLabel("rider", 25, 12, "human", True, False, (255, 0, 0)),
    CityscapesLabel("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    CityscapesLabel("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    CityscapesLabel("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    CityscapesLabel("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    CityscapesLabel("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    CityscapesLabel("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    CityscapesLabel("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    CityscapesLabel("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
)

# The category-centric groups of the method (arXiv 2311.10648): CCM trains one instance model per group.
THING_GROUPS: dict[str, tuple[str, ...]] = {
    "auto": ("car", "truck", "bus", "train"),
    "human": ("person", "rider"),
    "bike": ("motorcycle", "bicycle"),
}

# SYNTHIA-RAND-CITYSCAPES class id (R channel of GT/LABELS) -> Cityscapes class name.
SYNTHIA_ID_TO_NAME: dict[int, str] = {
    1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "person", 11: "bicycle", 12: "motorcycle",
    15: "traffic light", 17: "rider", 19: "bus", 21: "wall",
}


@dataclass(frozen=True)
class LabelSpace:
    """An ordered list of classes; the train id of a class is its position.

    Attributes:
        name: short name ("cityscapes19", "synthia16", "toy").
        classes: class names, train id = index.
        things: names of the thing (countable) classes, a subset of ``classes``.
        colors: RGB colour per class, for visualisation.
        cityscapes_ids: the Cityscapes label id of each class, or -1 where there is none.
        ap_min_region_size: instance AP counts ground-truth objects of at least this many
            pixels (smaller ones are "ignore" regions); cityscapesScripts uses 100 at 1024x2048.
        ap_reference_size: [H, W] at which ``ap_min_region_size`` holds. None: the value
            holds at any evaluation size (the Cityscapes spaces keep the official 100 px).
            Set: :meth:`ap_min_region` scales it by the pixel-count ratio of the
            evaluation size to this one, with the floor ``ap_min_region_floor``.
        ap_min_region_floor: the smallest scaled minimum (see :meth:`ap_min_region`).
    """

    name: str
    classes: tuple[str, ...]
    things: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    cityscapes_ids: tuple[int, ...] = field(default=())
    ap_min_region_size: int = 100
    ap_reference_size: tuple[int, int] | None = None
    ap_min_region_floor: int = 16

    def __post_init__(self):
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"LabelSpace {self.name!r}: class names must be unique, got {self.classes}")
        unknown = [t for t in self.things if t not in self.classes]
        if unknown:
            raise ValueError(f"LabelSpace {self.name!r}: thing classes {unknown} are not in classes")
        if len(self.colors) != len(self.classes):
            raise ValueError(f"LabelSpace {self.name!r}: {len(self.colors)} colours for {len(self.classes)} classes")
        if self.cityscapes_ids and len(self.cityscapes_ids) != len(self.classes):
            raise ValueError(f"LabelSpace {self.name!r}: cityscapes_ids must have one entry per class")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def thing_ids(self) -> tuple[int, ...]:
        """Train ids of the thing classes, in train-id order."""
        return tuple(i for i, c in enumerate(self.classes) if c in self.things)

    @property
    def stuff_ids(self) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.classes) if c not in self.things)

    def index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"class {name!r} is not in label space {self.name!r} ({', '.join(self.classes)})") from None

    def groups(self, mode: str = "base") -> dict[str, tuple[int, ...]]:
        """Thing train ids per instance model, for category-centric training.

        ``mode``: "base" (one model for all things), "ccm" (auto / human / bike),
        "icm" (one model per thing class). Groups with no class in this space are left out.
        """
        mode = mode.lower()
        if mode == "base":
            return {"all": self.thing_ids}
        if mode == "ccm":
            out = {}
            for group, names in THING_GROUPS.items():
                ids = tuple(self.index(n) for n in names if n in self.things)
                if ids:
                    out[group] = ids
            rest = tuple(i for i in self.thing_ids if not any(i in g for g in out.values()))
            if rest:
                out["other"] = rest
            return out
        if mode == "icm":
            return {self.classes[i]: (i,) for i in self.thing_ids}
        raise ValueError(f"category mode should be one of 'base', 'ccm', 'icm', got {mode!r}")

    def ap_min_region(self, size=None) -> int:
        """Smallest ground-truth object (pixels) that instance AP counts at evaluation
        size ``size`` = [H, W]: ``ap_min_region_size`` unless ``ap_reference_size`` is set;
        then ``max(ap_min_region_floor, round(ap_min_region_size * H * W / (H_ref * W_ref)))``."""
        if self.ap_reference_size is None or size is None:
            return int(self.ap_min_region_size)
        h, w = (int(v) for v in size)
        rh, rw = self.ap_reference_size
        return max(int(self.ap_min_region_floor), round(self.ap_min_region_size * h * w / (rh * rw)))

    def palette(self) -> np.ndarray:
        """[256, 3] uint8 colour lookup table; the ignore id and unused ids are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        return lut

    def cityscapes_id_lut(self) -> np.ndarray:
        """[256] int64 table: Cityscapes label id -> train id of this space (IGNORE elsewhere)."""
        if not self.cityscapes_ids:
            raise ValueError(f"label space {self.name!r} has no Cityscapes ids")
        lut = np.full(256, IGNORE, dtype=np.int64)
        for train_id, cs_id in enumerate(self.cityscapes_ids):
            if cs_id >= 0:
                lut[cs_id] = train_id
        return lut


def _from_cityscapes(name: str, class_names: tuple[str, ...], **kwargs) -> LabelSpace:
    by_name = {lab.name: lab for lab in CITYSCAPES_LABELS}
    labs = [by_name[c] for c in class_names]
    return LabelSpace(
        name=name,
        classes=class_names,
        things=tuple(lab.name for lab in labs if lab.has_instances),
        colors=tuple(lab.color for lab in labs),
        cityscapes_ids=tuple(lab.id for lab in labs),
        **kwargs,
    )


CITYSCAPES19 = _from_cityscapes(
    "cityscapes19", tuple(lab.name for lab in sorted(
        (lab for lab in CITYSCAPES_LABELS if lab.train_id != 255), key=lambda lab: lab.train_id))
)

# SYNTHIA -> Cityscapes: the 19 classes minus terrain, truck and train (the usual 16-class protocol,
# as in SAC, Araslanov & Roth 2021).
SYNTHIA16 = _from_cityscapes(
    "synthia16", tuple(c for c in CITYSCAPES19.classes if c not in ("terrain", "truck", "train"))
)

# The procedural toy scenes (pst.data.toy): five stuff classes and the three thing groups.
# Instance AP: Cityscapes' 100 px minimum is meant for 1024x2048 frames; at the toy's 128x256
# it would ignore a quarter of the objects. Scaled by pixel count it is 1.6 px, so the floor
# decides: 16 px, the smallest instance the pipeline keeps (clustering min_size and
# eval.thing_area default to 16); it ignores about 4% of the toy target objects.
TOY = _from_cityscapes(
    "toy",
    ("road", "sidewalk", "building", "vegetation", "sky",
     "person", "rider", "car", "truck", "motorcycle", "bicycle"),
    ap_reference_size=(1024, 2048),
    ap_min_region_floor=16,
)

LABEL_SPACES: dict[str, LabelSpace] = {s.name: s for s in (CITYSCAPES19, SYNTHIA16, TOY)}


def get_label_space(name: str) -> LabelSpace:
    try:
        return LABEL_SPACES[name]
    except KeyError:
        raise KeyError(f"unknown label space {name!r}; known: {', '.join(LABEL_SPACES)}") from None


def synthia_id_lut(space: LabelSpace = SYNTHIA16) -> np.ndarray:
    """[256] int64 table: SYNTHIA class id -> train id of ``space`` (IGNORE elsewhere)."""
    lut = np.full(256, IGNORE, dtype=np.int64)
    for sid, name in SYNTHIA_ID_TO_NAME.items():
        if name in space.classes:
            lut[sid] = space.index(name)
    return lut
