"""AgglomerativeClustering on a sparse kNN graph: the kNN op against torch.cdist + topk, the
clustering against scikit-learn's AgglomerativeClustering given the same connectivity."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import AgglomerativeClustering as SkAgglomerative
from sklearn.datasets import make_blobs
from sklearn.neighbors import kneighbors_graph
from sklearn.utils.estimator_checks import parametrize_with_checks

from pst._ops import ops
from pst.cluster._knn import _faiss, knn_graph
from pst.cluster.agglomerative import AgglomerativeClustering, agglomerative

LINKAGES = ["ward", "average", "complete", "single"]
HAS_FAISS = _faiss() is not None


def same_partition(a, b) -> bool:
    """True when two labelings are equal up to a renaming of the labels (ARI == 1)."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        return False
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def knn_reference(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances by exact differences in float64, self excluded, smallest k."""
    d = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist") ** 2
    d.fill_diagonal_(float("inf"))
    return d.topk(k, dim=1, largest=False)


def csr_of(idx: torch.Tensor, n: int) -> sp.csr_matrix:
    k = idx.shape[1]
    return sp.csr_matrix((np.ones(n * k), idx.cpu().numpy().ravel(), np.arange(0, n * k + 1, k)), shape=(n, n))


def sk_fit(x, conn, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SkAgglomerative(connectivity=conn, **kw).fit(x)


@pytest.fixture(scope="module")
def generic():
    return np.random.default_rng(3).normal(size=(350, 5))


# ----------------------------------------------------------------------------- knn graph


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,d,k", [(2, 1, 1), (37, 3, 5), (300, 8, 10), (1100, 17, 4)])
def test_knn_op_matches_cdist_topk(device, dtype, n, d, k):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64).to(dtype)
    dist, idx = ops.knn_graph(x.to(device), k) if device == "cpu" else knn_graph(x.to(device), k, backend="pst")
    assert dist.device.type == device and dist.dtype == dtype and idx.dtype == torch.long
    rd, ri = knn_reference(x, k)
    torch.testing.assert_close(dist.cpu().double(), rd, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    assert torch.equal(idx.cpu(), ri)


def test_knn_op_ties_go_to_lower_index():
    # integer grid with duplicates: many equal distances
    g = torch.tensor([[i % 4, (i // 4) % 3] for i in range(30)], dtype=torch.float64)
    dist, idx = ops.knn_graph(g, 6)
    for i in range(g.shape[0]):
        ref = sorted((float(((g[i] - g[j]) ** 2).sum()), j) for j in range(g.shape[0]) if j != i)[:6]
        assert idx[i].tolist() == [j for _, j in ref]
        assert dist[i].tolist() == [v for v, _ in ref]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
def test_knn_op_tree_matches_brute_force(dtype, threads):
    """Up to 16 columns the CPU op searches a kd-tree, above it scans everything. Zero columns
    appended add exact zeros to every squared distance, so both must return the same bits, ties
    included: points of a coarse grid (many duplicates and equal distances), Gaussian ones, and
    more equal rows than a leaf holds (the tree cannot split them)."""
    g = torch.Generator().manual_seed(7)
    x = torch.cat([torch.randint(0, 5, (3000, 3), generator=g).double(),
                   torch.randn(3000, 3, generator=g, dtype=torch.float64),
                   torch.full((700, 3), 0.25, dtype=torch.float64)]).to(dtype)  # a leaf of 700 equal rows
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dist, idx = ops.knn_graph(x, 12)
        bdist, bidx = ops.knn_graph(torch.cat([x, torch.zeros(x.shape[0], 14, dtype=dtype)], 1), 12)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(idx, bidx) and torch.equal(dist, bdist)
    # and the grid part against a reference sorted by (distance, index)
    grid = x[:1500].double()
    d = ((grid.unsqueeze(1) - grid.unsqueeze(0)) ** 2).sum(-1)  # exact on integers
    d.fill_diagonal_(float("inf"))
    ref = d.sort(dim=1, stable=True).indices[:, :12]
    _, gidx = ops.knn_graph(x[:1500], 12)
    assert torch.equal(gidx, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_knn_kdtree_backend_matches_reference(dtype):
    x = torch.randn(500, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    dist, idx = knn_graph(x, 9, backend="kdtree")
    rd, ri = knn_reference(x, 9)
    assert dist.dtype == dtype and torch.equal(idx, ri)
    torch.testing.assert_close(dist.double(), rd, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    # duplicates: never itself
    _, idx = knn_graph(torch.zeros(12, 2), 4, backend="kdtree")
    assert not bool((idx == torch.arange(12).unsqueeze(1)).any())


@pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")
def test_knn_faiss_backend_matches_reference():
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1e3
    dist, idx = knn_graph(x, 8, backend="faiss")
    rd, ri = knn_reference(x, 8)
    # faiss ranks in float32 (after centring): same neighbours, distances recomputed in float64
    torch.testing.assert_close(dist, rd, rtol=1e-9, atol=0)
    assert (idx == ri).float().mean() > 0.99


@pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")
def test_knn_faiss_never_returns_self_with_duplicates():
    x = torch.zeros(20, 2, dtype=torch.float64)
    x[10:] = 1.0
    _, idx = knn_graph(x, 5, backend="faiss")
    assert not bool((idx == torch.arange(20).unsqueeze(1)).any())
    assert bool(((idx >= 10) == (torch.arange(20) >= 10).unsqueeze(1)).all())  # duplicates first


def test_knn_op_bad_input():
    x = torch.randn(10, 3)
    with pytest.raises(RuntimeError, match=r"k should be at most N - 1 = 9"):
        ops.knn_graph(x, 10)
    with pytest.raises(RuntimeError, match=r"k should be >= 1, got 0"):
        ops.knn_graph(x, 0)
    with pytest.raises(RuntimeError, match=r"x should be a 2-D tensor \[N, D\], got shape \[10\]"):
        ops.knn_graph(x[:, 0], 2)
    with pytest.raises(RuntimeError, match=r"x should be float32 or float64, got Long"):
        ops.knn_graph(x.long(), 2)
    with pytest.raises(ValueError, match=r"k should be <= 9, got 10"):
        knn_graph(x, 10)
    with pytest.raises(ValueError, match=r"backend should be one of"):
        knn_graph(x, 2, backend="annoy")
    with pytest.raises(ValueError, match=r"Input X contains NaN"):
        knn_graph(torch.full((4, 2), float("nan")), 2)


# ----------------------------------------------------------------------------- compiled tree


def test_agglomerative_labels_matches_python_union_find():
    rng = np.random.default_rng(0)
    n = 40
    x = torch.from_numpy(rng.normal(size=(n, 2)))
    _, idx = ops.knn_graph(x, 4)
    children, _ = ops.agglomerative_tree(x, torch.arange(0, 4 * n + 1, 4), idx.reshape(-1), "average", 1)
    for n_merges in (0, 7, 25, n - 1):
        members = {i: {i} for i in range(n)}
        for m, (a, b) in enumerate(children[:n_merges].tolist()):
            members[n + m] = members.pop(a) | members.pop(b)
        ref = np.empty(n, dtype=np.int64)
        for lab, pts in enumerate(members.values()):
            ref[list(pts)] = lab
        got = ops.agglomerative_labels(children, n, n_merges).numpy()
        assert same_partition(got, ref)
        assert got[0] == 0 and set(got.tolist()) == set(range(n - n_merges))


def test_agglomerative_ops_bad_input():
    x = torch.randn(5, 2, dtype=torch.float64)
    rp = torch.tensor([0, 1, 2, 3, 4, 4])
    with pytest.raises(RuntimeError, match=r"linkage should be one of .* got 'median'"):
        ops.agglomerative_tree(x, rp, torch.tensor([1, 2, 3, 4]), "median", 1)
    with pytest.raises(RuntimeError, match=r"col should hold point indices in \[0, 5\), got 7"):
        ops.agglomerative_tree(x, rp, torch.tensor([1, 2, 7, 4]), "ward", 1)
    with pytest.raises(RuntimeError, match=r"rowptr should have N \+ 1 = 6 elements, got 5"):
        ops.agglomerative_tree(x, rp[:5], torch.tensor([1, 2, 3, 4]), "ward", 1)
    with pytest.raises(RuntimeError, match=r"rowptr\[-1\] should equal the number of col entries \(3\), got 4"):
        ops.agglomerative_tree(x, rp, torch.tensor([1, 2, 3]), "ward", 1)
    with pytest.raises(RuntimeError, match=r"n_clusters should be in \[1, N = 5\], got 0"):
        ops.agglomerative_tree(x, rp, torch.tensor([1, 2, 3, 4]), "ward", 0)
    with pytest.raises(RuntimeError, match=r"should name two clusters that exist"):
        ops.agglomerative_labels(torch.tensor([[0, 1], [0, 2]]), 5, 2)
    with pytest.raises(RuntimeError, match=r"n_merges should be in \[0, M = 2\], got 3"):
        ops.agglomerative_labels(torch.tensor([[0, 1], [2, 3]]), 5, 3)


def test_agglomerative_tree_stops_on_disconnected_graph():
    x = torch.randn(6, 2, dtype=torch.float64)
    # edges 0-1, 2-3 only: 2 merges possible
    children, dist = ops.agglomerative_tree(x, torch.tensor([0, 1, 1, 2, 2, 2, 2]), torch.tensor([1, 3]),
                                            "ward", 1)
    assert children.tolist() in ([[0, 1], [2, 3]], [[2, 3], [0, 1]])
    assert dist.shape == (2,)


# ----------------------------------------------------------------------------- parity with scikit-learn


@pytest.mark.parametrize("linkage", ["ward", "average", "complete"])
def test_full_tree_matches_sklearn_many_merges(linkage):
    """A graph large enough that most heap entries go stale and the heap is compacted many times:
    the whole tree (merge order, distances) stays scikit-learn's."""
    x = np.random.default_rng(11).normal(size=(3000, 4))
    conn = kneighbors_graph(x, 10, include_self=False)
    sk = sk_fit(x, conn, n_clusters=None, distance_threshold=0.0, linkage=linkage)
    ours = AgglomerativeClustering(n_clusters=None, distance_threshold=0.0, linkage=linkage, connectivity=conn).fit(x)
    np.testing.assert_array_equal(ours.children_, np.sort(sk.children_, axis=1))
    np.testing.assert_allclose(ours.distances_, sk.distances_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("linkage", LINKAGES)
@pytest.mark.parametrize("n_clusters", [2, 9, 80])
def test_matches_sklearn_same_graph(generic, linkage, n_clusters):
    x = generic
    _, idx = ops.knn_graph(torch.from_numpy(x), 7)
    sk = sk_fit(x, csr_of(idx, len(x)), n_clusters=n_clusters, linkage=linkage)
    ours = AgglomerativeClustering(n_clusters=n_clusters, linkage=linkage, n_neighbors=7, knn_backend="pst").fit(x)
    assert same_partition(ours.labels_, sk.labels_)
    assert ours.n_clusters_ == n_clusters and ours.labels_.max() == n_clusters - 1


@pytest.mark.parametrize("linkage", LINKAGES)
@pytest.mark.parametrize("threshold", [0.0, 0.6, 2.5, 1e9])
def test_matches_sklearn_distance_threshold(generic, linkage, threshold):
    x = generic
    conn = kneighbors_graph(x, 6, include_self=False)  # sklearn's own graph: same edges on generic data
    sk = sk_fit(x, conn, n_clusters=None, distance_threshold=threshold, linkage=linkage)
    ours = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, linkage=linkage, n_neighbors=6,
                                   knn_backend="pst").fit(x)
    assert ours.n_clusters_ == sk.n_clusters_
    assert same_partition(ours.labels_, sk.labels_)
    # the whole tree: same merges in the same order, same distances
    np.testing.assert_array_equal(ours.children_, np.sort(sk.children_, axis=1))
    np.testing.assert_allclose(ours.distances_, sk.distances_, rtol=1e-12, atol=1e-12)


def joins_components(labels, conn) -> bool:
    """Whether a cluster holds points of two connected components of the graph conn."""
    _, comp = connected_components(conn, directed=False)
    return any(len(set(comp[labels == c].tolist())) > 1 for c in set(labels.tolist()))


@pytest.mark.parametrize("linkage", LINKAGES)
def test_disconnected_graph_completed_like_sklearn(linkage):
    """Same clusters as scikit-learn; the warning comes exactly when completing the graph changed
    the clusters (one of them joins two components), not on every fit as scikit-learn's."""
    x, _ = make_blobs(500, n_features=3, centers=5, cluster_std=0.3, random_state=0)
    conn = kneighbors_graph(x, 3, include_self=False)
    seen = set()
    for kw in ({"n_clusters": 8}, {"n_clusters": 1}, {"n_clusters": None, "distance_threshold": 2.0},
               {"n_clusters": None, "distance_threshold": 0.5}):
        sk = sk_fit(x, conn, linkage=linkage, **kw)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours = AgglomerativeClustering(linkage=linkage, n_neighbors=3, knn_backend="pst", **kw).fit(x)
        assert ours.n_connected_components_ == sk.n_connected_components_ > 1
        assert ours.n_clusters_ == sk.n_clusters_
        assert same_partition(ours.labels_, sk.labels_)
        warned = [w for w in caught if "connected components" in str(w.message)]
        expected = joins_components(sk.labels_, conn)
        assert len(warned) == int(expected), (kw, [str(w.message) for w in caught])
        if warned:
            assert f"has {sk.n_connected_components_} connected components" in str(warned[0].message)
            assert warned[0].filename == __file__  # points at the caller's fit()
        seen.add(expected)
    assert seen == {True, False}  # both cases were exercised


@pytest.mark.parametrize("backend", ["auto", "kdtree", "pst", pytest.param("faiss", marks=pytest.mark.skipif(
    not HAS_FAISS, reason="needs faiss"))])
def test_default_graph_matches_sklearn_kneighbors_graph(generic, backend):
    x = generic
    sk = sk_fit(x, kneighbors_graph(x, 10, include_self=False), n_clusters=6)  # ward
    assert same_partition(agglomerative(x, n_clusters=6, knn_backend=backend).numpy(), sk.labels_)


def test_user_connectivity_forms(generic):
    x = generic[:120]
    conn = kneighbors_graph(x, 5, include_self=False)
    ref = sk_fit(x, conn, n_clusters=4, linkage="average").labels_
    for c in (conn, conn.toarray(), torch.from_numpy(conn.toarray()), conn.T.tocoo(),
              lambda X: kneighbors_graph(X, 5, include_self=False)):
        got = agglomerative(x, n_clusters=4, linkage="average", connectivity=c)
        assert same_partition(got.numpy(), ref)


def test_input_types_and_device(device, generic):
    x = generic[:200]
    ref = agglomerative(x, n_clusters=5).numpy()
    for xx in (x.astype(np.float32), torch.from_numpy(x).to(device), x.tolist(),
               np.asfortranarray(x), torch.from_numpy(x).to(device).T.contiguous().T):
        labels = agglomerative(xx, n_clusters=5)
        assert labels.dtype == torch.long and labels.shape == (200,)
        if isinstance(xx, torch.Tensor):
            assert labels.device == xx.device
        assert same_partition(labels.cpu().numpy(), ref)
    est = AgglomerativeClustering(n_clusters=5)
    assert est.fit(torch.from_numpy(x).to(device)) is est
    assert same_partition(est.labels_, ref) and isinstance(est.labels_, np.ndarray)
    np.testing.assert_array_equal(est.fit_predict(x), est.labels_)


def test_small_inputs():
    # n_neighbors larger than n - 1 is clipped; n == n_clusters gives singletons
    x = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    assert agglomerative(x, n_clusters=2).tolist() == [0, 0, 1]
    assert agglomerative(x, n_clusters=3).tolist() == [0, 1, 2]
    assert agglomerative(x[:2], n_clusters=1, linkage="single").tolist() == [0, 0]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("X,exc,match", [
    (np.zeros((1, 3)), ValueError, r"Found array with 1 sample\(s\) .* minimum of 2 is required"),
    (np.zeros((0, 3)), ValueError, r"Found array with 0 sample\(s\)"),
    (np.zeros(5), ValueError, r"Expected 2D array for X"),
    (np.zeros((4, 2, 2)), ValueError, r"Expected 2D array for X"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), ValueError, r"Input X contains NaN"),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), ValueError, r"Input X contains infinity"),
    (np.array([[0.0, 1e200], [1.0, 2.0]]), ValueError, r"X has values up to 1e\+200 in magnitude"),
    (np.array([["a", "b"], ["c", "d"]]), ValueError, r"dtype=.numeric. is not compatible with arrays of bytes/strings"),
    (np.array([[1.0, {"a": 1}], [1.0, 2.0]], dtype=object), TypeError, r"float\(\) argument must be"),
    (sp.csr_matrix(np.eye(3)), TypeError, r"sparse input is not supported"),
])
def test_bad_x(X, exc, match):
    with pytest.raises(exc, match=match):
        agglomerative(X, n_clusters=1)


