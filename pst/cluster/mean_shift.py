"""Mean shift: exact flat-kernel mean shift (scikit-learn's algorithm), "mean-shift+" and
grid mean shift (MeanShift++), on pst's compiled ops.

Functional forms take and return torch tensors on the caller's device; the estimators
follow scikit-learn's conventions and return numpy arrays in their fitted attributes.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from pst._interrupt import interruptible_ops as ops  # every op call stops on Ctrl-C
from pst._checks import as_tensor, check_bandwidth, check_points, check_scalar
from pst._threads import capped_threads, thread_capped
from pst.cluster._common import check_feature_names, result_dtype, single_segment, to_numpy

log = logging.getLogger(__name__)

# bin_seeding warns when it keeps more than this share of the points as seeds, and at least
# MANY_SEEDS of them: the binning then saves little, and every seed climbs on its own.
MANY_SEEDS_FRACTION = 0.1
MANY_SEEDS = 10_000
PROGRESS_CHUNKS = 50  # progress=True: the seeds climb in up to this many calls

__all__ = [
    "MeanShift",
    "MeanShiftPP",
    "estimate_bandwidth",
    "get_bin_seeds",
    "grid_mean_shift",
    "mean_shift",
]


# ----------------------------------------------------------------------------- helpers


def estimate_bandwidth(
    X: Any,
    *,
    quantile: float = 0.3,
    n_samples: int | None = None,
    random_state: int | np.random.RandomState | None = 0,
    batch_size: int = 256,
) -> float:
    """The mean, over points, of the distance to their ``int(n * quantile)``-th neighbour.

    The same estimate as :func:`sklearn.cluster.estimate_bandwidth` (the point itself
    counts as its first neighbour; ``n_samples`` points are drawn with
    ``RandomState(random_state).permutation``), computed with exact distances on the
    input's device in batches of ``batch_size`` rows, so memory is O(batch_size * n).

    Args:
        X: [n, d] points (numpy, torch or DLPack array).
        quantile: in [0, 1].

    Returns:
        The bandwidth, a Python float.
    """
    x = check_points(X, "X", min_samples=1)
    check_scalar(quantile, "quantile", min_val=0.0, max_val=1.0)
    check_scalar(n_samples, "n_samples", kind=numbers.Integral, min_val=1, allow_none=True)
    check_scalar(batch_size, "batch_size", kind=numbers.Integral, min_val=1)
    if n_samples is not None:
        rs = random_state if isinstance(random_state, np.random.RandomState) else np.random.RandomState(random_state)
        idx = torch.from_numpy(rs.permutation(x.shape[0])[:n_samples]).to(x.device)
        x = x[idx]
    n = x.shape[0]
    k = max(int(n * quantile), 1)
    x = x.to(torch.float64)
    total = 0.0
    for start in range(0, n, batch_size):
        q = x[start:start + batch_size]
        # exact differences, not the |a|^2 + |b|^2 - 2ab expansion, so that near-zero
        # distances agree with scikit-learn's to rounding
        d = torch.cdist(q, x, compute_mode="donot_use_mm_for_euclid_dist")
        total += float(d.kthvalue(k, dim=1).values.sum())
    return total / n


def get_bin_seeds(X: Any, bin_size: float, min_bin_freq: int = 1) -> torch.Tensor:
    """Seeds for mean shift: the centres of the occupied cells of a grid of side ``bin_size``.

    scikit-learn's :func:`~sklearn.cluster.get_bin_seeds`, vectorised: a point falls in
    cell ``round(x / bin_size)`` (half to even), cells with at least ``min_bin_freq``
    points give the seed ``cell * bin_size`` computed in float32 as scikit-learn does (in float64 where float32 would overflow).
    When every point has a cell to itself the points themselves are returned (with a
    warning), also as scikit-learn does.

    Returns:
        [S, d] seeds, float64, on the input's device (S = 0 when no cell is full enough).
    """
    x = check_points(X, "X")
    bin_size = check_bandwidth(bin_size, "bin_size")
    check_scalar(min_bin_freq, "min_bin_freq", kind=numbers.Integral, min_val=1)
    return _bin_seeds(x, bin_size, min_bin_freq)


def _check_cells(finite: bool, x_max: float, bin_size: float) -> None:
    """Cells ``x / bin_size`` beyond float64's range would all merge into one infinite cell."""
    if not finite:
        raise ValueError(f"bin_size={bin_size:g} is too small for X: X / bin_size overflows float64 (|X| up to "
                         f"{x_max:g}); pass a larger bin_size")


