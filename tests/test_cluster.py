"""pst.cluster against scikit-learn and against plain numpy / torch references."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import cluster as skc
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import pst.cluster as pc
from pst._ops import ops


def same_partition(a, b) -> bool:
    """True when two labelings are equal up to a renaming of the labels."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.shape != b.shape:
        return False
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def blobs(n, d, centers, seed, std=1.0):
    X, y = make_blobs(n_samples=n, n_features=d, centers=centers, cluster_std=std, random_state=seed)
    return X, y


# ----------------------------------------------------------------------------- MeanShift


@pytest.mark.parametrize("d", [1, 2, 3, 8])
@pytest.mark.parametrize("kw", [
    dict(bin_seeding=True),
    dict(bin_seeding=False),
    dict(bin_seeding=True, cluster_all=False),
    dict(bin_seeding=True, min_bin_freq=5),
    dict(bin_seeding=True, max_iter=2),
])
def test_mean_shift_matches_sklearn(d, kw):
    X, _ = blobs(600, d, 4, seed=d)
    bw = skc.estimate_bandwidth(X, quantile=0.15)
    ref = skc.MeanShift(bandwidth=bw, **kw).fit(X)
    got = pc.MeanShift(bandwidth=bw, **kw).fit(X)
    assert got.cluster_centers_.shape == ref.cluster_centers_.shape
    np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    assert got.n_iter_ == ref.n_iter_


def test_mean_shift_float32_and_torch_input_and_seeds():
    X, _ = blobs(500, 3, 3, seed=7)
    bw = 1.5
    seeds = X[::25]
    ref = skc.MeanShift(bandwidth=bw, seeds=seeds).fit(X)
    got = pc.MeanShift(bandwidth=bw, seeds=torch.from_numpy(seeds)).fit(torch.from_numpy(X))
    np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, atol=1e-9)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    # float32 keeps float32 and gives the same partition
    got32 = pc.MeanShift(bandwidth=bw, seeds=seeds).fit(X.astype(np.float32))
    assert got32.cluster_centers_.dtype == np.float32
    assert same_partition(got32.labels_, ref.labels_)
    np.testing.assert_array_equal(got.predict(X), got.labels_)


def test_mean_shift_functional_stays_on_device_and_dtype():
    X, _ = blobs(300, 2, 3, seed=1)
    x = torch.from_numpy(X).float()
    centers, labels, n_iter = pc.mean_shift(x, bandwidth=1.5, bin_seeding=True)
    assert centers.dtype == torch.float32 and labels.dtype == torch.int64
    assert centers.device == x.device and labels.shape == (300,)
    assert n_iter >= 1


def test_mean_shift_plus_merges_like_a_python_loop():
    # two blobs whose modes lie 1.2 apart, far from a third: mean-shift finds 3 modes
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.15, (200, 2)), rng.normal([1.2, 0], 0.15, (150, 2)),
                        rng.normal([6, 6], 0.15, (100, 2))])
    bw = 0.5
    ref = skc.MeanShift(bandwidth=bw, bin_seeding=True).fit(X)
    assert len(ref.cluster_centers_) == 3
    # reference "mean-shift+": clusters by size, largest first; merge into a kept one within distance
    sizes = np.bincount(ref.labels_)
    order = sorted(range(len(sizes)), key=lambda k: -sizes[k])
    kept, owner = [], {}
    for k in order:
        dists = [np.linalg.norm(ref.cluster_centers_[k] - ref.cluster_centers_[j]) for j in kept]
        close = [(dd, j) for dd, j in zip(dists, kept) if dd <= 1.5]
        if close:
            owner[k] = min(close)[1]
        else:
            kept.append(k)
            owner[k] = k
    expected = np.array([owner[k] for k in ref.labels_])
    got = pc.MeanShift(bandwidth=bw, bin_seeding=True, merge_distance=1.5).fit(X)
    assert len(got.cluster_centers_) == 2
    assert same_partition(got.labels_, expected)
    np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_[kept], atol=1e-9)


