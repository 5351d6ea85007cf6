"""The fake (meta) kernels of every compiled op, in one module.

A fake kernel gives an op's outputs (shapes, dtypes, devices) without running it, for
``torch.compile``, ``torch.export`` and FakeTensor / meta tensors. Every schema in
``csrc/<op>.cpp`` names this module with ``m.set_python_module("pst._meta")``, so torch knows
where the fakes live (it checks that they are registered from here, and says which module to
import when one is missing); ``pst._ops`` imports it right after loading the op library.

Each fake first checks what the op's ``check_<op>_args`` (``csrc/<op>.cpp``) checks, with the
same messages and exception types (``TORCH_CHECK`` -> ``RuntimeError``, ``TORCH_CHECK_VALUE`` ->
``ValueError``, ``TORCH_CHECK_TYPE`` -> ``TypeError``), through ``torch._check`` so that symbolic
sizes turn into guards; then it allocates the outputs. What needs the data (offsets' values,
finite points, ids in range) is the real kernels' own and is not checked here. Outputs whose size
depends on the data (``grid_mean_shift``'s modes, ``agglomerative_tree``'s merges) get an unbacked
size from ``torch.library.get_ctx().new_dynamic_size()``.
"""

from __future__ import annotations

import math
import torch

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1

# c10's names of the dtypes, as the C++ messages print them
_C10_NAMES = {
    torch.bool: "Bool", torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short", torch.int32: "Int",
    torch.int64: "Long", torch.float16: "Half", torch.bfloat16: "BFloat16", torch.float32: "Float",
    torch.float64: "Double",
}


def _name(dtype: torch.dtype) -> str:
    return _C10_NAMES.get(dtype, str(dtype))


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


# ----------------------------------------------------------------------------- csrc/checks.h


def _check_dim(t: torch.Tensor, dim: int, name: str, layout: str) -> None:
    torch._check(t.dim() == dim, lambda: f"{name} should be a {dim}-D tensor {layout}, got shape {_shape(t)}")


def _check_floating(t: torch.Tensor, name: str) -> None:
    torch._check(t.dtype in (torch.float32, torch.float64),
                 lambda: f"{name} should be float32 or float64, got {_name(t.dtype)}")


