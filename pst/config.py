"""Run configuration: YAML files read into nested dataclasses, with validation and overrides.

A config file is a YAML mapping whose keys mirror :class:`Config`. A file may start from
another one with ``inherit: other.yaml`` (a path relative to the file, or a shipped
config name); its own keys then override the inherited ones, nested mappings key by key.
Command-line overrides are ``dotted.key=value`` strings, the value parsed as YAML
(``source.steps=100``, ``data.size=[64,128]``, ``model.pretrained=null``).

Every key is checked: an unknown key raises ``KeyError`` and a value of the wrong type
``TypeError``, each naming the full dotted key; out-of-range values raise ``ValueError``.

Shipped configs live in ``configs/`` at the repository root (``toy``, ``toy_ccm``,
``toy_icm``, ``synthia_cityscapes``, ``gta5_cityscapes`` and their ``_ccm`` / ``_icm``
variants); :func:`load_config` accepts their names as well as paths.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

__all__ = [
    "Config",
    "DatasetConfig",
    "DataConfig",
    "ModelConfig",
    "AugmentConfig",
    "LossConfig",
    "OptimizerConfig",
    "LoopConfig",
    "SourceConfig",
    "SelfTrainConfig",
    "InstancePseudoConfig",
    "EvalConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "find_config",
    "shipped_configs",
    "CONFIG_DIRS",
    "RESUME_RULES",
    "INIT_KEYS",
    "config_changes",
    "resume_rule",
]

# Shipped configs: the repository's configs/ (editable installs, checkouts) and a copy
# inside the package (wheels).
CONFIG_DIRS = (Path(__file__).resolve().parent.parent / "configs", Path(__file__).resolve().parent / "configs")


@dataclass
class DatasetConfig:
    """One dataset. ``name``: toy | cityscapes | gta5 | synthia.

    toy: ``n`` procedural scenes of ``style`` drawn from ``seed``; the others read ``root``
    (split ``split``); ``limit`` keeps the first ``limit`` samples (0 = all);
    ``has_labels`` false reads images only (unlabelled target).
    """

    name: Literal["toy", "cityscapes", "gta5", "synthia"] = "toy"
    root: Optional[str] = None
    split: Optional[str] = None  # None: the dataset's default (cityscapes: train, gta5/synthia: all)
    style: str = "source"
    n: int = 256
    seed: int = 0
    limit: int = 0
    has_labels: bool = True

    def validate(self, key: str) -> None:
        if self.name != "toy" and not self.root:
            raise ValueError(f"{key}.root: dataset {self.name!r} needs a root folder")
        _check_range(f"{key}.n", self.n, 1)
        _check_range(f"{key}.limit", self.limit, 0)


@dataclass
class DataConfig:
    """The three datasets of a run and the batch geometry.

    ``size``: training crop [H, W] (toy scenes are generated at this size);
    ``eval_size``: evaluation images are resized to it (None: native size).
    """

    source: DatasetConfig = field(default_factory=lambda: DatasetConfig(style="source", seed=1))
    target: DatasetConfig = field(default_factory=lambda: DatasetConfig(style="target", seed=2))
    target_val: DatasetConfig = field(default_factory=lambda: DatasetConfig(style="target", seed=3, n=32))
    size: list[int] = field(default_factory=lambda: [128, 256])
    eval_size: Optional[list[int]] = None
    batch_size: int = 4
    num_workers: int = 0
    cache: bool = True

    def validate(self, key: str) -> None:
        for name in ("source", "target", "target_val"):
            getattr(self, name).validate(f"{key}.{name}")
        for name in ("size", "eval_size"):
            v = getattr(self, name)
            if v is not None and (len(v) != 2 or min(v) < 8):
                raise ValueError(f"{key}.{name} should be [H, W] with both >= 8, got {v}")
        _check_range(f"{key}.batch_size", self.batch_size, 1)
        _check_range(f"{key}.num_workers", self.num_workers, 0)


@dataclass
class ModelConfig:
    """Networks (pst.models.build_semantic / build_instance)."""

    semantic: Literal["deeplabv2", "deeplabv3", "deeplabv3plus"] = "deeplabv3plus"
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet18"
    instance_backbone: Optional[str] = None  # None: same as backbone
    output_stride: Literal[8, 16] = 8
    decoder_stride: Literal[2, 4] = 4  # deeplabv3plus: stride of the decoder (2: low-level features from the stem)
    width: int = 16
    embed_dim: int = 8
    # > 0: spatial embeddings, the pixel coordinates / embed_coords (pixels per unit at the
    # input resolution) added to embedding channels 0 and 1 (pst.models.unet.add_coordinates)
    embed_coords: float = 0.0
    pretrained: Optional[str] = None

    def validate(self, key: str) -> None:
        _check_range(f"{key}.width", self.width, 1)
        if self.decoder_stride != 4 and self.semantic != "deeplabv3plus":
            raise ValueError(f"{key}.decoder_stride applies to deeplabv3plus only, got {self.decoder_stride} "
                             f"with semantic={self.semantic!r}")
        _check_range(f"{key}.embed_dim", self.embed_dim, 1)
        _check_range(f"{key}.embed_coords", self.embed_coords, 0.0)
        if self.embed_coords and self.embed_dim < 2:
            raise ValueError(f"{key}.embed_coords needs embed_dim >= 2, got embed_dim={self.embed_dim}")
        if self.instance_backbone not in (None, "resnet18", "resnet34", "resnet50", "resnet101"):
            raise ValueError(f"{key}.instance_backbone should be a resnet18/34/50/101 or null, "
                             f"got {self.instance_backbone!r}")


@dataclass
class AugmentConfig:
    """Training augmentations (batched, driven by a per-step generator)."""

    flip: bool = True
    zoom: list[float] = field(default_factory=lambda: [0.75, 1.0])  # random scale-crop, 1 = none
    color_jitter: float = 0.4
    blur_p: float = 0.2
    greyscale_p: float = 0.2
    # hue rotated by up to this fraction of a full turn (torchvision's ColorJitter hue), on the source
    # images (source stage, self-training's source batches) and the student's view of the target;
    # not in the oracle stage, whose colours are the target's own and carry its labels
    hue: float = 0.0

    def validate(self, key: str) -> None:
        if len(self.zoom) != 2 or not 0 < self.zoom[0] <= self.zoom[1] <= 1:
            raise ValueError(f"{key}.zoom should be [lo, hi] with 0 < lo <= hi <= 1, got {self.zoom}")
        for name in ("color_jitter", "blur_p", "greyscale_p"):
            _check_range(f"{key}.{name}", getattr(self, name), 0.0, 1.0)
        _check_range(f"{key}.hue", self.hue, 0.0, 0.5)


@dataclass
class LossConfig:
    """Loss weights and margins (discriminative loss: De Brabandere et al. 2017; focal class
    weighting: SAC, Araslanov & Roth 2021, github.com/visinf/da-sac)."""

    delta_v: float = 0.5
    delta_d: float = 1.5
    instance_weight: float = 1.0
    objectness_weight: float = 1.0
    focal_power: float = 3.0

    def validate(self, key: str) -> None:
        _check_range(f"{key}.delta_v", self.delta_v, 0.0, strict=True)
        if self.delta_d <= self.delta_v:
            raise ValueError(f"{key}.delta_d should exceed delta_v ({self.delta_v}), got {self.delta_d}")


@dataclass
class OptimizerConfig:
    """The optimiser and its poly schedule, shared by the training stages
    (:func:`pst.train.model.build_optimizer`, :func:`pst.train.model.set_lr`,
    :func:`pst.train.runtime.optimizer_step`). Its keys sit directly under ``source:`` and
    ``selftrain:``."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum (adamw: beta1)
    weight_decay: float = 5e-4
    head_lr_mult: float = 10.0
    poly_power: float = 0.9
    grad_clip: float = 0.0  # max global gradient norm (0: no clipping)

    def validate(self, key: str) -> None:
        _check_range(f"{key}.lr", self.lr, 0.0, strict=True)
        _check_range(f"{key}.grad_clip", self.grad_clip, 0.0)


