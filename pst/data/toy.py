"""Procedural street scenes with panoptic ground truth, in two (or more) visual domains.

The toy scenes are the built-in data of the self-training demo and of the tests. A
scene is a road in perspective with sidewalks, a skyline of buildings and trees under
the sky, and a handful of thing instances standing on the ground plane: cars and
trucks, persons and riders, bicycles and motorcycles. Objects are placed in groups, so
several of them touch or overlap; nearer objects are painted over farther ones.

Labels are in :data:`pst.labels.TOY` (train ids 0..10: road, sidewalk, building,
vegetation, sky, person, rider, car, truck, motorcycle, bicycle).

A scene is a pure function of ``(seed, index, style, size)``: nothing is cached and
nothing depends on global random state. The *layout* (geometry, classes, instances) is
drawn from ``(seed, index)`` and scaled by the style's object scale; the *appearance*
(colours, texture, noise) from ``(seed, index)`` and the style.

Styles (:class:`ToyStyle`) parameterise the renderer. :data:`STYLES` holds

- ``"source"``: the clean synthetic domain: flat canonical colours per class with mild
  vertical shading, crisp edges, no noise;
- ``"target"``: the "real" domain: class colours moved halfway from the source's towards
  realistic ones, a global lighting gradient and colour cast, texture, sensor noise, blur
  and larger objects;
- ``"target_dusk"``: a further, darker target style (a second adaptation target).

New styles are made with :func:`dataclasses.replace` on an existing one, or with
:func:`blend_styles` between two.

Rendering is vectorised numpy plus PIL polygon drawing: about 1-3 ms per 128x256 scene
on one CPU core.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from pst.labels import TOY

__all__ = [
    "ToyStyle",
    "STYLES",
    "ToyScenes",
    "render_scene",
    "get_style",
    "blend_styles",
    "ROAD", "SIDEWALK", "BUILDING", "VEGETATION", "SKY",
    "PERSON", "RIDER", "CAR", "TRUCK", "MOTORCYCLE", "BICYCLE",
]

logger = logging.getLogger(__name__)

# Train ids of pst.labels.TOY.
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, PERSON, RIDER, CAR, TRUCK, MOTORCYCLE, BICYCLE = range(11)
assert TOY.classes == ("road", "sidewalk", "building", "vegetation", "sky", "person", "rider",
                       "car", "truck", "motorcycle", "bicycle")

# Parts: appearance details that do not change the label (tyres, windows, faces, lane marks).
_BODY, _TYRE, _GLASS, _SKIN, _MARKING, _SHADE, _WINDOW = range(7)
# Blend factor of each part's colour over the object colour.
_PART_ALPHA = np.array([0.0, 0.85, 0.7, 0.9, 0.85, 0.45, 0.65], dtype=np.float32)

# How strongly each class takes the style's texture (road grain, foliage, facade, ...).
_TEXTURE_WEIGHT = np.array([1.0, 0.7, 0.6, 1.6, 0.25, 0.4, 0.4, 0.3, 0.3, 0.3, 0.3], dtype=np.float32)

_MAX_INSTANCES = 40  # instance maps are drawn as uint8


@dataclass(frozen=True)
class ToyStyle:
    """Appearance parameters of one domain. All colours are RGB in [0, 1].

    Attributes:
        name: short name.
        colors: 11 base colours, one per TOY train id.
        color_jitter: std of a per-scene offset of every class colour.
        instance_jitter: std of the per-instance colour offset of thing instances (lets
            touching instances of one class be told apart).
        glass, skin, marking: colours of windows, faces and lane markings.
        shading: strength of the vertical shading (top brighter than bottom).
        light_gradient: strength of a global lighting gradient in a random direction.
        color_cast: global RGB multiplier.
        brightness, contrast: global photometric settings (applied after the cast).
        texture: amplitude of multiplicative texture noise (scaled per class).
        texture_scale: correlation length of the texture, in pixels at height 128.
        noise: std of additive gaussian sensor noise.
        blur: sigma of the gaussian blur, in pixels at height 128 (0 = none).
        object_scale: (lo, hi) range of a per-object size multiplier.
        n_objects: (lo, hi) number of object groups per scene (inclusive).
        horizon: (lo, hi) horizon height as a fraction of the image height.
    """

    name: str
    colors: tuple[tuple[float, float, float], ...]
    color_jitter: float = 0.03
    instance_jitter: float = 0.12
    glass: tuple[float, float, float] = (0.55, 0.7, 0.85)
    skin: tuple[float, float, float] = (0.95, 0.78, 0.65)
    marking: tuple[float, float, float] = (0.95, 0.95, 0.9)
    shading: float = 0.1
    light_gradient: float = 0.0
    color_cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    brightness: float = 1.0
    contrast: float = 1.0
    texture: float = 0.02
    texture_scale: float = 6.0
    noise: float = 0.0
    blur: float = 0.0
    object_scale: tuple[float, float] = (0.85, 1.1)
    n_objects: tuple[int, int] = (3, 6)
    horizon: tuple[float, float] = (0.36, 0.5)

    def __post_init__(self):
        if len(self.colors) != TOY.num_classes or any(len(c) != 3 for c in self.colors):
            raise ValueError(f"ToyStyle {self.name!r}: colors should be {TOY.num_classes} RGB triples, "
                             f"got {len(self.colors)} entries")
        for key in ("color_jitter", "instance_jitter", "shading", "light_gradient", "texture", "noise", "blur"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ToyStyle {self.name!r}: {key} should be a finite number >= 0, got {v!r}")
        if not self.texture_scale > 0 or not self.brightness > 0 or not self.contrast > 0:
            raise ValueError(f"ToyStyle {self.name!r}: texture_scale, brightness and contrast should be > 0")
        lo, hi = self.object_scale
        if not 0 < lo <= hi:
            raise ValueError(f"ToyStyle {self.name!r}: object_scale should be (lo, hi) with 0 < lo <= hi, "
                             f"got {self.object_scale}")
        lo, hi = self.n_objects
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= 12):
            raise ValueError(f"ToyStyle {self.name!r}: n_objects should be (lo, hi) ints with 0 <= lo <= hi <= 12, "
                             f"got {self.n_objects}")
        lo, hi = self.horizon
        if not 0.15 <= lo <= hi <= 0.7:
            raise ValueError(f"ToyStyle {self.name!r}: horizon should be (lo, hi) with 0.15 <= lo <= hi <= 0.7, "
                             f"got {self.horizon}")


_SOURCE = ToyStyle(
    name="source",
    colors=(
        (0.50, 0.44, 0.52),  # road: purple-grey
        (0.82, 0.55, 0.78),  # sidewalk: pink
        (0.42, 0.42, 0.44),  # building: grey
        (0.30, 0.58, 0.16),  # vegetation: green
        (0.42, 0.62, 0.90),  # sky: blue
        (0.86, 0.18, 0.30),  # person
        (0.98, 0.42, 0.08),  # rider
        (0.12, 0.18, 0.62),  # car
        (0.08, 0.40, 0.44),  # truck
        (0.40, 0.22, 0.80),  # motorcycle
        (0.58, 0.10, 0.18),  # bicycle
    ),
)

# "Real" colours of the target's classes. The target style takes each class colour halfway
# from the source's towards these: a synthetic renderer gets the hues roughly right and the
# details wrong, so a source model is partly right on the target, which is the regime where
# self-training helps (with all colours swapped, a source model is systematically wrong and
# self-training only reinforces its errors).
_REAL_COLORS = (
    (0.36, 0.36, 0.34),  # road: dark asphalt
    (0.64, 0.58, 0.52),  # sidewalk: beige concrete
    (0.62, 0.46, 0.36),  # building: brick
    (0.40, 0.46, 0.18),  # vegetation: olive
    (0.80, 0.84, 0.88),  # sky: overcast
    (0.36, 0.26, 0.52),  # person: dark clothes
    (0.72, 0.24, 0.22),  # rider
    (0.55, 0.56, 0.62),  # car: silver
    (0.70, 0.66, 0.24),  # truck: yellow
    (0.24, 0.24, 0.30),  # motorcycle: black
    (0.80, 0.40, 0.16),  # bicycle: orange
)

_TARGET = ToyStyle(
    name="target",
    colors=tuple(tuple(round(0.5 * a + 0.5 * b, 4) for a, b in zip(src, real))
                 for src, real in zip(_SOURCE.colors, _REAL_COLORS)),
    color_jitter=0.05,
    instance_jitter=0.16,
    glass=(0.25, 0.3, 0.35),
    skin=(0.75, 0.58, 0.48),
    marking=(0.85, 0.82, 0.7),
    shading=0.15,
    light_gradient=0.25,
    color_cast=(1.06, 0.98, 0.88),
    brightness=0.95,
    contrast=0.9,
    texture=0.16,
    texture_scale=3.0,
    noise=0.035,
    blur=0.7,
    object_scale=(1.05, 1.45),
    horizon=(0.4, 0.55),
)

_DUSK = dataclasses.replace(
    _TARGET,
    name="target_dusk",
    color_cast=(1.15, 0.85, 0.7),
    brightness=0.6,
    contrast=0.8,
    noise=0.05,
    light_gradient=0.4,
)

STYLES: dict[str, ToyStyle] = {s.name: s for s in (_SOURCE, _TARGET, _DUSK)}


def get_style(style: str | ToyStyle) -> ToyStyle:
    """A :class:`ToyStyle` given by name (a key of :data:`STYLES`) or as itself."""
    if isinstance(style, ToyStyle):
        return style
    if isinstance(style, str):
        try:
            return STYLES[style]
        except KeyError:
            raise ValueError(f"unknown toy style {style!r}; known: {', '.join(STYLES)}") from None
    raise TypeError(f"style should be a style name or a ToyStyle, got {type(style).__name__}")


def blend_styles(a: str | ToyStyle, b: str | ToyStyle, t: float, *, name: str | None = None) -> ToyStyle:
    """The style ``(1 - t) * a + t * b``, field by field (t in [0, 1]): intermediate domains."""
    a, b = get_style(a), get_style(b)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t should be in [0, 1], got {t}")

    def mix(x, y):
        if isinstance(x, tuple):
            return tuple(mix(u, v) for u, v in zip(x, y))
        if isinstance(x, int) and isinstance(y, int):
            return int(round((1 - t) * x + t * y))
        return (1 - t) * x + t * y

    values = {f.name: mix(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(ToyStyle)
              if f.name != "name"}
    return ToyStyle(name=name or f"{a.name}~{b.name}@{t:g}", **values)


# ----------------------------------------------------------------------------- layout

@dataclass
class _Object:
    cls: int
    x: float  # ground contact point, pixels
    y: float
    s: float  # size unit, pixels
    facing: int  # +1 right, -1 left


def _draw_object(draws: tuple[ImageDraw.ImageDraw, ...], obj: _Object, iid: int, rng: np.random.Generator) -> None:
    """Paint one object into (semantic, instance, part) PIL images."""
    ds, di, dp = draws
    c, x, y, s, f = obj.cls, obj.x, obj.y, obj.s, obj.facing

    def paint(kind: str, xy, part: int, width: int = 0):
        for d, v in ((ds, c), (di, iid), (dp, part)):
            if kind == "rect":
                d.rectangle(_box(xy), fill=v)
            elif kind == "ellipse":
                d.ellipse(_box(xy), fill=v)
            elif kind == "ring":
                d.ellipse(_box(xy), outline=v, width=width)
            elif kind == "poly":
                d.polygon(xy, fill=v)
            elif kind == "line":
                d.line(xy, fill=v, width=width)

    def X(u):  # object-relative horizontal offset, mirrored by facing
        return x + f * u

    if c == CAR:
        w, h = 2.0 * s * rng.uniform(0.9, 1.15), 0.85 * s * rng.uniform(0.9, 1.1)
        paint("rect", (x - w / 2, y - 0.72 * h, x + w / 2, y - 0.14 * h), _BODY)
        cabin = [(X(-0.36 * w), y - 0.7 * h), (X(0.3 * w), y - 0.7 * h), (X(0.16 * w), y - h), (X(-0.26 * w), y - h)]
        paint("poly", cabin, _BODY)
        glass = [(X(-0.3 * w), y - 0.72 * h), (X(0.25 * w), y - 0.72 * h), (X(0.13 * w), y - 0.95 * h),
                 (X(-0.22 * w), y - 0.95 * h)]
        paint("poly", glass, _GLASS)
        r = 0.19 * h
        for u in (-0.3 * w, 0.3 * w):
            paint("ellipse", (X(u) - r, y - 2 * r, X(u) + r, y), _TYRE)
    elif c == TRUCK:
        w, h = 2.6 * s * rng.uniform(0.9, 1.15), 1.45 * s * rng.uniform(0.9, 1.1)
        paint("rect", (X(-0.5 * w), y - h, X(0.22 * w), y - 0.14 * h), _BODY)
        paint("rect", (X(0.22 * w), y - 0.68 * h, X(0.5 * w), y - 0.14 * h), _BODY)
        paint("rect", (X(0.28 * w), y - 0.62 * h, X(0.46 * w), y - 0.42 * h), _GLASS)
        paint("rect", (X(-0.5 * w), y - 0.3 * h, X(0.22 * w), y - 0.14 * h), _SHADE)
        r = 0.12 * h
        for u in (-0.36 * w, -0.2 * w, 0.36 * w):
            paint("ellipse", (X(u) - r, y - 2 * r, X(u) + r, y), _TYRE)
    elif c in (PERSON, RIDER):
        h = (1.15 if c == PERSON else 0.8) * s * rng.uniform(0.9, 1.1)
        w = 0.3 * s * rng.uniform(0.85, 1.15)
        lw = max(2, int(round(0.1 * s)))
        if c == PERSON:
            step = 0.12 * w * rng.uniform(-1, 1)
            paint("line", [(x - 0.15 * w, y - 0.5 * h), (x - 0.2 * w - step, y)], _SHADE, lw)
            paint("line", [(x + 0.15 * w, y - 0.5 * h), (x + 0.2 * w + step, y)], _SHADE, lw)
            paint("ellipse", (x - w / 2, y - 0.84 * h, x + w / 2, y - 0.42 * h), _BODY)
        else:  # sitting on a bike: legs forward to the crank, torso leaning forward
            paint("line", [(x, y - 0.45 * h), (X(0.25 * w), y - 0.15 * h), (X(0.3 * w), y)], _SHADE, lw)
            torso = [(X(-0.45 * w), y - 0.45 * h), (X(0.45 * w), y - 0.45 * h), (X(0.6 * w), y - 0.85 * h),
                     (X(-0.1 * w), y - 0.88 * h)]
            paint("poly", torso, _BODY)
        hr = 0.09 * h
        hx = x if c == PERSON else X(0.25 * w)
        paint("ellipse", (hx - hr, y - h - hr, hx + hr, y - h + hr), _SKIN)
    elif c == BICYCLE:
        # Wheels are discs (a dark tyre around a spoked face), as Cityscapes' polygons label a
        # wheel with its inside; frame strokes are at least 2 px.
        r = 0.3 * s
        lw = max(2, int(round(0.08 * s)))
        rear, front = (X(-0.55 * s), y - r), (X(0.55 * s), y - r)
        crank, seat, bar = (x, y - r), (X(-0.18 * s), y - r - 0.45 * s), (X(0.42 * s), y - r - 0.5 * s)
        for cx, cy in (rear, front):
            paint("ellipse", (cx - r, cy - r, cx + r, cy + r), _SHADE)
            paint("ring", (cx - r, cy - r, cx + r, cy + r), _TYRE, lw)
        paint("line", [rear, crank, seat, rear], _BODY, lw)
        paint("line", [crank, bar, front], _BODY, lw)
        paint("line", [seat, bar], _BODY, lw)
    elif c == MOTORCYCLE:
        r = 0.3 * s
        lw = max(2, int(round(0.13 * s)))
        rear, front = (X(-0.6 * s), y - r), (X(0.6 * s), y - r)
        for cx, cy in (rear, front):
            paint("ellipse", (cx - r, cy - r, cx + r, cy + r), _SHADE)
            paint("ring", (cx - r, cy - r, cx + r, cy + r), _TYRE, lw)
        body = [(X(-0.65 * s), y - r - 0.2 * s), (X(0.35 * s), y - r - 0.35 * s), (X(0.55 * s), y - r),
                (X(0.1 * s), y - r + 0.1 * s), (X(-0.4 * s), y - r)]
        paint("poly", body, _BODY)
        paint("line", [(X(0.35 * s), y - r - 0.3 * s), front], _SHADE, lw)
    else:
        raise AssertionError(c)


def _box(xy):
    x0, y0, x1, y1 = xy
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _place_objects(rng: np.random.Generator, H: int, W: int, horizon: float, vx: float, road_half: float,
                   walk_width: float, style: ToyStyle) -> list[_Object]:
    """Thing objects on the ground plane, in groups that touch or overlap, sorted far to near."""
    ground = H - horizon
    base_classes = np.array([CAR, TRUCK, PERSON, BICYCLE, MOTORCYCLE])
    base_p = np.array([0.3, 0.08, 0.34, 0.15, 0.13])
    # size unit per class relative to the ground depth at the contact point
    unit = {CAR: 0.5, TRUCK: 0.45, PERSON: 0.7, RIDER: 0.65, BICYCLE: 0.65, MOTORCYCLE: 0.65}
    objects: list[_Object] = []
    n_groups = int(rng.integers(style.n_objects[0], style.n_objects[1] + 1))
    for _ in range(n_groups):
        cls = int(rng.choice(base_classes, p=base_p))
        d = rng.uniform(0.2, 1.05)  # depth fraction: 0 at the horizon, 1 at the bottom edge
        side = 1 if rng.random() < 0.5 else -1
        if cls in (CAR, TRUCK):
            x = vx + rng.uniform(-0.8, 0.8) * d * road_half
        elif cls == PERSON:
            x = vx + side * (d * road_half + rng.uniform(0.1, 0.9) * d * walk_width)
        else:
            x = vx + side * rng.uniform(0.55, 1.05) * d * road_half
        n_members = 1 + int(rng.random() < 0.45) + int(rng.random() < 0.2)
        facing = 1 if rng.random() < 0.5 else -1
        for k in range(n_members):
            dk = d + (rng.uniform(-0.05, 0.05) if k else 0.0)
            s = unit[cls] * dk * ground * rng.uniform(*style.object_scale)
            width = {CAR: 2.0, TRUCK: 2.6, PERSON: 0.35}.get(cls, 1.4) * s
            xk = x + (k and side * rng.uniform(0.55, 1.0) * width * k)
            obj = _Object(cls, xk, horizon + dk * ground, s, facing)
            objects.append(obj)
            if cls in (BICYCLE, MOTORCYCLE) and rng.random() < 0.65:
                objects.append(_Object(RIDER, xk - facing * 0.1 * s, obj.y + 1e-3, s, facing))
            if len(objects) >= _MAX_INSTANCES - 2:
                break
    objects.sort(key=lambda o: o.y)
    return objects


def _value_noise(rng: np.random.Generator, H: int, W: int, cell: float) -> np.ndarray:
    """Smooth random field [H, W] float32 with unit-ish std: a coarse normal grid, bilinearly upsampled."""
    gh, gw = max(2, int(math.ceil(H / cell)) + 1), max(2, int(math.ceil(W / cell)) + 1)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)

    def coords(n: int, g: int):
        pos = (np.arange(n, dtype=np.float32) + 0.5) / n * (g - 1)
        i0 = np.minimum(pos.astype(np.int64), g - 2)
        return i0, (pos - i0).astype(np.float32)

    # bilinear upsampling by gathers (a BLAS matmul is slower here: thread start-up dominates)
    iy, ty = coords(H, gh)
    ix, tx = coords(W, gw)
    rows = grid[iy] * (1 - ty)[:, None] + grid[iy + 1] * ty[:, None]  # [H, gw]
    return rows[:, ix] * (1 - tx) + rows[:, ix + 1] * tx


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable gaussian blur of [H, W, C] float32 with reflected borders."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / np.float32(sigma)) ** 2)
    k /= k.sum()
    H, W = img.shape[:2]
    p = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = k[0] * p[:H]
    for i in range(1, len(k)):
        out += k[i] * p[i:i + H]
    p = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    out = k[0] * p[:, :W]
    for i in range(1, len(k)):
        out += k[i] * p[:, i:i + W]
    return out


def _check_size(size) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size should be (H, W), got {size!r}") from None
    if H < 16 or W < 16 or H > 4096 or W > 4096:
        raise ValueError(f"size should be (H, W) with 16 <= H, W <= 4096, got {tuple(size)}")
    return H, W


def render_scene(seed: int, index: int, style: str | ToyStyle = "source",
                 size: Sequence[int] = (128, 256)) -> dict:
    """Render toy scene ``index`` of the scene family ``seed`` in ``style``.

    Returns a sample dict (the pst.data convention):
        image: float32 [3, H, W] RGB in [0, 1]
        semantic: int64 [H, W] TOY train ids (0..10; every pixel labelled)
        instances: int64 [H, W], 0 on stuff, 1..K on the visible thing instances
        name: str, "toy-<style>-<seed>-<index>"
    """
    for key, v in (("seed", seed), ("index", index)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{key} should be an int >= 0, got {v!r}")
    style = get_style(style)
    H, W = _check_size(size)
    layout_rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 0]))
    look_rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1]))
    scale = H / 128.0

    # --- stuff: sky, skyline of buildings and trees, road and sidewalks in perspective
    horizon = layout_rng.uniform(*style.horizon) * H
    vx = layout_rng.uniform(0.3, 0.7) * W
    road_half = layout_rng.uniform(0.45, 0.75) * W  # road half-width at the bottom edge
    walk_width = layout_rng.uniform(0.25, 0.5) * W

    col_top = np.empty(W, dtype=np.float32)
    col_kind = np.empty(W, dtype=np.int64)
    col_x0 = np.empty(W, dtype=np.float32)
    x = 0
    while x < W:
        w = int(max(4, layout_rng.uniform(0.07, 0.22) * W))
        is_tree = layout_rng.random() < 0.3
        top = horizon * layout_rng.uniform(0.35, 0.75) if is_tree else horizon * layout_rng.uniform(0.05, 0.7)
        col_top[x:x + w] = top
        col_kind[x:x + w] = VEGETATION if is_tree else BUILDING
        col_x0[x:x + w] = x
        x += w
    xs = np.arange(W, dtype=np.float32)
    trees = col_kind == VEGETATION
    # bumpy tree crowns
    col_top[trees] -= (0.06 * horizon) * np.abs(np.sin((xs[trees] - col_x0[trees]) * (0.25 / scale)
                                                        + layout_rng.uniform(0, 6.3)))

    ys = np.arange(H, dtype=np.float32)[:, None] + 0.5
    xc = xs[None, :] + 0.5
    depth = np.clip((ys - horizon) / (H - horizon), 0, None)  # [H, 1]
    dist = np.abs(xc - vx)  # [1, W]
    below = ys >= horizon
    road = below & (dist <= depth * road_half)
    walk = below & ~road & (dist <= depth * (road_half + walk_width))

    semantic = np.where(ys < col_top[None, :], SKY, col_kind[None, :]).astype(np.uint8)
    semantic[walk] = SIDEWALK
    semantic[road] = ROAD

    part = np.zeros((H, W), dtype=np.uint8)
    # building windows: a grid per facade
    wy = (ys - horizon * 0.02) % (9 * scale)
    wx = (xc - col_x0[None, :]) % (8 * scale)
    windows = (semantic == BUILDING) & (wy > 3 * scale) & (wy < 7 * scale) & (wx > 2.5 * scale) & (wx < 6 * scale) \
        & (ys > col_top[None, :] + 3 * scale) & (ys < horizon - 2 * scale)
    part[windows] = _WINDOW
    # dashed centre lane marking
    dash = ((np.log(np.maximum(depth, 1e-3)) * 6.0) % 1.0) < 0.5
    marking = road & (dist <= np.maximum(0.012 * depth * road_half, 0.3)) & dash
    part[marking] = _MARKING
    # kerb: a darker line where road meets sidewalk
    kerb = walk & (dist <= depth * road_half + np.maximum(0.04 * depth * walk_width, 0.5))
    part[kerb] = _SHADE

    # --- things
    objects = _place_objects(layout_rng, H, W, horizon, vx, road_half, walk_width, style)
    sem_im, inst_im, part_im = Image.fromarray(semantic), Image.new("L", (W, H), 0), Image.fromarray(part)
    draws = (ImageDraw.Draw(sem_im), ImageDraw.Draw(inst_im), ImageDraw.Draw(part_im))
    for i, obj in enumerate(objects):
        _draw_object(draws, obj, i + 1, layout_rng)
    semantic = np.asarray(sem_im).astype(np.int64)
    inst = np.asarray(inst_im)
    part = np.asarray(part_im)

    # consecutive ids 1..K over the instances that stayed visible
    present = np.zeros(len(objects) + 1, dtype=bool)
    present[inst.ravel()] = True
    present[0] = False
    relabel = np.zeros(len(objects) + 1, dtype=np.int64)
    relabel[present] = np.arange(1, int(present.sum()) + 1)
    instances = relabel[inst]

    # --- appearance: one colour table over (class or instance) x part, applied with one gather
    n_obj = len(objects)
    class_col = np.asarray(style.colors, dtype=np.float32) + look_rng.normal(
        0, style.color_jitter, (TOY.num_classes, 3)).astype(np.float32)
    base_col = np.empty((TOY.num_classes + n_obj + 1, 3), dtype=np.float32)
    base_col[:TOY.num_classes + 1] = np.concatenate([class_col, class_col[:1]])
    if n_obj:
        cls = np.array([o.cls for o in objects])
        base_col[TOY.num_classes + 1:] = class_col[cls] + look_rng.normal(0, style.instance_jitter, (n_obj, 3))
    part_col = np.array([(0, 0, 0), (0.06, 0.06, 0.07), style.glass, style.skin, style.marking, (0, 0, 0),
                         tuple(0.5 * np.asarray(style.glass))], dtype=np.float32)
    alpha = _PART_ALPHA[:, None, None]
    joint = base_col[None] * (1 - alpha) + part_col[:, None, :] * alpha  # [parts, entries, 3]
    region = np.where(inst > 0, inst.astype(np.int64) + TOY.num_classes, semantic)
    color = np.take(joint.reshape(-1, 3), part.astype(np.int64) * base_col.shape[0] + region, axis=0)

    light = 1.0 + style.shading * (0.5 - ys / H)  # [H, 1]
    if style.light_gradient > 0:
        theta = look_rng.uniform(0, 2 * math.pi)
        light = light + style.light_gradient * 0.5 * (math.cos(theta) * (2 * xc / W - 1)
                                                      + math.sin(theta) * (2 * ys / H - 1))
    gain = light * np.float32(style.brightness)
    if style.texture > 0:
        tex = 0.7 * _value_noise(look_rng, H, W, style.texture_scale * scale) \
            + 0.5 * _value_noise(look_rng, H, W, 4 * style.texture_scale * scale)
        gain = gain * (1.0 + style.texture * np.take(_TEXTURE_WEIGHT, semantic) * tex)
    cast = np.asarray(style.color_cast, dtype=np.float32) * np.float32(style.contrast)
    # ((color * gain * cast) - 0.5) * contrast + 0.5, then brightness (folded into gain)
    color = color * (gain[..., None] * cast) + np.float32((0.5 - 0.5 * style.contrast) * style.brightness)
    if style.blur > 0:
        color = _gaussian_blur(color, style.blur * scale)
    if style.noise > 0:
        gen = torch.Generator().manual_seed(int(look_rng.integers(0, 2**62)))
        color = color + torch.randn(color.shape, generator=gen).numpy() * np.float32(style.noise)
    image = np.clip(color, 0.0, 1.0, out=color)

    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "semantic": torch.from_numpy(semantic),
        "instances": torch.from_numpy(instances),
        "name": f"toy-{style.name}-{seed}-{index}",
    }


class ToyScenes(torch.utils.data.Dataset):
    """``n`` toy scenes of one style; item ``i`` is :func:`render_scene(seed, i, style, size)`.

    Args:
        n: number of scenes.
        seed: scene family; two datasets with different seeds hold different scenes.
        style: a name in :data:`STYLES` or a :class:`ToyStyle`.
        size: (H, W) of the rendered scenes.
        transform: optional callable applied to each sample dict (see pst.data.transforms).

    Items are sample dicts: image float32 [3, H, W] in [0, 1], semantic int64 [H, W],
    instances int64 [H, W], name str. ``label_space`` is :data:`pst.labels.TOY`.
    """

    label_space = TOY

    def __init__(self, n: int, *, seed: int = 0, style: str | ToyStyle = "source",
                 size: Sequence[int] = (128, 256), transform: Callable[[dict], dict] | None = None):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n should be an int >= 0, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed should be an int >= 0, got {seed!r}")
        self.n = int(n)
        self.seed = int(seed)
        self.style = get_style(style)
        self.size = _check_size(size)
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += self.n
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} toy scenes")
        sample = render_scene(self.seed, int(index), self.style, self.size)
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"ToyScenes(n={self.n}, seed={self.seed}, style={self.style.name!r}, size={self.size})"