@pytest.mark.parametrize("kw,exc,match", [
    ({"n_clusters": None}, ValueError, r"Exactly one of n_clusters and distance_threshold has to be set"),
    ({"n_clusters": 2, "distance_threshold": 1.0}, ValueError, r"Exactly one of n_clusters and distance_threshold"),
    ({"n_clusters": 0}, ValueError, r"n_clusters should be >= 1, got 0"),
    ({"n_clusters": 2.5}, TypeError, r"n_clusters should be Integral or None, got 2.5"),
    ({"n_clusters": 11}, ValueError, r"Cannot provide more clusters than samples. 11 n_clusters was asked, and "
                                     r"there are 10 samples."),
    ({"n_clusters": None, "distance_threshold": -1.0}, ValueError, r"distance_threshold should be >= 0.0, got -1.0"),
    ({"linkage": "median"}, ValueError, r"linkage should be one of \('ward', 'complete', 'average', 'single'\), "
                                        r"got 'median'"),
    ({"connectivity": "radius"}, ValueError, r"connectivity should be 'knn', a callable or an \[n, n\]"),
    ({"connectivity": None}, ValueError, r"connectivity=None \(the dense O\(n\^2\) algorithm\) is not supported"),
    ({"connectivity": np.eye(4)}, ValueError, r"Wrong shape for connectivity matrix: \(4, 4\) when X is \(10, 2\)"),
    ({"n_neighbors": 0}, ValueError, r"n_neighbors should be >= 1, got 0"),
    ({"knn_backend": "annoy"}, ValueError, r"knn_backend should be one of \('auto', 'kdtree', 'faiss', 'pst'\), got "),
])
def test_bad_params(kw, exc, match):
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(exc, match=match):
        agglomerative(x, **kw)
    with pytest.raises(exc, match=match):
        AgglomerativeClustering(**kw).fit(x)