@dataclass
class LoopConfig:
    """How long a training stage runs and how often it logs and saves a resumable
    checkpoint (:class:`pst.train.loop.TrainLoop`). Its keys sit directly under ``source:``
    and ``selftrain:``."""

    steps: int = 600
    checkpoint_every: int = 100
    log_every: int = 20
    threads: int = 0  # CPU threads of this stage (0: the run's ``threads``)

    def validate(self, key: str) -> None:
        _check_range(f"{key}.steps", self.steps, 0)
        _check_range(f"{key}.threads", self.threads, 0)
        _check_range(f"{key}.checkpoint_every", self.checkpoint_every, 1)
        _check_range(f"{key}.log_every", self.log_every, 1)


@dataclass
class SourceConfig(OptimizerConfig, LoopConfig):
    """Supervised training (source-only and oracle): the loop and optimiser settings, and
    a linear learning-rate warm-up over the first ``warmup`` steps."""

    warmup: int = 20

    def validate(self, key: str) -> None:
        LoopConfig.validate(self, key)
        OptimizerConfig.validate(self, key)
        _check_range(f"{key}.warmup", self.warmup, 0)


@dataclass
class InstancePseudoConfig:
    """Instance pseudo-labels: pst.cluster.cluster_instances, then pst.morph.refine."""

    method: Literal["meanshift", "meanshift++", "agglomerative"] = "meanshift"
    bandwidth: float = 0.5
    merge_distance: Optional[float] = None  # set: mean-shift+
    min_size: int = 16
    n_anchors: int = 64
    max_iter: int = 30
    open_radius: int = 0
    close_radius: int = 1
    fill_holes: bool = True
    largest_component: bool = False
    # "class": cluster each thing class's mask on its own; "group": cluster the union of
    # the instance model's classes at once, so an object whose pixels split between two
    # classes (person / rider) stays one instance and takes the majority class.
    cluster_within: Literal["class", "group"] = "class"

    def validate(self, key: str) -> None:
        _check_range(f"{key}.bandwidth", self.bandwidth, 0.0, strict=True)
        if self.merge_distance is not None:
            _check_range(f"{key}.merge_distance", self.merge_distance, 0.0, strict=True)
        for name in ("min_size", "open_radius", "close_radius"):
            _check_range(f"{key}.{name}", getattr(self, name), 0)
        _check_range(f"{key}.n_anchors", self.n_anchors, 1)
        _check_range(f"{key}.max_iter", self.max_iter, 1)