def test_estimate_bandwidth_matches_sklearn():
    X, _ = blobs(700, 5, 4, seed=3)
    for q, ns in [(0.3, None), (0.05, None), (0.2, 300), (0.0, None)]:
        ref = skc.estimate_bandwidth(X, quantile=q, n_samples=ns, random_state=0)
        got = pc.estimate_bandwidth(X, quantile=q, n_samples=ns, random_state=0)
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_get_bin_seeds_matches_sklearn():
    from sklearn.cluster._mean_shift import get_bin_seeds as sk_bins

    X, _ = blobs(500, 3, 4, seed=2)
    for size, freq in [(1.0, 1), (0.7, 3), (2.5, 1)]:
        ref = sk_bins(X, size, freq)
        got = pc.get_bin_seeds(X, size, freq).numpy()
        assert sorted(map(tuple, ref.tolist())) == sorted(map(tuple, got.tolist()))


def test_mean_shift_bad_input():
    X, _ = blobs(50, 2, 2, seed=0)
    with pytest.raises(ValueError, match="bandwidth should be > 0.0"):
        pc.MeanShift(bandwidth=0.0).fit(X)
    with pytest.raises(ValueError, match="bandwidth should be > 0.0"):
        pc.MeanShift(bandwidth=-1.0).fit(X)
    with pytest.raises(TypeError, match="bandwidth should be Real"):
        pc.MeanShift(bandwidth="1").fit(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN"):
        pc.MeanShift(bandwidth=1.0).fit(bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="contains infinity"):
        pc.MeanShift(bandwidth=1.0).fit(bad)
    with pytest.raises(ValueError, match="Expected 2D array"):
        pc.MeanShift(bandwidth=1.0).fit(X[:, 0])
    with pytest.raises(ValueError, match="0 sample"):
        pc.MeanShift(bandwidth=1.0).fit(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="seeds should have 2 features"):
        pc.MeanShift(bandwidth=1.0, seeds=np.zeros((3, 3))).fit(X)
    with pytest.raises(ValueError, match="No point was within bandwidth"):
        pc.MeanShift(bandwidth=0.01, seeds=np.full((2, 2), 100.0)).fit(X)
    with pytest.raises(ValueError, match="No bin has min_bin_freq=1000"):
        pc.MeanShift(bandwidth=1.0, bin_seeding=True, min_bin_freq=1000).fit(X)
    with pytest.raises(ValueError, match="features, but MeanShift is expecting 2"):
        pc.MeanShift(bandwidth=1.0).fit(X).predict(np.zeros((3, 5)))
    # huge but finite values work (scikit-learn's float32 bin seeds overflow there)
    got = pc.MeanShift(bandwidth=1e150, bin_seeding=True).fit(X * 1e150)
    ref = skc.MeanShift(bandwidth=1.0, bin_seeding=True).fit(X)
    assert same_partition(got.labels_, ref.labels_)


def test_mean_shift_one_sample_and_duplicates():
    got = pc.MeanShift(bandwidth=1.0).fit(np.array([[1.0, 2.0]]))
    np.testing.assert_array_equal(got.labels_, [0])
    X = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 10, axis=0)
    ref = skc.MeanShift(bandwidth=1.0).fit(X)
    got = pc.MeanShift(bandwidth=1.0).fit(X)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_)


# ----------------------------------------------------------------------------- MeanShift++


def grid_mean_shift_reference(X, h, max_iter=300, tol=None):
    """Plain numpy MeanShift++: every point moves to the mean of the points whose cell is
    within one cell of its own in every coordinate; clusters = cells of the last pass."""
    tol = 1e-3 * h if tol is None else tol
    p = X.astype(np.float64).copy()
    for _ in range(max_iter):
        cells = np.floor(p / h).astype(np.int64)
        near = (np.abs(cells[:, None, :] - cells[None, :, :]) <= 1).all(-1)
        new = near @ p / near.sum(1, keepdims=True)
        shift = np.sqrt(((new - p) ** 2).sum(1)).max()
        p = new
        if shift <= tol:
            break
    _, labels = np.unique(cells, axis=0, return_inverse=True)
    return labels.ravel(), p


@pytest.mark.parametrize("d", [2, 3, 5])
def test_grid_mean_shift_matches_numpy_reference(d):
    X, _ = blobs(400, d, 4, seed=10 + d, std=0.8)
    h = 1.3
    ref_labels, ref_pos = grid_mean_shift_reference(X, h)
    got = pc.MeanShiftPP(cell_size=h).fit(X)
    assert same_partition(got.labels_, ref_labels)
    np.testing.assert_allclose(got.cluster_centers_[got.labels_], ref_pos, atol=1e-9)
    # most populated first
    sizes = np.bincount(got.labels_)
    assert (np.diff(sizes) <= 0).all()