def test_too_many_components():
    x = np.repeat(np.arange(2100, dtype=np.float64)[:, None] * 10.0, 2, axis=0)  # 2100 pairs of duplicates
    with pytest.raises(ValueError, match=r"has 2100 connected components \(more than 2000\)"):
        agglomerative(x, n_neighbors=1)


# ----------------------------------------------------------------------------- scikit-learn conformance


@parametrize_with_checks([AgglomerativeClustering(), AgglomerativeClustering(linkage="single", n_neighbors=5)])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.slow
@pytest.mark.parametrize("linkage", LINKAGES)
def test_matches_sklearn_larger(linkage):
    x, _ = make_blobs(6000, n_features=8, centers=12, cluster_std=2.5, random_state=5)
    conn = kneighbors_graph(x, 10, include_self=False)
    sk = sk_fit(x, conn, n_clusters=12, linkage=linkage)
    assert same_partition(agglomerative(x, n_clusters=12, linkage=linkage, knn_backend="pst").numpy(), sk.labels_)


def assert_closest_pairs(x: torch.Tensor, comp: torch.Tensor, n_comp: int) -> None:
    from pst.cluster.agglomerative import _component_links

    a, b = _component_links(x, comp, n_comp)
    assert a.numel() == n_comp * (n_comp - 1) // 2
    d = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    got = {(int(comp[i]), int(comp[j])): (int(i), int(j)) for i, j in zip(a, b)}
    for ci in range(1, n_comp):
        for cj in range(ci):
            block = d[comp == ci][:, comp == cj]
            r, c = np.unravel_index(int(block.argmin()), block.shape)
            ref = (int(torch.nonzero(comp == ci)[r]), int(torch.nonzero(comp == cj)[c]))
            assert got[(ci, cj)] == ref


@pytest.mark.parametrize("n_comp", [7, 90])  # kd-tree and brute-force completion
def test_component_links_are_closest_pairs(n_comp):
    rng = np.random.default_rng(n_comp)
    x = torch.from_numpy(rng.normal(size=(400, 3)))
    comp = torch.from_numpy(rng.integers(0, n_comp, 400))
    comp[:n_comp] = torch.arange(n_comp)  # every component non-empty
    assert_closest_pairs(x, comp, n_comp)


def test_component_links_separated_blobs():
    """Components far apart (the kd-tree path's bounds prune most points) and two that share a
    point (closest pair at distance 0)."""
    x, comp = make_blobs(600, n_features=6, centers=9, cluster_std=1.0, random_state=2)
    x[5] = x[np.flatnonzero(comp != comp[5])[0]]
    assert_closest_pairs(torch.from_numpy(x), torch.from_numpy(comp.astype(np.int64)), 9)