# selftrain.align: teacher probabilities as they come, or aligned to the source labels' class
# frequencies (distribution alignment, pst.train.pseudo.semantic_pseudo_labels)
ALIGN_POLICIES = ("off", "source")
# selftrain.mix: no mixing, or paste half of a source image's classes / its thing classes (pst.train.mixing)
MIX_POLICIES = ("off", "half", "things")

@dataclass
class SelfTrainConfig(OptimizerConfig, LoopConfig):
    """Self-training on the target with EMA teachers (defaults of SAC, Araslanov & Roth 2021,
    github.com/visinf/da-sac)."""

    # the loop and optimiser defaults that differ from the source stage's
    steps: int = 400
    lr: float = 0.005
    checkpoint_every: int = 50
    log_every: int = 10
    ema_momentum: float = 0.99
    ema_every: int = 100
    source_weight: float = 1.0
    target_weight: float = 5.0
    instance_target_weight: float = 1.0
    consistency_weight: float = 1.0
    consistency_anchors: int = 20
    n_views: int = 4
    view_zoom: list[float] = field(default_factory=lambda: [0.5, 1.0])
    view_flip: bool = True
    threshold_min: float = 0.2
    threshold_scale: float = 0.75
    prior_momentum: float = 0.99
    prior_beta: float = 1e-3
    confidence_weight: bool = True
    thing_objectness: float = 0.0  # thing pixels of the semantic pseudo-labels whose teacher objectness is below: ignored
    align: str = "off"  # "source": the teacher's class distribution aligned to the source labels' before thresholds
    mix: str = "off"  # cross-domain class mixing (DACS): "half" of a source image's classes or its "things" pasted on the target
    instances: InstancePseudoConfig = field(default_factory=InstancePseudoConfig)
    bn_recalibrate: int = 0  # after the last step: BatchNorm statistics from this many target images (0: off)
    eval_every: int = 50

    def validate(self, key: str) -> None:
        LoopConfig.validate(self, key)
        OptimizerConfig.validate(self, key)
        _check_range(f"{key}.ema_momentum", self.ema_momentum, 0.0, 1.0)
        _check_range(f"{key}.prior_momentum", self.prior_momentum, 0.0, 1.0)
        _check_range(f"{key}.prior_beta", self.prior_beta, 0.0, strict=True)
        _check_range(f"{key}.ema_every", self.ema_every, 1)
        _check_range(f"{key}.n_views", self.n_views, 1)
        _check_range(f"{key}.threshold_min", self.threshold_min, 0.0, 1.0)
        _check_range(f"{key}.threshold_scale", self.threshold_scale, 0.0, 1.0)
        _check_range(f"{key}.eval_every", self.eval_every, 0)
        _check_range(f"{key}.consistency_anchors", self.consistency_anchors, 1)
        _check_range(f"{key}.bn_recalibrate", self.bn_recalibrate, 0)
        _check_range(f"{key}.thing_objectness", self.thing_objectness, 0.0, 1.0)
        if self.align not in ALIGN_POLICIES:
            raise ValueError(f"{key}.align should be one of {', '.join(ALIGN_POLICIES)}, got {self.align!r}")
        if self.mix not in MIX_POLICIES:
            raise ValueError(f"{key}.mix should be one of {', '.join(MIX_POLICIES)}, got {self.mix!r}")
        if len(self.view_zoom) != 2 or not 0 < self.view_zoom[0] <= self.view_zoom[1] <= 1:
            raise ValueError(f"{key}.view_zoom should be [lo, hi] with 0 < lo <= hi <= 1, got {self.view_zoom}")
        self.instances.validate(f"{key}.instances")