def _bin_seeds(x: torch.Tensor, bin_size: float, min_bin_freq: int) -> torch.Tensor:
    if x.device.type == "cpu":
        return torch.from_numpy(_bin_seeds_numpy(x.numpy(), bin_size, min_bin_freq))
    cells = torch.round(x.to(torch.float64) / bin_size)
    if cells.numel():
        _check_cells(bool(torch.isfinite(cells).all()), float(x.abs().max()), bin_size)
    uniq, counts = _unique_rows(cells)
    keep = uniq[counts >= min_bin_freq]
    if keep.shape[0] == x.shape[0]:
        warnings.warn(f"Binning data failed with provided bin_size={bin_size:f}, using data points as seeds.",
                      stacklevel=2)
        return x.to(torch.float64)
    seeds = keep.to(torch.float32) * torch.tensor(bin_size, dtype=torch.float32)
    if not bool(torch.isfinite(seeds).all()):  # beyond float32's range (scikit-learn gives inf there)
        return keep * bin_size
    return seeds.to(torch.float64)


def _bin_seeds_numpy(x: np.ndarray, bin_size: float, min_bin_freq: int) -> np.ndarray:
    """The CPU path of :func:`get_bin_seeds` (numpy: no thread start-up on small inputs)."""
    with np.errstate(over="ignore"):
        cells = np.round(x.astype(np.float64, copy=False) / bin_size)
    if cells.size:
        _check_cells(bool(np.isfinite(cells).all()), float(np.abs(x).max()), bin_size)
    uniq = counts = None
    if cells.size and float(np.abs(cells).max()) < 2.0 ** 52:
        c = cells.astype(np.int64)
        lo = c.min(0)
        span = [int(v) for v in c.max(0) - lo + 1]
        if np.prod(np.array(span, dtype=object)) < 2 ** 62:
            strides = np.ones(len(span), dtype=np.int64)
            for j in range(len(span) - 2, -1, -1):
                strides[j] = strides[j + 1] * span[j + 1]
            _, first, counts = np.unique((c - lo) @ strides, return_index=True, return_counts=True)
            uniq = cells[first]
    if uniq is None:
        uniq, counts = np.unique(cells, axis=0, return_counts=True)
    keep = uniq[counts >= min_bin_freq]
    if keep.shape[0] == x.shape[0]:
        warnings.warn(f"Binning data failed with provided bin_size={bin_size:f}, using data points as seeds.",
                      stacklevel=4)
        return x.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        seeds = keep.astype(np.float32) * np.float32(bin_size)
    if not np.isfinite(seeds).all():  # beyond float32's range (scikit-learn gives inf there)
        return keep * bin_size
    return seeds.astype(np.float64)


