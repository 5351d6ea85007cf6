"""Agglomerative clustering on a sparse k-nearest-neighbour graph.

scikit-learn's structured hierarchical clustering (``AgglomerativeClustering(connectivity=
kneighbors_graph(X, k))``) without its O(n^2) pieces: the graph comes from an exact kNN
search (pst's compiled op, or cKDTree or faiss), the merging runs in a compiled kernel over the graph's
edges (a heap of inter-cluster distances updated lazily, Kruskal for single linkage). With
the same graph, the clusters are scikit-learn's, for every linkage, with ``n_clusters`` or
``distance_threshold``.

The functional form :func:`agglomerative` takes and returns torch tensors on the caller's
device; :class:`AgglomerativeClustering` follows scikit-learn's conventions.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_array

from pst._interrupt import interruptible_ops as ops  # every op call stops on Ctrl-C
from pst._threads import capped_threads
from pst.cluster._knn import KNN_BACKENDS, knn_graph
from pst._checks import check_points, check_scalar, is_tensor_like
from pst.cluster._common import check_feature_names, to_numpy

log = logging.getLogger(__name__)

__all__ = ["AgglomerativeClustering", "agglomerative"]

LINKAGES = ("ward", "complete", "average", "single")

# Completing a disconnected graph adds one edge per pair of components (as scikit-learn does);
# past this many components that is more edges than the graph itself is worth.
MAX_COMPONENTS = 2000

KDTREE_COMPONENTS = 64  # up to this many components, nearest pairs from one kd-tree per component
_PING_PONG = 3  # alternating nearest-point queries for a first pair of two components
_BLOCK_ELEMENTS = 1 << 22  # distance-matrix elements per block when completing the graph


@dataclass
class AgglomerativeTree:
    """What one run of :func:`agglomerative` found (CPU tensors).

    labels: [n] int64, clusters numbered 0..n_clusters-1 in the order of their first point.
    children: [M, 2] int64, the merges done (cluster ids as in scikit-learn: points 0..n-1,
        merge m makes cluster n + m); the full tree (M = n - 1) with ``distance_threshold``.
    distances: [M] float64, the linkage distance of every merge (ward: scikit-learn's
        sqrt(2 * increase of the within-cluster sum of squares)).
    n_clusters: number of clusters.
    n_connected_components: components of the connectivity graph before it was completed.
    """

    labels: torch.Tensor
    children: torch.Tensor
    distances: torch.Tensor
    n_clusters: int
    n_connected_components: int


# ----------------------------------------------------------------------------- graph


def _csr_from_rows(n: int, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(rows, stable=True)
    rowptr = torch.zeros(n + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(rows, minlength=n), 0, out=rowptr[1:])
    return rowptr, cols[order].contiguous()


def _user_graph(conn: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's [n, n] connectivity (sparse or dense) as CSR of its symmetrised pattern."""
    n = x.shape[0]
    if isinstance(conn, torch.Tensor):
        conn = to_numpy(conn)
    try:
        m = sp.csr_array(conn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"connectivity should be 'knn', a callable or an [n, n] (sparse) matrix, got "
                        f"{type(conn).__name__}") from exc
    if m.ndim != 2 or m.shape != (n, n):
        raise ValueError(f"Wrong shape for connectivity matrix: {m.shape} when X is {tuple(x.shape)}")
    m = (m + m.T).tocsr()
    m.eliminate_zeros()
    m.sort_indices()
    return (torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)))