@dataclass
class EvalConfig:
    """Inference and fusion settings (pst.panoptic.fuse)."""

    stuff_area: int = 64
    thing_area: int = 16
    min_score: float = 0.0  # instances scored (mean objectness x semantic confidence) below this are dropped
    n_overlays: int = 4
    batch_size: int = 8
    instances: Optional[InstancePseudoConfig] = None  # None: the self-training settings

    def validate(self, key: str) -> None:
        _check_range(f"{key}.stuff_area", self.stuff_area, 0)
        _check_range(f"{key}.thing_area", self.thing_area, 0)
        _check_range(f"{key}.min_score", self.min_score, 0.0, 1.0)
        _check_range(f"{key}.n_overlays", self.n_overlays, 0)
        _check_range(f"{key}.batch_size", self.batch_size, 1)
        if self.instances is not None:
            self.instances.validate(f"{key}.instances")


@dataclass
class Config:
    """A whole run. ``categories``: the category-centric modes trained side by side
    (base: one instance model; ccm: one per group; icm: one per thing class); the first
    is the primary one (reported as ``self_trained`` etc.)."""

    name: str = "toy"
    seed: int = 0
    label_space: Literal["toy", "cityscapes19", "synthia16"] = "toy"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision: bfloat16/float16 autocast on GPU, bfloat16 on CPUs with native bf16
    threads: int = 0  # torch CPU threads (0: leave torch's default)
    deterministic: bool = True
    categories: list[str] = field(default_factory=lambda: ["base"])
    oracle: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self, key: str = "") -> None:
        if not self.categories:
            raise ValueError("categories should name at least one of base, ccm, icm")
        for i, c in enumerate(self.categories):
            if c not in ("base", "ccm", "icm"):
                raise ValueError(f"categories[{i}] should be one of 'base', 'ccm', 'icm', got {c!r}")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories should not repeat a mode, got {self.categories}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device should be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check_range("threads", self.threads, 0)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v.validate(f.name)

    @property
    def space(self):
        """The :class:`pst.labels.LabelSpace` of this run."""
        from pst.labels import get_label_space

        return get_label_space(self.label_space)


def _check_range(key: str, value, lo=None, hi=None, *, strict: bool = False) -> None:
    if lo is not None and (value <= lo if strict else value < lo):
        raise ValueError(f"{key} should be {'>' if strict else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{key} should be <= {hi}, got {value}")


# --------------------------------------------------------------------------- typing