def _unique_rows(cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of an integer-valued float tensor and their counts (order unspecified).

    Packs each row into one int64 key (mixed radix over the occupied range) when the range
    allows it, which is much faster than ``torch.unique(dim=0)``; falls back to it otherwise.
    """
    if cells.numel() and float(cells.abs().max()) < 2.0 ** 52:
        c = cells.to(torch.long)
        lo = c.min(0).values
        span = (c.max(0).values - lo + 1).tolist()
        total = 1
        for s in span:
            total *= s
        if total < 2 ** 62:
            strides = [1] * len(span)
            for j in range(len(span) - 2, -1, -1):
                strides[j] = strides[j + 1] * span[j + 1]
            key = ((c - lo) * torch.tensor(strides, device=c.device)).sum(1)
            uk, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
            rep = torch.empty(uk.numel(), dtype=torch.long, device=c.device)
            rep.scatter_(0, inverse, torch.arange(key.numel(), device=c.device))
            return cells[rep], counts
    return torch.unique(cells, dim=0, return_counts=True)


def _merge_clusters(centers: torch.Tensor, labels: torch.Tensor, merge_distance: float):
    """The "mean-shift+" step: clusters by size, largest first; one whose centre lies within
    ``merge_distance`` of a kept centre joins the nearest kept one. Labels are renumbered
    0..K'-1 in the order of the kept clusters (largest first)."""
    k = centers.shape[0]
    if k <= 1:
        return centers, labels
    valid = labels >= 0
    sizes = torch.bincount(labels[valid], minlength=k).to(torch.float64)
    seg = torch.zeros(k, dtype=torch.long, device=centers.device)
    keeper, order = ops.merge_modes(centers.contiguous(), sizes, seg, float(merge_distance))
    kept = order[keeper[order] == order]  # kept centres in visiting order (largest first)
    rank = torch.full((k,), -1, dtype=torch.long, device=centers.device)
    rank[kept] = torch.arange(kept.numel(), device=centers.device)
    new_labels = torch.where(valid, rank[keeper][labels.clamp_min(0)], labels)
    return centers[kept], new_labels


# ----------------------------------------------------------------------------- mean shift


def mean_shift(
    X: Any,
    *,
    bandwidth: float | None = None,
    seeds: Any = None,
    bin_seeding: bool = False,
    min_bin_freq: int = 1,
    cluster_all: bool = True,
    max_iter: int = 300,
    merge_distance: float | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Flat-kernel mean shift with scikit-learn's results; torch in, torch out.

    Every seed (the points, the ``bin_seeding`` grid seeds, or ``seeds``) climbs to the
    mean of the points within ``bandwidth`` until it moves by at most 1e-3 * bandwidth or
    after ``max_iter`` steps. Modes seen by no point are dropped; the others are visited
    by the number of points around them (then by coordinates, descending) and one within
    ``bandwidth`` of a mode already kept is dropped. Every point takes its nearest kept
    mode (``cluster_all=False``: only within ``bandwidth``, else -1). With
    ``merge_distance``, the "mean-shift+" step follows: clusters by size, largest first,
    and one whose centre lies within ``merge_distance`` of a kept centre joins it.

    When ``bin_seeding`` keeps many seeds (over 10% of the points and at least 10,000), a
    warning gives their number and the cost: each step of every seed is a radius query over
    the points. Ctrl-C stops the climb within a fraction of a second (KeyboardInterrupt).

    Args:
        X: [n, d] points (numpy, torch or DLPack array); float32 or float64 on CPU or GPU.
        progress: show a tqdm progress bar over the seeds (they then climb in up to 50
            calls, each of which rebuilds the radius-query tree: a little slower).

    Returns:
        (centers [K, d] X's float dtype, labels [n] int64, n_iter), on X's device.
    """
    x = check_points(X, "X")
    with capped_threads():
        return _mean_shift(x, bandwidth=bandwidth, seeds=seeds, bin_seeding=bin_seeding, min_bin_freq=min_bin_freq,
                           cluster_all=cluster_all, max_iter=max_iter, merge_distance=merge_distance,
                           progress=progress)


def _warn_many_seeds(n_seeds: int, n: int, bandwidth: float) -> None:
    if n_seeds >= MANY_SEEDS and n_seeds > MANY_SEEDS_FRACTION * n:
        warnings.warn(
            f"bin_seeding kept {n_seeds} seeds for {n} points ({n_seeds / n:.0%} of them, bin_size=bandwidth="
            f"{bandwidth:g}): every step of every seed is a radius query over the points, up to "
            f"{n_seeds:.3g} x {n:.3g} = {float(n_seeds) * n:.2g} distance evaluations per step (a kd-tree prunes "
            "fewer in many dimensions). A larger bandwidth or min_bin_freq gives fewer seeds.",
            stacklevel=4)


def _climb(x, seeds, bandwidth, max_iter, progress):
    """ops.mean_shift over one segment; with ``progress``, in chunks of seeds under a tqdm bar."""
    device = x.device
    offsets = single_segment(x.shape[0], device)
    if not progress:
        seg = torch.zeros(seeds.shape[0], dtype=torch.long, device=device)
        return ops.mean_shift(x, offsets, seeds, seg, bandwidth, int(max_iter), 1e-3 * bandwidth)
    from tqdm.auto import tqdm  # noqa: PLC0415

    parts = []
    with tqdm(total=seeds.shape[0], desc="mean shift", unit="seed") as bar:
        for chunk in torch.tensor_split(seeds, min(PROGRESS_CHUNKS, max(1, seeds.shape[0] // 1024))):
            seg = torch.zeros(chunk.shape[0], dtype=torch.long, device=device)
            parts.append(ops.mean_shift(x, offsets, chunk, seg, bandwidth, int(max_iter), 1e-3 * bandwidth))
            bar.update(chunk.shape[0])
    return tuple(torch.cat(p) for p in zip(*parts))


def _mean_shift(x, *, bandwidth, seeds, bin_seeding, min_bin_freq, cluster_all, max_iter, merge_distance,
                progress=False):
    device = x.device
    if bandwidth is None:
        if x.shape[0] < 2:
            raise ValueError("bandwidth=None cannot be estimated from n_samples=1: pass a bandwidth")
        bandwidth = estimate_bandwidth(x)
        if bandwidth <= 0:
            raise ValueError("estimate_bandwidth gave 0 (all points equal?): pass bandwidth explicitly")
    bandwidth = check_bandwidth(bandwidth)
    check_scalar(max_iter, "max_iter", kind=numbers.Integral, min_val=0)
    check_scalar(min_bin_freq, "min_bin_freq", kind=numbers.Integral, min_val=1)
    check_scalar(merge_distance, "merge_distance", min_val=0.0, include_min=False, allow_none=True)
    if seeds is None:
        s = _bin_seeds(x, bandwidth, min_bin_freq) if bin_seeding else x
        if s.shape[0] == 0:
            raise ValueError(f"No bin has min_bin_freq={min_bin_freq} points or more: lower min_bin_freq "
                             "or widen bandwidth")
        if bin_seeding:
            _warn_many_seeds(s.shape[0], x.shape[0], bandwidth)
    else:
        s = check_points(seeds, "seeds", device=device)
        if s.shape[1] != x.shape[1]:
            raise ValueError(f"seeds should have {x.shape[1]} features like X, got shape {tuple(s.shape)}")
    s = s.to(x.dtype).contiguous()
    modes, counts, n_iter = _climb(x, s, bandwidth, max_iter, progress)
    n_iter_max = int(n_iter.max()) if n_iter.numel() else 0
    seen = counts > 0
    if not bool(seen.any()):
        raise ValueError(f"No point was within bandwidth={bandwidth:f} of any seed. Try a different seeding "
                         "strategy or increase the bandwidth.")
    # Identical modes (scikit-learn keys a dict by the mode) have identical counts, so the
    # merge below keeps one of them, exactly as deduplicating first would.
    modes, weights = modes[seen].contiguous(), counts[seen].to(torch.float64)
    segment = torch.zeros(modes.shape[0], dtype=torch.long, device=device)
    keeper, order = ops.merge_modes(modes, weights, segment, bandwidth)
    centers = modes[order[keeper[order] == order]]
    idx, sqd = ops.nearest_center(x, single_segment(x.shape[0], device), centers,
                                  single_segment(centers.shape[0], device))
    labels = idx
    if not cluster_all:
        labels = torch.where(sqd.sqrt() <= bandwidth, idx, torch.full_like(idx, -1))
    if merge_distance is not None:
        centers, labels = _merge_clusters(centers, labels, merge_distance)
    return centers, labels, n_iter_max


class _ClusterBase(ClusterMixin, BaseEstimator):
    """Shared plumbing: input conversion, numpy attributes, predict by nearest centre."""

    def _prepare(self, X):
        """(points [n, d] float tensor, the dtype of cluster_centers_); sets n_features_in_ and,
        for a DataFrame, feature_names_in_."""
        t = as_tensor(X, "X")
        x = check_points(t, "X", min_samples=1)
        check_feature_names(self, X, reset=True)
        self.n_features_in_ = x.shape[1]
        return x, result_dtype(t.dtype)

    def predict(self, X):
        """Index of the nearest cluster centre of every row of ``X`` ([n, d]) -> [n] int64 numpy.
        A DataFrame's column names are checked against those seen in fit, as scikit-learn does."""
        check_is_fitted(self, "cluster_centers_")
        check_feature_names(self, X, reset=False)
        x = check_points(X, "X")
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")
        centers = torch.as_tensor(self.cluster_centers_, dtype=x.dtype, device=x.device)
        idx, _ = ops.nearest_center(x, single_segment(x.shape[0], x.device), centers.contiguous(),
                                    single_segment(centers.shape[0], x.device))
        return to_numpy(idx)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class MeanShift(_ClusterBase):
    """Flat-kernel mean shift with the results of :class:`sklearn.cluster.MeanShift`.

    Same parameters and attributes as scikit-learn's, plus ``merge_distance`` for the
    "mean-shift+" step and ``progress`` (a tqdm bar over the seeds), see :func:`mean_shift`.
    The seeds' climbs run in parallel in a compiled kernel that answers the radius queries
    from a kd-tree with cached subtree sums, so a subtree entirely inside the ball costs one
    addition. Ctrl-C stops a fit within a fraction of a second (KeyboardInterrupt).

    Attributes:
        cluster_centers_: [K, d] numpy array, the modes, most populated first; float16 or
            float32 for such input, float64 otherwise (scikit-learn's dtypes).
        labels_: [n] int64 numpy array (-1 = orphan when ``cluster_all=False``).
        n_iter_: the largest number of mean-shift steps any seed took.
        n_features_in_: d.
        feature_names_in_: the column names, after fitting a DataFrame with string column names.
    """

    def __init__(
        self,
        *,
        bandwidth: float | None = None,
        seeds: Any = None,
        bin_seeding: bool = False,
        min_bin_freq: int = 1,
        cluster_all: bool = True,
        n_jobs: int | None = None,
        max_iter: int = 300,
        merge_distance: float | None = None,
        progress: bool = False,
    ):
        self.bandwidth = bandwidth
        self.seeds = seeds
        self.bin_seeding = bin_seeding
        self.min_bin_freq = min_bin_freq
        self.cluster_all = cluster_all
        self.n_jobs = n_jobs  # accepted for scikit-learn compatibility; threads follow torch
        self.max_iter = max_iter
        self.merge_distance = merge_distance
        self.progress = progress

    def fit(self, X, y=None):
        """Cluster ``X`` ([n, d] array or DataFrame). Returns self."""
        x, dtype = self._prepare(X)
        with capped_threads():
            centers, labels, n_iter = _mean_shift(
                x, bandwidth=self.bandwidth, seeds=self.seeds, bin_seeding=self.bin_seeding,
                min_bin_freq=self.min_bin_freq, cluster_all=self.cluster_all, max_iter=self.max_iter,
                merge_distance=self.merge_distance, progress=self.progress)
        self.cluster_centers_ = to_numpy(centers).astype(dtype, copy=False)
        self.labels_ = to_numpy(labels)
        self.n_iter_ = n_iter
        return self


# ----------------------------------------------------------------------------- MeanShift++


@thread_capped
def grid_mean_shift(
    X: Any,
    *,
    bandwidth: float,
    max_iter: int = 300,
    tol: float | None = None,
    merge_distance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Grid mean shift (MeanShift++, Jang & Jiang 2021) on occupied cells; torch in, torch out.

    How it approximates exact mean shift: space is cut into cubic cells of side
    ``bandwidth``; in each pass every point moves to the mean of all points whose cell is
    at most one cell away from its own in every coordinate (the 3^d block of cells around
    it) instead of the points within ``bandwidth`` of it. The block contains the ball, so
    the step averages over a somewhat larger, box-shaped and cell-aligned window; points
    that share a cell move together. Passes repeat until no point moves by more than
    ``tol`` (default 1e-3 * bandwidth) or ``max_iter``. Each cluster is the set of points
    that end in one position (one cell). Only occupied cells are visited, through a
    kd-tree over their coordinates, never the 3^d neighbour list, so the cost grows with
    the number of occupied cells rather than with 3^d: it runs at d = 64.

    With ``merge_distance`` the "mean-shift+" step follows as in :func:`mean_shift`.

    Returns:
        (centers [K, d], labels [n] int64 in 0..K-1, most populated cluster first; n_iter).
    """
    x = check_points(X, "X")
    bandwidth = check_bandwidth(bandwidth)
    check_scalar(max_iter, "max_iter", kind=numbers.Integral, min_val=1)
    check_scalar(tol, "tol", min_val=0.0, allow_none=True)
    check_scalar(merge_distance, "merge_distance", min_val=0.0, include_min=False, allow_none=True)
    tol = 1e-3 * bandwidth if tol is None else float(tol)
    modes, weights, _, labels, n_iter = ops.grid_mean_shift(x, single_segment(x.shape[0], x.device), bandwidth,
                                                            int(max_iter), tol)
    # most populated first (ties: coordinates descending, as mean_shift orders its modes)
    order = _order_by_weight(modes, weights)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    centers, labels = modes[order], rank[labels]
    if merge_distance is not None:
        centers, labels = _merge_clusters(centers, labels, merge_distance)
    return centers, labels, int(n_iter)


def _order_by_weight(modes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Indices by weight descending, ties by coordinates descending (lexicographic)."""
    order = torch.arange(modes.shape[0], device=modes.device)
    for j in range(modes.shape[1] - 1, -1, -1):  # least significant key first, stable sorts
        order = order[torch.sort(modes[order, j], descending=True, stable=True).indices]
    return order[torch.sort(weights[order], descending=True, stable=True).indices]


class MeanShiftPP(_ClusterBase):
    """Grid mean shift (MeanShift++) for 2 to 64 dimensions; see :func:`grid_mean_shift`.

    Args:
        bandwidth: the kernel radius, as for :class:`MeanShift` (``None`` estimates it as
            MeanShift does).
        cell_size: the grid's cell side h. ``None``: ``bandwidth / 2.5`` for d <= 3,
            ``bandwidth / 1.25`` above. The 3^d block of cells that replaces the ball is much
            larger than the ball when h = bandwidth and merges nearby modes; on the blobs of
            ``pst bench cluster`` (d = 2-3, ARI against the truth 0.88 / 0.99 for scikit-learn)
            h = bandwidth gives 0.38 / 0.81, bandwidth / 1.5 0.63 / 0.89, bandwidth / 2.5
            0.84 / 0.98 (with small extra clusters at cell boundaries). Above d = 3,
            bandwidth / 1.25 lifts d = 4-6 and 16 from 0.74-0.90 to 0.90-1.00 and the
            embedding-like data from 0.79 to 0.94, at about 1.5x the time of h = bandwidth.
        max_iter: at most this many passes.
        tol: stop when no point moves more than this (default 1e-3 * the cell side).
        merge_distance: optional "mean-shift+" merge of cluster centres.
        refine: climb from the grid's modes with exact flat-kernel mean shift of radius
            ``bandwidth`` (:func:`mean_shift` with them as seeds: modes within ``bandwidth``
            of a more populated one are dropped, every point takes its nearest mode).
            ``"auto"`` (default): at d <= 3 when ``cell_size`` is None. There the fine
            default cell leaves many small modes and joins blobs that overlap; refined, the
            blobs of ``pst bench cluster`` reach scikit-learn's ARI against the truth (d = 2:
            0.79-0.84 -> 0.87-0.89 at n = 1e3-1e6 against its 0.88). It costs one radius
            query per mode and step (n = 1e6, d = 2: 0.02 -> 0.3 s). ``False``: the grid
            algorithm alone, as published.

    Attributes: ``cluster_centers_`` [K, d] (dtype as :class:`MeanShift`'s), ``labels_`` [n],
    ``n_iter_`` (grid passes), ``n_refine_iter_`` (steps of the refinement, 0 without it),
    ``cell_size_``, ``n_features_in_``, ``feature_names_in_`` (after fitting a DataFrame).
    Ctrl-C stops a fit within a fraction of a second (KeyboardInterrupt).
    """

    def __init__(self, *, bandwidth: float | None = None, cell_size: float | None = None, max_iter: int = 300,
                 tol: float | None = None, merge_distance: float | None = None, refine: bool | str = "auto"):
        self.bandwidth = bandwidth
        self.cell_size = cell_size
        self.max_iter = max_iter
        self.tol = tol
        self.merge_distance = merge_distance
        self.refine = refine

    def fit(self, X, y=None):
        """Cluster ``X`` ([n, d] array or DataFrame). Returns self."""
        x, dtype = self._prepare(X)
        if not (isinstance(self.refine, bool) or self.refine == "auto"):
            raise ValueError(f"refine should be True, False or 'auto', got {self.refine!r}")
        cell, bw = self.cell_size, self.bandwidth
        refine = self.refine if isinstance(self.refine, bool) else (cell is None and x.shape[1] <= 3)
        if bw is None and (cell is None or refine):
            if x.shape[0] < 2:
                raise ValueError("bandwidth=None cannot be estimated from n_samples=1: pass a bandwidth")
            bw = estimate_bandwidth(x, n_samples=min(x.shape[0], 10000))
            if bw <= 0:
                raise ValueError("estimate_bandwidth gave 0 (all points equal?): pass bandwidth explicitly")
        if cell is None:
            cell = check_bandwidth(bw) / (2.5 if x.shape[1] <= 3 else 1.25)
        cell = check_bandwidth(cell, "cell_size")
        n_refine = 0
        with capped_threads():
            centers, labels, n_iter = grid_mean_shift(x, bandwidth=cell, max_iter=self.max_iter, tol=self.tol,
                                                      merge_distance=None if refine else self.merge_distance)
            if refine:
                centers, labels, n_refine = _mean_shift(
                    x, bandwidth=bw, seeds=centers, bin_seeding=False, min_bin_freq=1, cluster_all=True,
                    max_iter=self.max_iter, merge_distance=self.merge_distance)
        self.cluster_centers_ = to_numpy(centers).astype(dtype, copy=False)
        self.labels_ = to_numpy(labels)
        self.n_iter_ = n_iter
        self.n_refine_iter_ = n_refine
        self.cell_size_ = float(cell)
        return self
