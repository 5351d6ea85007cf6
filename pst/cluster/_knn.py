"""Exact k-nearest-neighbour graphs: pst's compiled op ``torch.ops.pst.knn_graph`` (on CPU a
kd-tree up to 16 features, brute force above; brute force on CUDA), scipy's cKDTree or faiss
(``IndexFlatL2``) on request.

The graph never contains a point as its own neighbour (scikit-learn's
``kneighbors_graph(..., include_self=False)``).
"""

from __future__ import annotations

import logging
import numbers
from typing import Any

import numpy as np
import torch

from pst._interrupt import interruptible_ops as ops  # every op call stops on Ctrl-C
from pst._ops import has_kernel
from pst._checks import check_points, check_scalar

log = logging.getLogger(__name__)

__all__ = ["knn_graph"]

KNN_BACKENDS = ("auto", "kdtree", "faiss", "pst")

KDTREE_QUERY_BLOCK = 1 << 14  # queries per cKDTree.query call


def _faiss():
    try:
        import faiss  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return None
    return faiss


def _drop_self(found: torch.Tensor, k: int) -> torch.Tensor:
    """[n, k + 1] hits of every point's own query -> [n, k] without the point itself (not always
    in front when points repeat; when it is missing, the farthest hit goes)."""
    n = found.shape[0]
    is_self = found == torch.arange(n).unsqueeze(1)
    drop = torch.where(is_self.any(1), is_self.to(torch.int8).argmax(1), torch.full((n,), k))
    keep = torch.ones_like(found, dtype=torch.bool)
    keep[torch.arange(n), drop] = False
    idx = found[keep].view(n, k)
    if bool((idx < 0).any()) or bool((idx >= n).any()):  # pragma: no cover - only when k + 1 > n
        raise RuntimeError("the kNN search returned fewer neighbours than asked")
    return idx


def _exact_order(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances to the found neighbours in x's dtype, neighbours sorted by them."""
    dist = (x.unsqueeze(1) - x[idx]).pow(2).sum(-1)
    dist, order = dist.sort(dim=1, stable=True)
    return dist, idx.gather(1, order)


def _knn_kdtree(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scipy cKDTree on float64 (exact distances; ties in the tree's order)."""
    from scipy.spatial import cKDTree  # noqa: PLC0415

    xd = x.to(torch.float64).numpy()
    tree = cKDTree(xd)
    workers = max(1, torch.get_num_threads())
    # in blocks of queries, so that Ctrl-C (handled between two blocks) stops a long search
    found = np.concatenate([tree.query(xd[i:i + KDTREE_QUERY_BLOCK], k=k + 1, workers=workers)[1]
                            for i in range(0, xd.shape[0], KDTREE_QUERY_BLOCK)])
    return _exact_order(x, _drop_self(torch.from_numpy(found.astype(np.int64)), k))


def _knn_faiss(faiss, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss IndexFlatL2 on the centred, rescaled points (float32: neighbour ranks are those of
    float32 distances; the returned squared distances are recomputed in x's dtype)."""
    xc = x.to(torch.float64)
    xc = xc - xc.mean(0)
    scale = float(xc.abs().max())
    if scale > 0:
        xc = xc / scale
    xf = np.ascontiguousarray(xc.to(torch.float32).numpy())
    index = faiss.IndexFlatL2(xf.shape[1])
    index.add(xf)
    _, found = index.search(xf, k + 1)
    return _exact_order(x, _drop_self(torch.from_numpy(found.astype(np.int64)), k))


def knn_graph(X: Any, k: int, *, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest other points of every point (exact).

    Args:
        X: [n, d] points (numpy, torch or DLPack array), n >= 2; integers become float64.
        k: neighbours per point, 1 <= k <= n - 1.
        backend: "pst" = the compiled op (float64 arithmetic, ties to the lower index; on CPU
            a kd-tree up to 16 features, brute force above, with the same results; runs on the
            input's device when pst has a kernel there, else on CPU); "kdtree" = scipy's
            cKDTree on CPU (float64; ties in the tree's order); "faiss" = faiss
            ``IndexFlatL2`` on CPU (ranks by float32 distances, so nearly tied neighbours can
            come in another order than in float64); "auto" = "pst".

    Returns:
        (sqdist [n, k] X's float dtype, ascending along each row; index [n, k] int64), on X's
        device.
    """
    x = check_points(X, "X", min_samples=2)
    check_scalar(k, "k", kind=numbers.Integral, min_val=1, max_val=x.shape[0] - 1)
    if backend not in KNN_BACKENDS:
        raise ValueError(f"backend should be one of {KNN_BACKENDS}, got {backend!r}")
    k = int(k)
    device = x.device
    if backend == "auto":
        backend = "pst"
    if backend == "faiss":
        faiss = _faiss()
        if faiss is None:
            raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)")
        dist, idx = _knn_faiss(faiss, x.cpu(), k)
        return dist.to(device), idx.to(device)
    if backend == "kdtree":
        dist, idx = _knn_kdtree(x.cpu(), k)
        return dist.to(device), idx.to(device)
    if device.type != "cpu" and not has_kernel("knn_graph", device.type.upper()):
        log.debug("knn_graph: no %s kernel, computing on CPU", device.type)
        dist, idx = ops.knn_graph(x.cpu(), k)
        return dist.to(device), idx.to(device)
    return ops.knn_graph(x, k)
