"""Datasets and paired augmentations.

Every dataset yields sample dicts (tests/test_data.py checks them):

- ``"image"``: float32 [3, H, W] RGB in [0, 1];
- ``"semantic"``: int64 [H, W] train ids of the dataset's label space, 255 = ignore;
- ``"instances"``: int64 [H, W], 0 = no instance, 1..K per image (all 0 where the
  dataset has no instance ground truth);
- ``"name"``: str.

Datasets: :class:`Cityscapes`, :class:`GTA5`, :class:`Synthia` (their released file
layouts) and :class:`ToyScenes` (procedural street scenes, :mod:`pst.data.toy`, the
built-in default). Augmentations: :mod:`pst.data.transforms`. Tree validation:
:func:`check_dataset` (``pst data check``).
"""

from pst.data import transforms
from pst.data.check import CheckReport, check_dataset
from pst.data.cityscapes import Cityscapes
from pst.data.gta5 import GTA5
from pst.data.synthia import Synthia
from pst.data.toy import STYLES, ToyScenes, ToyStyle, render_scene

__all__ = [
    "Cityscapes",
    "GTA5",
    "Synthia",
    "ToyScenes",
    "ToyStyle",
    "STYLES",
    "render_scene",
    "check_dataset",
    "CheckReport",
    "transforms",
    "build_dataset",
]


def build_dataset(name: str, *, root=None, split: str | None = None, label_space=None, transform=None,
                  with_labels: bool = True, n: int = 256, seed: int = 0, style="source", size=(128, 256)):
    """A dataset by name: "toy" (``n``, ``seed``, ``style``, ``size``) or "cityscapes" / "gta5" /
    "synthia" (``root``, ``split``, ``label_space``, ``with_labels``). ``transform`` for all."""
    if name == "toy":
        return ToyScenes(n, seed=seed, style=style, size=size, transform=transform)
    table = {"cityscapes": (Cityscapes, "train"), "gta5": (GTA5, "all"), "synthia": (Synthia, "all")}
    if name not in table:
        raise ValueError(f"unknown dataset {name!r}; expected one of toy, {', '.join(table)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    cls, default_split = table[name]
    kwargs = {"label_space": label_space} if label_space is not None else {}
    return cls(root, split or default_split, transform=transform, with_labels=with_labels, **kwargs)