def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list[{_type_name(arg)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _finite(value: float, key: str) -> float:
    """No setting of the config means anything as NaN or infinity: refuse them by name."""
    if not math.isfinite(value):
        raise ValueError(f"{key} should be a finite number, got {value!r}")
    return value


def _convert(value: Any, tp, key: str) -> Any:
    """``value`` (from YAML) as type ``tp``, or TypeError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        for exc in errors:  # the right type but a bad value (NaN, inf): say that, not the type
            if isinstance(exc, ValueError) and "finite" in str(exc):
                raise exc
        raise TypeError(f"{key} should be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or type(value) is bool and not any(c is value for c in choices):
            raise ValueError(f"{key} should be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{key} should be {_type_name(tp)}, got {value!r} ({type(value).__name__})")
        return [_convert(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{key} should be a mapping, got {value!r} ({type(value).__name__})")
        return _build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{key} should be bool (true/false), got {value!r} ({type(value).__name__})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} should be int, got {value!r} ({type(value).__name__})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML 1.1 reads "1e-3" as a string; accept numeric strings for floats
            if isinstance(value, str):
                try:
                    return _finite(float(value), key)
                except ValueError as exc:
                    if "finite" in str(exc):
                        raise
            raise TypeError(f"{key} should be float, got {value!r} ({type(value).__name__})")
        return _finite(float(value), key)
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off / on (no / yes) as a boolean
            return "on" if value else "off"
        if not isinstance(value, str):
            raise TypeError(f"{key} should be str, got {value!r} ({type(value).__name__})")
        return value
    raise TypeError(f"{key}: unsupported config type {tp}")  # pragma: no cover


def _build(cls, data: dict, key: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            full = f"{key}.{k}" if key else str(k)
            raise KeyError(f"unknown config key {full!r} (known under {key or 'the top level'}: "
                           f"{', '.join(sorted(names))})")
    obj = cls()
    for k, v in data.items():
        full = f"{key}.{k}" if key else k
        cur = getattr(obj, k)
        tp = hints[k]
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            # nested mapping: fill the defaults key by key
            setattr(obj, k, _build(type(cur), {**config_to_dict(cur), **v}, full))
        else:
            setattr(obj, k, _convert(v, tp, full))
    return obj


# --------------------------------------------------------------------------- public API

def config_from_dict(data: dict) -> Config:
    """A validated :class:`Config` from a (possibly partial) nested mapping."""
    if not isinstance(data, dict):
        raise TypeError(f"a config should be a mapping, got {type(data).__name__}")
    cfg = _build(Config, data, "")
    cfg.validate()
    return cfg


def config_to_dict(cfg) -> dict:
    """Plain nested dict (YAML/JSON-serialisable) of a config dataclass."""
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every shipped config."""
    out: dict[str, Path] = {}
    for d in reversed(CONFIG_DIRS):
        if d.is_dir():
            out.update({p.stem: p for p in sorted(d.glob("*.yaml"))})
    return out


def find_config(name_or_path: str | Path) -> Path:
    """The file of a config given as a path or as a shipped config's name ("toy")."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    stem = p.name[:-5] if p.name.endswith(".yaml") else p.name
    if stem in shipped and p.parent == Path("."):
        return shipped[stem]
    raise FileNotFoundError(f"config {str(name_or_path)!r}: no such file, and not a shipped config "
                            f"({', '.join(shipped) or 'none found'})")


def _read_tree(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"config {path}: inherit loop through {' -> '.join(str(s) for s in seen)}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"config {path}: not valid YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TypeError(f"config {path}: should be a mapping, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise TypeError(f"config {path}: inherit should be a file name, got {parent!r}")
        ppath = path.parent / parent
        base = _read_tree(ppath if ppath.is_file() else find_config(parent), seen + (path,))
        data = _deep_merge(base, data)
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], YAML-parsed value)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} should look like key=value (e.g. source.steps=100)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply ``key=value`` overrides to a config mapping (validated later, by key)."""
    out = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise TypeError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(source: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, merge, override and validate a config.

    Args:
        source: a YAML path, a shipped config name ("toy"), a mapping, or None (the
            dataclass defaults, which are the toy setting).
        overrides: ``dotted.key=value`` strings.
    Returns:
        A validated :class:`Config`.
    Raises:
        KeyError: unknown key (named); TypeError: wrong type (named); ValueError: bad value.
    """
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = _read_tree(find_config(source))
    data = apply_overrides(data, overrides)
    return config_from_dict(data)


def dump_config(cfg: Config) -> str:
    """YAML text of a config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


# --------------------------------------------------------------------------- resuming

# What a run may change when it continues a checkpoint (``--resume``), key by key: first
# matching pattern wins (fnmatch on the dotted key; ``*`` spans dots). "refuse": the key
# changes the network's shapes or what the training means, so the checkpoint's state does not
# fit (or would silently continue another experiment); "allow": how the run is carried out,
# logged when it differs. A refused key with stages matters only to those stages: resuming
# another stage allows it. Every key of Config must match a rule (a test checks this), so a
# new key needs a decision here.
RESUME_RULES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    # (pattern, verdict, stages it matters to (empty: all), why)
    ("name", "allow", (), "a label for reports"),
    ("device", "allow", (), "where it runs, not what it computes"),
    ("amp", "allow", (), "precision of the same computation"),
    ("threads", "allow", (), "CPU threads"),
    ("deterministic", "allow", (), "repeatability of the same computation"),
    ("oracle", "allow", (), "whether the demo trains an oracle stage at all"),
    ("seed", "refuse", (), "sample order, augmentations and initial weights"),
    ("label_space", "refuse", (), "the classes: output shapes and label meaning"),
    ("categories", "refuse", (), "which instance models exist (shapes)"),
    ("model.pretrained", "allow", (), "initial weights only; resumed weights come from the checkpoint"),
    ("model.*", "refuse", (), "network architecture and shapes"),
    ("loss.*", "refuse", (), "what is minimised"),
    ("augment.*", "refuse", (), "the training distribution"),
    ("data.size", "refuse", (), "training crop size"),
    ("data.batch_size", "refuse", (), "what a step is and which samples it draws"),
    ("data.eval_size", "allow", (), "evaluation only"),
    ("data.num_workers", "allow", (), "loading speed"),
    ("data.cache", "allow", (), "loading speed"),
    ("data.*.root", "allow", (), "where the dataset lies (it may move)"),
    ("data.target_val.*", "allow", (), "held-out evaluation only"),
    ("data.source.*", "refuse", ("source", "selftrain"), "the labelled training data"),
    ("data.target.*", "refuse", ("oracle", "selftrain"), "the target training data"),
    ("source.steps", "allow", (), "how long to train (the schedule follows the new length)"),
    ("source.checkpoint_every", "allow", (), "checkpoint frequency"),
    ("source.log_every", "allow", (), "logging frequency"),
    ("source.threads", "allow", (), "CPU threads"),
    ("source.*", "refuse", ("source", "oracle"), "the optimiser and its schedule"),
    ("selftrain.steps", "allow", (), "how long to train (the schedule follows the new length)"),
    ("selftrain.eval_every", "allow", (), "evaluation frequency"),
    ("selftrain.checkpoint_every", "allow", (), "checkpoint frequency"),
    ("selftrain.log_every", "allow", (), "logging frequency"),
    ("selftrain.threads", "allow", (), "CPU threads"),
    ("selftrain.*", "refuse", ("selftrain",), "the self-training recipe (teacher, pseudo-labels, losses)"),
    ("eval.*", "allow", (), "evaluation only"),
)

# ``--init`` (self-training from a source checkpoint): only the weights have to fit
INIT_KEYS = ("label_space", "categories", "model.*")
INIT_EXEMPT = ("model.pretrained",)  # replaced by the checkpoint's weights


def resume_rule(key: str) -> tuple[str, str, tuple[str, ...], str] | None:
    """The rule of :data:`RESUME_RULES` for a dotted key, None when none matches."""
    import fnmatch

    return next((r for r in RESUME_RULES if fnmatch.fnmatchcase(key, r[0])), None)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_ABSENT = "(absent)"


def config_changes(old: dict, new: Config | dict, *, stage: str | None = None,
                   only: tuple[str, ...] | None = None) -> tuple[list[tuple], list[tuple]]:
    """Compare a checkpoint's config (``old``, a nested dict) with the requested one.

    Args:
        stage: the stage being resumed ("source", "oracle", "selftrain"): refused keys that
            matter only to other stages are allowed.
        only: compare just the keys matching these patterns (e.g. :data:`INIT_KEYS`); all of
            them are then refused when they differ.
    Returns:
        ``(refused, allowed)``: lists of ``(key, old value, new value, why)``, in key order.
    """
    import fnmatch

    if dataclasses.is_dataclass(new):
        new = config_to_dict(new)
    try:  # an older checkpoint lacks newer keys: they had their defaults
        old = config_to_dict(config_from_dict(old))
    except (KeyError, TypeError, ValueError):
        pass
    a, b = _flatten(old), _flatten(new)
    refused, allowed = [], []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if va == vb:
            continue
        if only is not None:
            if any(fnmatch.fnmatchcase(key, p) for p in only) and key not in INIT_EXEMPT:
                refused.append((key, va, vb, "the weights of the checkpoint depend on it"))
            continue
        rule = resume_rule(key) or (key, "refuse", (), "not classified in pst.config.RESUME_RULES")
        _, verdict, stages, why = rule
        if verdict == "refuse" and (not stages or stage is None or stage in stages):
            refused.append((key, va, vb, why))
        else:
            allowed.append((key, va, vb, why if verdict == "allow" else f"not used by the {stage} stage"))
    return refused, allowed