def _check_dtype(t: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    torch._check(t.dtype == dtype, lambda: f"{name} should be {_name(dtype)}, got {_name(t.dtype)}")


def _check_dtype_like(t: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    torch._check(t.dtype == ref.dtype,
                 lambda: f"{name} should have the dtype of {ref_name} ({_name(ref.dtype)}), got {_name(t.dtype)}")


def _check_columns_like(t: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    torch._check(t.shape[1] == ref.shape[1],
                 lambda: f"{name} should have D = {ref.shape[1]} columns like {ref_name}, got {t.shape[1]}")


def _check_rows(t: torch.Tensor, n, name: str, per: str) -> None:
    torch._check(t.shape[0] == n, lambda: f"{name} should have {per} ({n}), got {t.shape[0]}")


def _check_positive_finite(v: float, name: str) -> None:
    torch._check(math.isfinite(v) and v > 0, lambda: f"{name} should be a finite number > 0, got {v:g}")


def _check_nonnegative_finite(v: float, name: str) -> None:
    torch._check(math.isfinite(v) and v >= 0, lambda: f"{name} should be a finite number >= 0, got {v:g}")


def _check_offsets_shape(offsets: torch.Tensor, name: str) -> None:
    _check_dim(offsets, 1, name, "[G + 1] of segment boundaries")
    _check_dtype(offsets, torch.int64, name)
    torch._check(offsets.shape[0] >= 1, lambda: f"{name} should have at least one element (G + 1 >= 1), got 0")


def _check_connectivity(connectivity: int) -> None:
    torch._check_value(connectivity in (4, 8), lambda: f"connectivity should be 4 or 8, got {connectivity}")


def _long(like: torch.Tensor, *shape) -> torch.Tensor:
    return like.new_empty(shape, dtype=torch.int64)


# ----------------------------------------------------------------------------- the ops


@torch.library.register_fake("pst::nearest_center")
def _nearest_center(points, offsets, centers, center_offsets):
    _check_dim(points, 2, "points", "[N, D]")
    _check_dim(centers, 2, "centers", "[K, D]")
    _check_floating(points, "points")
    _check_dtype_like(centers, points, "centers", "points")
    _check_columns_like(centers, points, "centers", "points")
    _check_offsets_shape(offsets, "offsets")
    _check_offsets_shape(center_offsets, "center_offsets")
    torch._check(offsets.shape[0] == center_offsets.shape[0],
                 lambda: "offsets and center_offsets should describe the same number of segments, got "
                         f"{offsets.shape[0] - 1} and {center_offsets.shape[0] - 1}")
    n = points.shape[0]
    return _long(points, n), points.new_empty((n,))


@torch.library.register_fake("pst::mean_shift")
def _mean_shift(points, offsets, seeds, seed_segment, bandwidth, max_iter, tol):
    _check_dim(points, 2, "points", "[N, D]")
    _check_floating(points, "points")
    _check_dim(seeds, 2, "seeds", "[S, D]")
    _check_dtype_like(seeds, points, "seeds", "points")
    _check_columns_like(seeds, points, "seeds", "points")
    _check_dim(seed_segment, 1, "seed_segment", "[S]")
    _check_dtype(seed_segment, torch.int64, "seed_segment")
    _check_rows(seed_segment, seeds.shape[0], "seed_segment", "one entry per seed")
    _check_offsets_shape(offsets, "offsets")
    _check_positive_finite(bandwidth, "bandwidth")
    torch._check(max_iter >= 0, lambda: f"max_iter should be >= 0, got {max_iter}")
    _check_nonnegative_finite(tol, "tol")
    s = seeds.shape[0]
    return seeds.new_empty(seeds.shape), _long(seeds, s), _long(seeds, s)


@torch.library.register_fake("pst::grid_mean_shift")
def _grid_mean_shift(points, offsets, cell_size, max_iter, tol):
    _check_dim(points, 2, "points", "[N, D]")
    _check_floating(points, "points")
    _check_offsets_shape(offsets, "offsets")
    _check_positive_finite(cell_size, "cell_size")
    torch._check(max_iter >= 1, lambda: f"max_iter should be >= 1, got {max_iter}")
    _check_nonnegative_finite(tol, "tol")
    m = torch.library.get_ctx().new_dynamic_size()  # the number of modes
    n, d = points.shape
    return points.new_empty((m, d)), _long(points, m), _long(points, m), _long(points, n), _long(points)


@torch.library.register_fake("pst::merge_modes")
def _merge_modes(centers, weights, segment, radius):
    _check_dim(centers, 2, "centers", "[K, D]")
    _check_floating(centers, "centers")
    _check_dim(weights, 1, "weights", "[K]")
    _check_dtype(weights, torch.float64, "weights")
    _check_dim(segment, 1, "segment", "[K]")
    _check_dtype(segment, torch.int64, "segment")
    _check_rows(weights, centers.shape[0], "weights", "one entry per centre")
    _check_rows(segment, centers.shape[0], "segment", "one entry per centre")
    _check_positive_finite(radius, "radius")
    k = centers.shape[0]
    return _long(segment, k), _long(segment, k)


@torch.library.register_fake("pst::sample_anchors")
def _sample_anchors(weights, coords, offsets, k, min_distance, seed):
    _check_dim(weights, 1, "weights", "[N]")
    _check_floating(weights, "weights")
    _check_dim(coords, 2, "coords", "[N, C]")
    _check_dtype_like(coords, weights, "coords", "weights")
    _check_rows(coords, weights.shape[0], "coords", "one row per weight")
    _check_offsets_shape(offsets, "offsets")
    torch._check(k >= 0, lambda: f"k should be >= 0, got {k}")
    g = offsets.shape[0] - 1
    torch._check(g == 0 or k <= _INT64_MAX // 8 // g,
                 lambda: f"k should give an output [G, k] of fewer than 2^63 bytes, got k = {k} for G = {g} segments")
    _check_nonnegative_finite(min_distance, "min_distance")
    return _long(offsets, g, k)


@torch.library.register_fake("pst::knn_graph")
def _knn_graph(x, k):
    _check_dim(x, 2, "x", "[N, D]")
    _check_floating(x, "x")
    n = x.shape[0]
    torch._check(k >= 1, lambda: f"k should be >= 1, got {k}")
    torch._check(k <= n - 1,
                 lambda: f"k should be at most N - 1 = {n - 1} (a point is not its own neighbour), got k = {k} "
                         f"for N = {n}")
    torch._check(x.shape[1] >= 1, lambda: f"x should have at least one column, got shape {_shape(x)}")
    return x.new_empty((n, k)), _long(x, n, k)


_LINKAGES = ("ward", "average", "complete", "single")


@torch.library.register_fake("pst::agglomerative_tree")
def _agglomerative_tree(x, rowptr, col, linkage, n_clusters):
    _check_dim(x, 2, "x", "[N, D]")
    _check_floating(x, "x")
    _check_dim(rowptr, 1, "rowptr", "[N + 1]")
    _check_dtype(rowptr, torch.int64, "rowptr")
    _check_dim(col, 1, "col", "[E]")
    _check_dtype(col, torch.int64, "col")
    n = x.shape[0]
    torch._check(rowptr.shape[0] == n + 1,
                 lambda: f"rowptr should have N + 1 = {n + 1} elements, got {rowptr.shape[0]}")
    torch._check(1 <= n_clusters <= torch.sym_max(n, 1),
                 lambda: f"n_clusters should be in [1, N = {n}], got {n_clusters}")
    torch._check(linkage in _LINKAGES,
                 lambda: "linkage should be one of " + ", ".join(f"'{s}'" for s in _LINKAGES) + f", got '{linkage}'")
    m = torch.library.get_ctx().new_dynamic_size()  # merges done: N - n_clusters, fewer when the graph is cut
    return _long(x, m, 2), x.new_empty((m,), dtype=torch.float64)


@torch.library.register_fake("pst::agglomerative_labels")
def _agglomerative_labels(children, n_samples, n_merges):
    _check_dim(children, 2, "children", "[M, 2]")
    _check_dtype(children, torch.int64, "children")
    torch._check(children.shape[1] == 2, lambda: f"children should have 2 columns, got shape {_shape(children)}")
    torch._check(n_samples >= 0, lambda: f"n_samples should be >= 0, got {n_samples}")
    m = children.shape[0]
    torch._check(0 <= n_merges <= m, lambda: f"n_merges should be in [0, M = {m}], got {n_merges}")
    torch._check(n_merges <= max(n_samples - 1, 0),
                 lambda: f"n_merges should be at most n_samples - 1 = {n_samples - 1} (each merge joins two of the "
                         f"n_samples points' clusters), got {n_merges}")
    return _long(children, n_samples)


@torch.library.register_fake("pst::connected_components")
def _connected_components(mask, connectivity):
    _check_dim(mask, 3, "mask", "[B, H, W]")
    _check_dtype(mask, torch.bool, "mask")
    _check_connectivity(connectivity)
    torch._check(mask.shape[1] * mask.shape[2] <= _INT32_MAX,
                 lambda: f"mask images should have at most 2^31 - 1 pixels (int32 labels), got {mask.shape[1]} x "
                         f"{mask.shape[2]}")
    return mask.new_empty(mask.shape, dtype=torch.int32)


@torch.library.register_fake("pst::morph_refine")
def _morph_refine(instances, open_radius, close_radius, disk, fill_holes, min_size, largest_component, connectivity):
    _check_dim(instances, 3, "instances", "[B, H, W]")
    dtype = instances.dtype  # at::isIntegralType(dtype, /*includeBool=*/false)
    torch._check_type(not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool),
                      lambda: "instances should be an integer tensor (uint8, int8, int16, int32 or int64), got "
                              f"{_name(dtype)}")
    torch._check_value(open_radius >= 0, lambda: f"open_radius should be >= 0, got {open_radius}")
    torch._check_value(close_radius >= 0, lambda: f"close_radius should be >= 0, got {close_radius}")
    torch._check_value(min_size >= 0, lambda: f"min_size should be >= 0, got {min_size}")
    _check_connectivity(connectivity)
    return torch.empty_like(instances, memory_format=torch.contiguous_format)