@pytest.mark.parametrize("d", [16, 32, 64])
def test_grid_mean_shift_high_dimensions(d):
    X, y = blobs(3000, d, 5, seed=d, std=0.5)
    got = pc.MeanShiftPP(cell_size=2.0).fit(X)
    assert adjusted_rand_score(y, got.labels_) > 0.99


@pytest.mark.parametrize("d,n", [(2, 1000), (2, 20000), (3, 1000), (3, 20000)])
def test_mean_shift_pp_default_cell_close_to_sklearn(d, n):
    """MeanShiftPP(bandwidth=bw) with its defaults (fine cell, refined at d <= 3): ARI against
    the truth within 0.05 of scikit-learn's MeanShift(bandwidth=bw, bin_seeding=True) on the
    blobs of `pst bench cluster` (overlapping at d = 2-3; the grid alone gives 0.79 against 0.88
    at d = 2, n = 1e3)."""
    X, y = make_blobs(n_samples=n, n_features=d, centers=10, random_state=0)
    bw = pc.estimate_bandwidth(X, quantile=0.05, n_samples=5000, random_state=0)
    sk = skc.MeanShift(bandwidth=bw, bin_seeding=True).fit(X)
    got = pc.MeanShiftPP(bandwidth=bw).fit(X)
    assert got.cell_size_ == pytest.approx(bw / 2.5)
    assert got.n_refine_iter_ > 0
    ari_sk, ari_pst = adjusted_rand_score(y, sk.labels_), adjusted_rand_score(y, got.labels_)
    assert ari_pst >= ari_sk - 0.05, (ari_pst, ari_sk)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_mean_shift_pp_refine_is_exact_mean_shift_from_grid_modes(d):
    """refine=True: scikit-learn's MeanShift seeded with the grid's modes gives the same
    partition and centres."""
    X, _ = make_blobs(n_samples=1500, n_features=d, centers=6, cluster_std=1.5, random_state=d)
    bw = 1.8
    grid = pc.MeanShiftPP(bandwidth=bw, refine=False).fit(X)
    got = pc.MeanShiftPP(bandwidth=bw, refine=True).fit(X)
    sk = skc.MeanShift(bandwidth=bw, seeds=grid.cluster_centers_).fit(X)
    assert same_partition(got.labels_, sk.labels_)
    np.testing.assert_allclose(got.cluster_centers_[got.labels_], sk.cluster_centers_[sk.labels_], atol=1e-6)
    assert grid.n_refine_iter_ == 0 and got.n_refine_iter_ > 0


def test_mean_shift_pp_refine_auto_rule():
    """auto refines only the default cell at d <= 3; a given cell_size is the grid alone."""
    X, _ = make_blobs(n_samples=600, n_features=2, centers=4, random_state=1)
    assert pc.MeanShiftPP(bandwidth=1.0).fit(X).n_refine_iter_ > 0
    assert pc.MeanShiftPP(cell_size=0.4).fit(X).n_refine_iter_ == 0
    X4, _ = make_blobs(n_samples=600, n_features=4, centers=4, random_state=1)
    assert pc.MeanShiftPP(bandwidth=1.0).fit(X4).n_refine_iter_ == 0
    with pytest.raises(ValueError, match="refine should be True, False or 'auto', got 'yes'"):
        pc.MeanShiftPP(bandwidth=1.0, refine="yes").fit(X)


def test_grid_mean_shift_segments_equal_separate_calls():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)) * 2 for n in (50, 0, 120, 1)]
    x = torch.from_numpy(np.concatenate(parts))
    offsets = torch.tensor(np.cumsum([0] + [len(p) for p in parts]))
    modes, weights, mseg, labels, _ = ops.grid_mean_shift(x, offsets, 0.9, 300, 1e-4)
    for g, part in enumerate(parts):
        lo, hi = int(offsets[g]), int(offsets[g + 1])
        if hi == lo:
            continue
        m1, w1, _, l1, _ = ops.grid_mean_shift(torch.from_numpy(part), torch.tensor([0, hi - lo]), 0.9, 300, 1e-4)
        assert (mseg[labels[lo:hi]] == g).all()
        assert same_partition(labels[lo:hi].numpy(), l1.numpy())
        torch.testing.assert_close(modes[labels[lo:hi]], m1[l1], rtol=0, atol=1e-9)
    assert int(weights.sum()) == x.shape[0]


