"""Batched morphology on instance maps: opening, closing, hole filling, removal of small
components, keeping the largest component, and connected-component labelling.

Every function takes a whole map ``[B, H, W]`` (or one ``[H, W]``) and runs one compiled
op over it (``torch.ops.pst.morph_refine`` / ``torch.ops.pst.connected_components``); there
is no Python loop over instances.

Semantics of the instance steps (what :func:`refine` computes). An instance map holds
``0`` for "no instance" and ids ``>= 1`` (any values, not necessarily consecutive). Each
instance ``k`` is processed on its own binary mask ``M = (instances == k)``, in this order:

1. ``open_radius > 0``: opening ``M = dilate(erode(M, S), S)``;
2. ``close_radius > 0``: closing ``M = erode(dilate(M, S), S)``;
3. ``fill_holes``: add the background components of ``M`` that do not touch the image
   border (background connectivity is the complement of ``connectivity``: 4 when
   ``connectivity=8``, as in :func:`scipy.ndimage.binary_fill_holes`, and 8 when it is 4);
4. ``min_size > 0``: drop the connected components with fewer than ``min_size`` pixels;
5. ``largest_component``: keep only the largest component (ties: the component whose first
   pixel comes first in raster order).

``S`` is the square ``[-r, r]^2`` (``shape="square"``) or the disk ``dx^2 + dy^2 <= r^2``
(``shape="disk"``, see :func:`structuring_element`). Pixels outside the image never take
part, which is OpenCV's default border for ``cv2.erode`` / ``cv2.dilate`` /
``cv2.morphologyEx``: an instance touching the border is not eroded from it.

The refined masks ``R_k`` are pasted back into one map with this conflict rule: a pixel
that its original instance keeps (it lies in ``R_k`` for its own id ``k``) stays ``k``;
every other pixel goes to the lowest id ``j`` whose ``R_j`` contains it, else to 0. So
closing and hole filling only ever take background pixels, or pixels that their own
instance dropped. The result equals a per-instance loop with OpenCV (``cv2.morphologyEx``,
``cv2.connectedComponentsWithStats``) or scipy.ndimage followed by that paste
(tests/_reference_morph.py has both, and the tests compare them bit for bit; ``pst bench
morph`` times such loops as peers).
"""

from __future__ import annotations

import logging

import torch

from pst._checks import INT_DTYPES, check_bool, check_bool_tensor, check_choice, check_int, check_integer, check_map
from pst._ops import ops
from pst._threads import capped_threads

log = logging.getLogger(__name__)

__all__ = [
    "closing",
    "connected_components",
    "fill_holes",
    "keep_largest_component",
    "opening",
    "refine",
    "remove_small_components",
    "structuring_element",
]

SHAPES = ("square", "disk")


# ----------------------------------------------------------------------------- validation


def _check_connectivity(connectivity) -> int:
    if isinstance(connectivity, bool) or connectivity not in (4, 8):
        raise ValueError(f"connectivity should be 4 or 8, got {connectivity!r}")
    return int(connectivity)


def _check_shape(shape) -> bool:
    return check_choice(shape, "shape", SHAPES) == "disk"


# ----------------------------------------------------------------------------- public API