def _component_links(x: torch.Tensor, comp: torch.Tensor, n_comp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every pair of components, the closest pair of points (one edge each), as scikit-learn's
    ``_fix_connected_components`` adds. x [n, d] float64 CPU, comp [n] int64 -> (a [P], b [P])."""
    if n_comp <= KDTREE_COMPONENTS:
        return _component_links_kdtree(x, comp, n_comp)
    return _component_links_brute(x, comp, n_comp)


def _component_links_kdtree(x, comp, n_comp):
    """One kd-tree per component. For components j < i: a first pair by alternating nearest-point
    queries between the two trees (from the point of i nearest to j's mean); its distance ``ub``
    bounds the closest pair's. Then the points of i that can lie within ``ub`` of j (by j's
    bounding box and by the ball about j's mean holding all of j) ask j's tree for their nearest
    point within ``ub`` (exact, float64; ties to the first such point of i)."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    xn = x.numpy()
    members = [np.flatnonzero(comp.numpy() == c) for c in range(n_comp)]
    pts = [xn[m] for m in members]
    trees = [cKDTree(p) for p in pts]
    means = [p.mean(0) for p in pts]
    radii = [float(np.sqrt(((p - m) ** 2).sum(1)).max()) for p, m in zip(pts, means)]
    lo = [p.min(0) for p in pts]
    hi = [p.max(0) for p in pts]
    out_a, out_b = [], []
    for i in range(1, n_comp):
        q = pts[i]
        for j in range(i):
            to_mean = np.sqrt(((q - means[j]) ** 2).sum(1))
            a = int(np.argmin(to_mean))
            for _ in range(_PING_PONG):
                _, b = trees[j].query(q[a], k=1)
                _, a = trees[i].query(pts[j][b], k=1)
            ub = float(np.sqrt(((q[a] - pts[j][b]) ** 2).sum()))
            # lower bounds of every point's distance to j, loosened against rounding
            gap = np.maximum(np.maximum(lo[j] - q, q - hi[j]), 0.0)
            slack = 1e-9 * (ub + radii[j] + to_mean)
            cand = np.flatnonzero((to_mean - radii[j] <= ub + slack) & (np.sqrt((gap * gap).sum(1)) <= ub + slack))
            # (the tree compares squared distances: a bound above 0 even when squared)
            bound = max(ub * (1.0 + 1e-9), 1e-150)
            dist, nn = trees[j].query(q[cand], k=1, distance_upper_bound=bound)
            r = int(np.argmin(dist))  # finite: the first pair's point a is a candidate
            out_a.append(int(members[i][cand[r]]))
            out_b.append(int(members[j][nn[r]]))
    return torch.tensor(out_a, dtype=torch.long), torch.tensor(out_b, dtype=torch.long)


def _component_links_brute(x, comp, n_comp):
    """Blocked brute force: for component i, the distances to all points of components < i."""
    sq = (x * x).sum(1)
    out_a, out_b = [], []
    for i in range(1, n_comp):
        ia = torch.nonzero(comp == i).squeeze(1)
        ib = torch.nonzero(comp < i).squeeze(1)
        xb, sqb = x[ib], sq[ib]
        best = torch.full((ib.numel(),), math.inf, dtype=torch.float64)
        arg = torch.zeros(ib.numel(), dtype=torch.long)
        step = max(1, _BLOCK_ELEMENTS // max(1, ib.numel()))
        for s in range(0, ia.numel(), step):
            rows = ia[s:s + step]
            # |a|^2 + |b|^2 - 2 a.b in float64, as scikit-learn's euclidean_distances
            d2 = sq[rows].unsqueeze(1) + sqb.unsqueeze(0) - 2.0 * (x[rows] @ xb.T)
            v, r = d2.min(0)
            better = v < best
            best = torch.where(better, v, best)
            arg = torch.where(better, r + s, arg)
        cb = comp[ib]
        cmin = torch.full((i,), math.inf, dtype=torch.float64).scatter_reduce(0, cb, best, "amin")
        pos = torch.where(best == cmin[cb], torch.arange(ib.numel()), ib.numel())
        first = torch.full((i,), ib.numel(), dtype=torch.long).scatter_reduce(0, cb, pos, "amin")
        out_a.append(ia[arg[first]])
        out_b.append(ib[first])
    return torch.cat(out_a), torch.cat(out_b)


def _graph(x: torch.Tensor, connectivity: Any, n_neighbors: int, knn_backend: str):
    """(rowptr [n + 1], col [E]) int64 CPU of a connected graph, the number of connected
    components it had before completion and the component of every point ([n] int64)."""
    n = x.shape[0]
    xc = x.detach().cpu()
    if isinstance(connectivity, str):  # "knn" (checked by the caller)
        k = min(n_neighbors, n - 1)
        t0 = time.perf_counter()
        _, idx = knn_graph(x, k, backend=knn_backend)
        log.debug("knn graph n=%d k=%d: %.3fs", n, k, time.perf_counter() - t0)
        rowptr, col = torch.arange(0, n * k + 1, k, dtype=torch.long), idx.cpu().reshape(-1)
    else:
        if callable(connectivity):
            connectivity = connectivity(to_numpy(xc))
        rowptr, col = _user_graph(connectivity, xc)
    adj = sp.csr_array((np.ones(col.numel(), dtype=np.int8), col.numpy(), rowptr.numpy()), shape=(n, n))
    n_comp, comp = connected_components(adj, directed=True, connection="weak")
    if n_comp > 1:
        if n_comp > MAX_COMPONENTS:
            raise ValueError(
                f"the connectivity graph has {n_comp} connected components (more than {MAX_COMPONENTS}); "
                "completing it would add an edge for every pair of them. Increase n_neighbors."
            )
        t0 = time.perf_counter()
        a, b = _component_links(xc.to(torch.float64), torch.from_numpy(comp.astype(np.int64)), n_comp)
        log.debug("completing %d components: %.3fs", n_comp, time.perf_counter() - t0)
        rows = torch.repeat_interleave(torch.arange(n), rowptr.diff())
        rowptr, col = _csr_from_rows(n, torch.cat([rows, a]), torch.cat([col, b]))
    return rowptr, col, int(n_comp), torch.from_numpy(comp.astype(np.int64))


# ----------------------------------------------------------------------------- functional


def _check_params(n_clusters, distance_threshold, linkage, connectivity, n_neighbors, knn_backend) -> None:
    if (n_clusters is None) == (distance_threshold is None):
        raise ValueError("Exactly one of n_clusters and distance_threshold has to be set, and the other needs "
                         "to be None.")
    check_scalar(n_clusters, "n_clusters", kind=numbers.Integral, min_val=1, allow_none=True)
    check_scalar(distance_threshold, "distance_threshold", min_val=0.0, allow_none=True)
    if not isinstance(linkage, str) or linkage not in LINKAGES:
        raise ValueError(f"linkage should be one of {LINKAGES}, got {linkage!r}")
    if isinstance(connectivity, str) and connectivity != "knn":
        raise ValueError(f"connectivity should be 'knn', a callable or an [n, n] (sparse) matrix, got "
                         f"{connectivity!r}")
    if connectivity is None:
        raise ValueError("connectivity=None (the dense O(n^2) algorithm) is not supported: use 'knn', a "
                         "callable or an [n, n] (sparse) matrix, or sklearn.cluster.AgglomerativeClustering")
    check_scalar(n_neighbors, "n_neighbors", kind=numbers.Integral, min_val=1)
    if knn_backend not in KNN_BACKENDS:
        raise ValueError(f"knn_backend should be one of {KNN_BACKENDS}, got {knn_backend!r}")


def _check_range(x: torch.Tensor) -> None:
    if x.numel() == 0:
        return
    limit = math.sqrt(torch.finfo(torch.float64).max / x.shape[1]) / 2
    amax = float(x.abs().max())
    if amax > limit:
        raise ValueError(f"X has values up to {amax:g} in magnitude; squared distances between points would "
                         f"overflow float64 (limit {limit:g} for {x.shape[1]} features). Rescale X.")


def _numeric(X: Any) -> Any:
    """Object and string arrays through scikit-learn's conversion (and its error messages)."""
    if is_tensor_like(X) or sp.issparse(X):
        return X
    arr = np.asarray(X)
    if arr.dtype.kind in "biufc":
        return arr
    return check_array(arr, dtype="numeric", ensure_2d=False, allow_nd=True, ensure_min_samples=0,
                       ensure_all_finite=False)


def _agglomerative_tree(
    X: Any,
    *,
    n_clusters: int | None = 2,
    distance_threshold: float | None = None,
    linkage: str = "ward",
    connectivity: str | Callable | Any = "knn",
    n_neighbors: int = 10,
    knn_backend: str = "auto",
) -> tuple[AgglomerativeTree, torch.Tensor]:
    _check_params(n_clusters, distance_threshold, linkage, connectivity, n_neighbors, knn_backend)
    x = check_points(_numeric(X), "X", min_samples=2)
    _check_range(x)
    n = x.shape[0]
    if n_clusters is not None and n_clusters > n:
        raise ValueError(f"Cannot provide more clusters than samples. {n_clusters} n_clusters was asked, and "
                         f"there are {n} samples.")
    rowptr, col, n_comp, comp = _graph(x, connectivity, int(n_neighbors), knn_backend)
    stop = 1 if distance_threshold is not None else int(n_clusters)
    t0 = time.perf_counter()
    children, distances = ops.agglomerative_tree(x.detach().cpu(), rowptr, col, linkage, stop)
    log.debug("agglomerative_tree n=%d edges=%d linkage=%s: %.3fs", n, col.numel(), linkage,
              time.perf_counter() - t0)
    if children.shape[0] != n - stop:  # pragma: no cover - the completed graph is connected
        raise RuntimeError(f"agglomerative_tree made {children.shape[0]} merges, expected {n - stop}")
    if distance_threshold is not None:
        k = int((distances >= distance_threshold).sum()) + 1
    else:
        k = int(n_clusters)
    labels = ops.agglomerative_labels(children, n, n - k)
    if n_comp > 1 and _joins_components(labels, comp, k):
        warnings.warn(
            f"the connectivity graph has {n_comp} connected components. It was completed with an edge between "
            "the closest points of every two components (as scikit-learn does), and some of the clusters found "
            "join points of different components along these edges. Increase n_neighbors for a connected graph.",
            stacklevel=3,  # the caller of agglomerative() or of fit()
        )
    return AgglomerativeTree(labels, children, distances, k, n_comp), x


def _joins_components(labels: torch.Tensor, comp: torch.Tensor, k: int) -> bool:
    """Whether a cluster holds points of two components of the graph (then completing the graph
    changed the result: without the added edges, no merge could have joined them)."""
    lo = torch.full((k,), comp.numel(), dtype=torch.long).scatter_reduce(0, labels, comp, "amin")
    hi = torch.full((k,), -1, dtype=torch.long).scatter_reduce(0, labels, comp, "amax")
    return bool((lo != hi).any())


def agglomerative(
    X: Any,
    *,
    n_clusters: int | None = 2,
    distance_threshold: float | None = None,
    linkage: str = "ward",
    connectivity: str | Callable | Any = "knn",
    n_neighbors: int = 10,
    knn_backend: str = "auto",
) -> torch.Tensor:
    """Agglomerative clustering along the edges of a sparse graph; torch in, torch out.

    Every point starts as a cluster; the two clusters joined by a graph edge whose linkage
    distance is smallest merge, until ``n_clusters`` remain, or (``distance_threshold``) the
    tree is complete and cut as scikit-learn cuts it: ``n_clusters = 1 + number of merges at
    distance >= distance_threshold``, undoing the last merges. Linkages, as scikit-learn's
    structured trees: "ward" (increase of the within-cluster sum of squares, reported as
    ``sqrt(2 * increase)``), "average" and "complete" (Euclidean edge lengths combined
    size-weighted, resp. by max, over the edges between the clusters), "single" (shortest
    edge). The graph is undirected (symmetrised); a graph with several connected components is
    completed as scikit-learn does: one edge between the closest two points of every pair of
    components. A warning says so when that changed the result, i.e. when a cluster found joins
    points of different components (scikit-learn warns on every fit of a disconnected graph).

    Args:
        X: [n, d] points (numpy, torch or DLPack array), n >= 2; finite.
        n_clusters: clusters to find (None when ``distance_threshold`` is set).
        distance_threshold: linkage distance at or above which clusters are not merged.
        linkage: "ward" | "complete" | "average" | "single".
        connectivity: "knn" (the ``n_neighbors`` nearest other points of every point,
            symmetrised; ``min(n_neighbors, n - 1)`` when n is small), a callable
            ``f(X numpy [n, d]) -> [n, n] matrix``, or an [n, n] (scipy sparse, numpy, torch)
            matrix whose non-zeros are the edges.
        n_neighbors: neighbours per point of the kNN graph.
        knn_backend: "auto" | "pst" | "kdtree" | "faiss", see :func:`pst.cluster._knn.knn_graph`.

    Returns:
        labels [n] int64 on X's device, clusters numbered 0..K-1 in the order of their first point.

    On a CUDA X, the kNN graph is computed on the device (``knn_backend="auto"`` or ``"pst"``);
    completing a disconnected graph and the merging itself are a host step (the merge is
    sequential): the ops ``agglomerative_tree`` / ``agglomerative_labels`` are registered for
    CUDA tensors too, and copy them to the host and the results back.
    """
    with capped_threads():
        tree, x = _agglomerative_tree(X, n_clusters=n_clusters, distance_threshold=distance_threshold,
                                      linkage=linkage, connectivity=connectivity, n_neighbors=n_neighbors,
                                      knn_backend=knn_backend)
    return tree.labels.to(x.device)


# ----------------------------------------------------------------------------- estimator


class AgglomerativeClustering(ClusterMixin, BaseEstimator):
    """Agglomerative clustering with a sparse k-nearest-neighbour connectivity.

    :class:`sklearn.cluster.AgglomerativeClustering` with ``connectivity=kneighbors_graph(X,
    n_neighbors)`` and the same results for the same graph, in memory and time linear in the
    number of graph edges (the graph itself is an exact kNN search: pst's compiled op, a
    kd-tree in up to 16 dimensions, or scipy's cKDTree or faiss on request). See :func:`agglomerative` for the parameters.

    Attributes:
        labels_: [n] int64 numpy array.
        n_clusters_: number of clusters found.
        n_leaves_: n.
        n_connected_components_: components of the connectivity graph before completion.
        children_: [M, 2] int64 numpy array of the merges done (scikit-learn's node ids; the
            full tree, M = n - 1, when ``distance_threshold`` is set, else M = n - n_clusters).
        distances_: [M] float64 numpy array, the linkage distance of every merge.
        n_features_in_: d.
        feature_names_in_: the column names, after fitting a DataFrame with string column names.

    Ctrl-C stops a fit within a fraction of a second (KeyboardInterrupt).
    """

    def __init__(
        self,
        *,
        n_clusters: int | None = 2,
        distance_threshold: float | None = None,
        linkage: str = "ward",
        connectivity: str | Callable | Any = "knn",
        n_neighbors: int = 10,
        knn_backend: str = "auto",
    ):
        self.n_clusters = n_clusters
        self.distance_threshold = distance_threshold
        self.linkage = linkage
        self.connectivity = connectivity
        self.n_neighbors = n_neighbors
        self.knn_backend = knn_backend

    def fit(self, X, y=None):
        """Cluster X ([n, d], numpy, torch or DLPack array or DataFrame, n >= 2). Returns self."""
        with capped_threads():
            tree, x = _agglomerative_tree(X, n_clusters=self.n_clusters,
                                          distance_threshold=self.distance_threshold, linkage=self.linkage,
                                          connectivity=self.connectivity, n_neighbors=self.n_neighbors,
                                          knn_backend=self.knn_backend)
        check_feature_names(self, X, reset=True)
        self.n_features_in_ = x.shape[1]
        self.n_leaves_ = x.shape[0]
        self.labels_ = to_numpy(tree.labels)
        self.children_ = to_numpy(tree.children)
        self.distances_ = to_numpy(tree.distances)
        self.n_clusters_ = tree.n_clusters
        self.n_connected_components_ = tree.n_connected_components
        return self

    def fit_predict(self, X, y=None):
        """Fit and return ``labels_`` ([n] int64 numpy array)."""
        return self.fit(X).labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