def test_grid_mean_shift_bad_input():
    with pytest.raises(ValueError, match="bandwidth should be > 0.0"):
        pc.MeanShiftPP(bandwidth=0.0).fit(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="cell_size should be > 0.0"):
        pc.MeanShiftPP(cell_size=-1.0).fit(np.zeros((5, 2)))
    with pytest.raises(RuntimeError, match="int32 range"):
        pc.MeanShiftPP(bandwidth=1e-300).fit(np.ones((5, 2)))
    with pytest.raises(ValueError, match="contains NaN"):
        pc.MeanShiftPP(bandwidth=1.0).fit(np.array([[0.0, np.nan], [1, 1]]))


# ----------------------------------------------------------------------------- scikit-learn API


@parametrize_with_checks([pc.MeanShift(bandwidth=2.0), pc.MeanShift(), pc.MeanShiftPP(bandwidth=0.5), pc.MeanShiftPP(),
                          pc.MeanShiftPP(cell_size=0.3)])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


ESTIMATORS = [pc.MeanShift(bandwidth=2.0), pc.MeanShiftPP(bandwidth=0.5), pc.AgglomerativeClustering()]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_dataframe_column_names_checked_like_sklearn(estimator):
    """scikit-learn's own check (parametrize_with_checks leaves it out for estimators outside
    sklearn), then the three cases against scikit-learn's MeanShift as the reference."""
    pd = pytest.importorskip("pandas")
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency

    check_dataframe_column_names_consistency(type(estimator).__name__, clone(estimator))

    X = np.random.default_rng(0).normal(size=(60, 3)) * 3
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    renamed = df.rename(columns={"b": "z"})
    for est in (clone(estimator), skc.MeanShift(bandwidth=2.0)):
        est.fit(df)
        np.testing.assert_array_equal(est.feature_names_in_, np.array(["a", "b", "c"], dtype=object))
        assert est.n_features_in_ == 3
        if not hasattr(est, "predict"):  # AgglomerativeClustering: fit and attributes only
            est.fit(X)
            assert not hasattr(est, "feature_names_in_")
            continue
        with pytest.raises(ValueError, match="The feature names should match those that were passed during fit"):
            est.predict(renamed)
        est.fit(X)
        assert not hasattr(est, "feature_names_in_")
        with pytest.warns(UserWarning, match="X has feature names, but .* was fitted without feature names"):
            est.predict(df)
        est.fit(df)
        with pytest.warns(UserWarning, match="X does not have valid feature names, but .* was fitted with"):
            est.predict(X)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64, np.int32, np.bool_])
def test_cluster_centers_dtype_follows_sklearn(dtype):
    X = (np.random.default_rng(0).normal(size=(80, 2)) * 3).astype(dtype)
    sk = skc.MeanShift(bandwidth=2.0).fit(X)
    for est in (pc.MeanShift(bandwidth=2.0), pc.MeanShiftPP(bandwidth=2.0)):
        est.fit(X)
        assert est.cluster_centers_.dtype == sk.cluster_centers_.dtype
        assert est.labels_.dtype == sk.labels_.dtype
        assert est.predict(X).dtype == sk.predict(X).dtype
    ours = pc.MeanShift(bandwidth=2.0).fit(X)
    assert same_partition(ours.labels_, sk.labels_)
    tol = 1e-3 if dtype == np.float16 else 1e-6  # scikit-learn averages float16 in float16
    np.testing.assert_allclose(ours.cluster_centers_.astype(np.float64), sk.cluster_centers_.astype(np.float64),
                               rtol=tol, atol=tol)
    # a torch float16 tensor too
    t = pc.MeanShift(bandwidth=2.0).fit(torch.from_numpy(X))
    assert t.cluster_centers_.dtype == sk.cluster_centers_.dtype