def structuring_element(radius: int, shape: str = "square") -> torch.Tensor:
    """The structuring element of ``radius`` as a bool tensor ``[2r+1, 2r+1]``.

    ``"square"``: all ones. ``"disk"``: ``dx^2 + dy^2 <= r^2`` around the centre (row ``dy``
    has half-width ``floor(sqrt(r^2 - dy^2))``). Radius 0 is the single pixel.
    """
    r = check_int(radius, "radius")
    disk = _check_shape(shape)
    if not disk:
        return torch.ones(2 * r + 1, 2 * r + 1, dtype=torch.bool)
    d = torch.arange(-r, r + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= r * r


def connected_components(mask: torch.Tensor, connectivity: int = 8) -> torch.Tensor:
    """Connected-component labelling of binary images.

    Args:
        mask: bool ``[B, H, W]`` or ``[H, W]``.
        connectivity: 4 (edge neighbours) or 8 (edge and corner neighbours).

    Returns:
        int32 tensor of ``mask``'s shape and device: 0 on background, and in each image the
        components numbered ``1..n`` in raster order of their first pixel (the numbering of
        :func:`scipy.ndimage.label`).
    """
    m, squeeze = check_map(mask, "mask")
    check_bool_tensor(m, "mask", " (pass mask != 0 for a label map)")
    conn = _check_connectivity(connectivity)
    with capped_threads():
        out = ops.connected_components(m, conn)
    return out.squeeze(0) if squeeze else out


def refine(
    instances: torch.Tensor,
    *,
    open_radius: int = 0,
    close_radius: int = 0,
    shape: str = "square",
    fill_holes: bool = False,
    min_size: int = 0,
    largest_component: bool = False,
    connectivity: int = 8,
) -> torch.Tensor:
    """Refines every instance of an instance map (steps and conflict rule: module docstring).

    Args:
        instances: integer ``[B, H, W]`` or ``[H, W]`` (uint8, int8, int16, int32, int64);
            0 = no instance, ids >= 1. Negative values raise ValueError.
        open_radius: radius of the opening, 0 = none.
        close_radius: radius of the closing, 0 = none.
        shape: ``"square"`` or ``"disk"`` structuring element (both steps).
        fill_holes: fill each instance's holes.
        min_size: drop components with fewer pixels (0 = keep all).
        largest_component: keep only each instance's largest component.
        connectivity: 4 or 8, of the components (holes use the complementary one).

    Returns:
        Tensor of ``instances``' shape, dtype and device: the refined map. Costs one pass
        over the pixels plus, per instance, O(crop area * log r) for squares and
        O(crop area * q * log r) for disks (q <= r + 1: the disk's distinct row half-widths),
        where a crop is an instance's bounding box grown by
        ``max(open_radius, 2 * close_radius)``. On the CPU the output's pages outside the
        instances are left to the operating system's zero pages (never written).
    """
    x, squeeze = check_map(instances, "instances")
    check_integer(x, "instances", dtypes=INT_DTYPES)
    open_r = check_int(open_radius, "open_radius")
    close_r = check_int(close_radius, "close_radius")
    disk = _check_shape(shape)
    fill = check_bool(fill_holes, "fill_holes")
    min_sz = check_int(min_size, "min_size")
    largest = check_bool(largest_component, "largest_component")
    conn = _check_connectivity(connectivity)
    with capped_threads():
        out = ops.morph_refine(x, open_r, close_r, disk, fill, min_sz, largest, conn)
    return out.squeeze(0) if squeeze else out


def opening(instances: torch.Tensor, radius: int, *, shape: str = "square") -> torch.Tensor:
    """Per-instance opening (erosion then dilation) of an integer ``[B, H, W]`` / ``[H, W]``
    instance map; same shape and dtype. Opening only removes pixels, so instances never
    conflict."""
    return refine(instances, open_radius=radius, shape=shape)


def closing(instances: torch.Tensor, radius: int, *, shape: str = "square") -> torch.Tensor:
    """Per-instance closing (dilation then erosion) of an integer ``[B, H, W]`` / ``[H, W]``
    instance map; same shape and dtype. A pixel claimed by several closed instances keeps
    its own instance, else goes to the lowest id."""
    return refine(instances, close_radius=radius, shape=shape)


def fill_holes(instances: torch.Tensor, *, connectivity: int = 8) -> torch.Tensor:
    """Fills every instance's holes (background components of its mask not touching the
    image border, with the complement of ``connectivity``) in an integer ``[B, H, W]`` /
    ``[H, W]`` map; same shape and dtype. Pixels of another instance inside a hole stay with
    that instance; background pixels filled by several instances go to the lowest id."""
    return refine(instances, fill_holes=True, connectivity=connectivity)


def remove_small_components(instances: torch.Tensor, min_size: int, *, connectivity: int = 8) -> torch.Tensor:
    """Sets to 0 every connected component (per instance) with fewer than ``min_size``
    pixels in an integer ``[B, H, W]`` / ``[H, W]`` map; same shape and dtype."""
    return refine(instances, min_size=min_size, connectivity=connectivity)


def keep_largest_component(instances: torch.Tensor, *, connectivity: int = 8) -> torch.Tensor:
    """Keeps only the largest connected component of every instance (ties: first in raster
    order) of an integer ``[B, H, W]`` / ``[H, W]`` map; same shape and dtype."""
    return refine(instances, largest_component=True, connectivity=connectivity)