def test_bin_seeding_warns_when_it_keeps_many_seeds():
    base = np.random.default_rng(0).normal(size=(12_000, 8))
    X = np.repeat(base, 2, axis=0)  # about two points per bin: binning keeps about half as seeds
    n_seeds = len(skc.get_bin_seeds(X, 0.5))
    assert 10_000 <= n_seeds < 24_000
    with pytest.warns(UserWarning, match=rf"bin_seeding kept {n_seeds} seeds for 24000 points \(50% of them"):
        pc.MeanShift(bandwidth=0.5, bin_seeding=True, max_iter=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # few seeds: no warning
        pc.MeanShift(bandwidth=3.0, bin_seeding=True).fit(X[:2000])


def test_progress_bar_same_results(capsys):
    X, _ = blobs(3000, 3, 4, seed=1)
    quiet = pc.MeanShift(bandwidth=2.0).fit(X)
    shown = pc.MeanShift(bandwidth=2.0, progress=True).fit(X)
    assert "mean shift" in capsys.readouterr().err
    np.testing.assert_array_equal(shown.labels_, quiet.labels_)
    np.testing.assert_array_equal(shown.cluster_centers_, quiet.cluster_centers_)
    assert shown.n_iter_ == quiet.n_iter_
    sk = skc.MeanShift(bandwidth=2.0).fit(X)
    assert same_partition(shown.labels_, sk.labels_)


# ----------------------------------------------------------------------------- compiled helpers


def test_merge_modes_matches_python_loop():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(60, 3))
    w = rng.integers(1, 20, 60).astype(np.float64)
    seg = np.sort(rng.integers(0, 3, 60))
    keeper, order = ops.merge_modes(torch.from_numpy(c), torch.from_numpy(w), torch.from_numpy(seg), 0.8)
    exp_order = sorted(range(60), key=lambda i: (seg[i], -w[i], tuple(-c[i])))
    assert order.tolist() == exp_order
    kept: dict[int, list[int]] = {}
    for i in exp_order:
        ks = kept.setdefault(seg[i], [])
        d = [np.linalg.norm(c[i] - c[k]) for k in ks]
        if d and min(d) <= 0.8:
            assert keeper[i] == ks[int(np.argmin(d))]
        else:
            assert keeper[i] == i
            ks.append(i)


def test_nearest_center_matches_cdist():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(300, 4)))
    c = torch.from_numpy(rng.normal(size=(9, 4)))
    off = torch.tensor([0, 100, 100, 300])
    coff = torch.tensor([0, 4, 4, 9])
    idx, sqd = ops.nearest_center(x, off, c, coff)
    for g in range(3):
        lo, hi, clo, chi = int(off[g]), int(off[g + 1]), int(coff[g]), int(coff[g + 1])
        if hi == lo:
            continue
        d = torch.cdist(x[lo:hi], c[clo:chi]) ** 2
        torch.testing.assert_close(idx[lo:hi], d.argmin(1) + clo)
        torch.testing.assert_close(sqd[lo:hi], d.min(1).values)
    # a segment with points but no centre gets -1 / inf
    idx, sqd = ops.nearest_center(x[:5], torch.tensor([0, 5]), c[:0], torch.tensor([0, 0]))
    assert (idx == -1).all() and torch.isinf(sqd).all()


def test_mean_shift_op_segments_equal_separate_calls():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(80, 2)), rng.normal(size=(50, 2)) + 3
    x = torch.from_numpy(np.concatenate([a, b]))
    seeds = torch.from_numpy(np.concatenate([a[:5], b[:4]]))
    seg = torch.tensor([0] * 5 + [1] * 4)
    modes, counts, iters = ops.mean_shift(x, torch.tensor([0, 80, 130]), seeds, seg, 1.0, 300, 1e-3)
    ma, ca, _ = ops.mean_shift(torch.from_numpy(a), torch.tensor([0, 80]), seeds[:5], seg[:5], 1.0, 300, 1e-3)
    mb, cb, _ = ops.mean_shift(torch.from_numpy(b), torch.tensor([0, 50]), seeds[5:], seg[:4], 1.0, 300, 1e-3)
    torch.testing.assert_close(modes, torch.cat([ma, mb]))
    torch.testing.assert_close(counts, torch.cat([ca, cb]))


def test_ops_reject_bad_arguments():
    x = torch.zeros(4, 2)
    with pytest.raises(RuntimeError, match="offsets"):
        ops.mean_shift(x, torch.tensor([0, 3]), x[:1], torch.zeros(1, dtype=torch.long), 1.0, 10, 0.0)
    with pytest.raises(RuntimeError, match="seed_segment"):
        ops.mean_shift(x, torch.tensor([0, 4]), x[:1], torch.ones(1, dtype=torch.long), 1.0, 10, 0.0)
    with pytest.raises(RuntimeError, match="radius"):
        ops.merge_modes(x, torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.long), -1.0)
    with pytest.raises(RuntimeError, match="weights should be finite"):
        ops.sample_anchors(torch.tensor([1.0, float("nan")]), torch.zeros(2, 2), torch.tensor([0, 2]), 1, 0.0, 0)
