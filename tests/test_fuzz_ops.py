"""Property tests (hypothesis) of every compiled op, called directly as a libtorch user would
(no Python checks in between), and of every public function and estimator of pst.cluster and
pst.morph, on adversarial inputs: empty, one element, d = 1 and d >= 64, NaN / Inf, every dtype,
transposed, strided and stride-0 expanded tensors, bad offsets, extreme bandwidths, radii, k and
ids.

The rule for every call: either a clear exception (RuntimeError, ValueError, TypeError or
IndexError whose message says what was expected and what came) or the reference's answer
(plain loops, scikit-learn, scipy.ndimage, the references of the other test modules). Never a
crash, a hang or a silent wrong answer. Where an input has no defined answer (NaN, a float16
tensor, offsets that are not boundaries), the call must raise.

Profiles: ``PST_FUZZ=fast`` (the default: a few examples per property, for the default suite)
and ``PST_FUZZ=long`` (many more). ``make sanitize`` runs them on the ASan + UBSan build.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pst.cluster as pc
import pst.morph as pm
from pst._ops import ops
from _reference_morph import refine_reference
from test_agglomerative import knn_reference, sk_fit
from test_cluster import grid_mean_shift_reference, same_partition

_COMMON = dict(deadline=None, derandomize=True, print_blob=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("pst-fast", max_examples=40, **_COMMON)
settings.register_profile("pst-long", max_examples=2000, **{**_COMMON, "derandomize": False})
PROFILE = os.environ.get("PST_FUZZ", "fast")
if PROFILE not in ("fast", "long"):
    raise ValueError(f"PST_FUZZ should be 'fast' or 'long', got {PROFILE!r}")
FUZZ = settings.get_profile(f"pst-{PROFILE}")

FLOATS = (torch.float32, torch.float64)
OTHER_DTYPES = (torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool)
ERRORS = (RuntimeError, ValueError, TypeError, IndexError)
# a message that says what was expected and what came
CLEAR = re.compile(r"should|expected|expects|must|got|only|not|unsupported|cannot|can't allocate|required|"
                   r"contain|pass |\bno\b|try ", re.I)


# ----------------------------------------------------------------------------- helpers


def attempt(fn, *args, **kwargs):
    """(result, None) or (None, exception) when ``fn`` raises one of ERRORS with a clear message."""
    try:
        return fn(*args, **kwargs), None
    except ERRORS as exc:
        msg = str(exc)
        assert CLEAR.search(msg), f"unclear error from {getattr(fn, '__name__', fn)}: {type(exc).__name__}: {msg}"
        return None, exc


def outcome(fn, *args, must_raise: bool, **kwargs):
    """Call ``fn``; it must raise (clearly) when ``must_raise``; returns the result or None."""
    res, exc = attempt(fn, *args, **kwargs)
    if must_raise:
        assert exc is not None, f"{getattr(fn, '__name__', fn)} accepted an input without a defined answer: {res!r}"
    return res, exc


@st.composite
def layouts(draw, t: torch.Tensor) -> torch.Tensor:
    """``t``'s values in another memory layout: transposed, strided or as is; with a stride-0
    expanded first dimension when all rows are equal (so the values stay the same)."""
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided", "expanded"]))
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "strided" and t.dim() >= 1:
        big = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype)
        big[..., ::2] = t
        return big[..., ::2]
    if kind == "expanded" and t.dim() >= 1 and t.shape[0] > 0 and bool((t == t[:1]).all()):
        return t[:1].expand(t.shape)
    return t


@st.composite
def points(draw, n_max: int = 40, d_choices=(1, 2, 3, 8, 64), allow_special: bool = True):
    """(tensor [N, D], valid): random normal points in a float dtype (sometimes another dtype,
    NaN or Inf: then ``valid`` is False), in some layout; sometimes all rows equal."""
    n = draw(st.integers(0, n_max))
    d = draw(st.sampled_from(d_choices))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1.0, 1e-6, 1e6]))
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)) * scale)
    if n and draw(st.booleans()) and draw(st.booleans()):
        x = x[:1].repeat(n, 1)  # duplicates (and expandable)
    valid = True
    if allow_special and n and draw(st.integers(0, 5)) == 0:
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        valid = False
    dtype = draw(st.sampled_from(FLOATS + OTHER_DTYPES if allow_special else FLOATS))
    if dtype not in FLOATS:
        valid = False
    x = x.to(dtype)
    return draw(layouts(x)), valid


@st.composite
def offsets_for(draw, n: int, g_max: int = 4):
    """(offsets [G + 1] int64, valid): segment boundaries for ``n`` rows, or broken ones."""
    g = draw(st.integers(1, g_max))
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=g - 1, max_size=g - 1)))
    off = torch.tensor([0, *cuts, n], dtype=torch.long)
    kind = draw(st.sampled_from(["ok"] * 4 + ["not_monotone", "out_of_range", "bad_start", "int32", "2d", "empty"]))
    if kind == "not_monotone" and g >= 2 and n >= 1:
        off[1] = n
        off[-2] = 0
        return off, bool((off[1:] >= off[:-1]).all())
    if kind == "out_of_range":
        off[-1] = n + draw(st.integers(1, 2**40))
        return off, False
    if kind == "bad_start":
        off[0] = draw(st.sampled_from([-1, -(2**40), 1]))
        return off, False
    if kind == "int32":
        return off.int(), False
    if kind == "2d":
        return off[None], False
    if kind == "empty":
        return off[:0], False
    return off, True


def valid_segments(off: torch.Tensor):
    return [(int(off[i]), int(off[i + 1])) for i in range(off.shape[0] - 1)]


# ----------------------------------------------------------------------------- the ops


@FUZZ
@given(data=st.data())
def test_fuzz_nearest_center(data):
    x, x_ok = data.draw(points())
    off, off_ok = data.draw(offsets_for(x.shape[0]))
    kc = data.draw(st.integers(0, 6))
    c = torch.from_numpy(np.random.default_rng(kc).normal(size=(kc, x.shape[1]))).to(
        x.dtype if x.dtype in FLOATS else torch.float64)
    coff = torch.zeros(off.reshape(-1).shape[0], dtype=torch.long)
    if coff.numel():
        coff[-1] = kc
        coff[1:-1] = torch.tensor(sorted(data.draw(st.lists(st.integers(0, kc), min_size=coff.numel() - 2,
                                                             max_size=coff.numel() - 2))), dtype=torch.long)
    c = data.draw(layouts(c))
    res, _ = outcome(ops.nearest_center, x, off, c, coff, must_raise=not (x_ok and off_ok))
    if not (x_ok and off_ok):
        return
    idx, sqd = res
    xd, cd = x.double(), c.double()
    for g, (lo, hi) in enumerate(valid_segments(off)):
        clo, chi = int(coff[g]), int(coff[g + 1])
        if hi == lo:
            continue
        if chi == clo:
            assert (idx[lo:hi] == -1).all() and torch.isinf(sqd[lo:hi]).all()
            continue
        ref = ((xd[lo:hi, None, :] - cd[None, clo:chi, :]) ** 2).sum(-1)
        best = ref.min(1).values
        got = ref.gather(1, (idx[lo:hi] - clo)[:, None].clamp(0, chi - clo - 1))[:, 0]
        assert ((idx[lo:hi] >= clo) & (idx[lo:hi] < chi)).all()
        torch.testing.assert_close(got, best, rtol=1e-5, atol=1e-9 * float(best.abs().max() + 1))
        torch.testing.assert_close(sqd[lo:hi].double(), best, rtol=1e-4, atol=1e-6 * float(best.abs().max() + 1))


def mean_shift_reference(x: np.ndarray, segs, seeds: np.ndarray, seed_seg, bandwidth, max_iter, tol):
    """scikit-learn's _mean_shift_single_seed per seed, against the points of its segment."""
    modes, counts, iters = np.array(seeds, np.float64), [], []
    for i, s in enumerate(seeds):
        lo, hi = segs[seed_seg[i]]
        pts = x[lo:hi]
        mean, it, cnt = s.astype(np.float64), 0, 0
        while True:
            within = pts[np.sqrt(((pts - mean) ** 2).sum(1)) <= bandwidth]
            cnt = len(within)
            if cnt == 0:
                break
            old, mean = mean, within.mean(0)
            if np.sqrt(((mean - old) ** 2).sum()) <= tol or it == max_iter:
                break
            it += 1
        modes[i], _ = mean, counts.append(cnt)
        iters.append(it)
    return modes, np.array(counts), np.array(iters)


@FUZZ
@given(data=st.data())
def test_fuzz_mean_shift(data):
    x, x_ok = data.draw(points(n_max=30, d_choices=(1, 2, 3, 64)))
    off, off_ok = data.draw(offsets_for(x.shape[0]))
    ns = data.draw(st.integers(0, 6))
    g = max(off.reshape(-1).shape[0] - 1, 1)
    seg = torch.tensor(data.draw(st.lists(st.integers(-1, g), min_size=ns, max_size=ns)), dtype=torch.long)
    seeds = torch.from_numpy(np.random.default_rng(ns).normal(size=(ns, x.shape[1]))).to(
        x.dtype if x.dtype in FLOATS else torch.float64)
    bandwidth = data.draw(st.sampled_from([1e-300, 1e-3, 0.7, 2.0, 1e300, 0.0, -1.0, float("nan"), float("inf")]))
    max_iter = data.draw(st.sampled_from([0, 1, 50, -1]))
    tol = data.draw(st.sampled_from([0.0, 1e-3, float("nan"), -1.0]))
    scal_ok = 0 < bandwidth < float("inf") and max_iter >= 0 and tol >= 0
    seg_ok = bool(((seg >= 0) & (seg < g)).all())
    ok = x_ok and off_ok and scal_ok and seg_ok
    res, _ = outcome(ops.mean_shift, x, off, data.draw(layouts(seeds)), seg, bandwidth, max_iter, tol, must_raise=not ok)
    if not ok:
        return
    modes, counts, iters = res
    rm, rc, ri = mean_shift_reference(x.double().numpy(), valid_segments(off), seeds.double().numpy(), seg.tolist(),
                                      bandwidth, max_iter, tol)
    # float32 sums may put a point on the other side of the bandwidth: compare float64 exactly
    if x.dtype == torch.float64:
        assert counts.tolist() == rc.tolist() and iters.tolist() == ri.tolist()
        np.testing.assert_allclose(modes.numpy(), rm, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(rm).max(initial=0)))
    assert ((counts >= 0) & (counts <= x.shape[0])).all() and ((iters >= 0) & (iters <= max_iter)).all()


@FUZZ
@given(data=st.data())
def test_fuzz_grid_mean_shift(data):
    x, x_ok = data.draw(points(n_max=40, d_choices=(1, 2, 3, 64)))
    off, off_ok = data.draw(offsets_for(x.shape[0]))
    h = data.draw(st.sampled_from([1e-300, 0.5, 1.5, 1e300, 0.0, -2.0, float("nan"), float("inf")]))
    max_iter = data.draw(st.sampled_from([1, 30, 0, -5]))
    tol = data.draw(st.sampled_from([0.0, 1e-4, float("nan")]))
    ok = x_ok and off_ok and 0 < h < float("inf") and max_iter >= 1 and tol >= 0
    res, exc = outcome(ops.grid_mean_shift, x, off, h, max_iter, tol, must_raise=not ok)
    if not ok:
        return
    # the one error of valid input: grid coordinates beyond int32 (tiny cells)
    assert exc is None or "int32 range" in str(exc), exc
    if exc is not None:
        return
    modes, weights, mseg, labels, n_iter = res
    assert int(weights.sum()) == x.shape[0] and labels.shape == (x.shape[0],)
    if x.shape[0] == 0:
        return
    assert ((labels >= 0) & (labels < modes.shape[0])).all()
    for g, (lo, hi) in enumerate(valid_segments(off)):
        if hi == lo:
            continue
        assert (mseg[labels[lo:hi]] == g).all()
        if x.dtype == torch.float64 and h < 1e100 and x.shape[1] <= 3:
            ref_labels, ref_pos = grid_mean_shift_reference(x[lo:hi].numpy(), h, max_iter=max_iter, tol=tol)
            assert same_partition(labels[lo:hi].numpy(), ref_labels)
            np.testing.assert_allclose(modes[labels[lo:hi]].numpy(), ref_pos, rtol=1e-9,
                                       atol=1e-9 * max(1.0, np.abs(ref_pos).max()))


@FUZZ
@given(data=st.data())
def test_fuzz_merge_modes(data):
    c, c_ok = data.draw(points(n_max=25, d_choices=(1, 2, 64)))
    k = c.shape[0]
    rng = np.random.default_rng(k)
    w = torch.from_numpy(rng.integers(1, 9, k).astype(np.float64))
    seg_kind = data.draw(st.sampled_from(["sorted", "unsorted", "huge", "negative"]))
    seg = torch.from_numpy(np.sort(rng.integers(0, 3, k)))
    if seg_kind == "unsorted":
        seg = seg.flip(0)
    elif seg_kind == "huge" and k:
        seg[-1] = 2**62
    elif seg_kind == "negative" and k:
        seg[0] = -(2**62)
    wtype = data.draw(st.sampled_from([torch.float64, torch.float64, torch.float32, torch.int64]))
    special = data.draw(st.sampled_from([None, None, float("nan"), float("inf"), -1.0]))
    if k and special is not None:
        w[0] = special  # a negative weight still orders the centres: valid
    special = special if k and special is not None and not special < 0 else None
    radius = data.draw(st.sampled_from([1e-300, 0.8, 3.0, 1e300, 0.0, float("nan")]))
    ok = c_ok and wtype == torch.float64 and special is None and 0 < radius < float("inf")
    res, _ = outcome(ops.merge_modes, c, w.to(wtype), seg, radius, must_raise=not ok)
    if not ok:
        return
    keeper, order = res
    cn, wn, sn = c.double().numpy(), w.numpy(), seg.numpy()
    exp_order = sorted(range(k), key=lambda i: (sn[i], -wn[i], tuple(-cn[i])))
    assert order.tolist() == exp_order
    kept: dict[int, list[int]] = {}
    for i in exp_order:
        ks = kept.setdefault(int(sn[i]), [])
        dist = [np.linalg.norm(cn[i] - cn[j]) for j in ks]
        if dist and min(dist) <= radius * (1 - 1e-6):
            assert int(keeper[i]) in ks
        elif not dist or min(dist) > radius * (1 + 1e-6):
            assert int(keeper[i]) == i
        ks.append(int(keeper[i])) if int(keeper[i]) == i else None


@FUZZ
@given(data=st.data())
def test_fuzz_sample_anchors(data):
    n = data.draw(st.integers(0, 40))
    rng = np.random.default_rng(n)
    w = torch.from_numpy(rng.random(n) * (rng.random(n) < 0.7))
    xy = torch.from_numpy(rng.integers(0, 12, (n, 2)).astype(np.float64))
    special = data.draw(st.sampled_from([None, None, None, float("nan"), float("inf"), -1.0]))
    if special is not None and n:
        in_w = data.draw(st.booleans())
        (w if in_w else xy)[n // 2, ...] = special
        special = None if special == -1.0 and not in_w else special  # a negative coordinate is fine
    else:
        special = None
    dtype = data.draw(st.sampled_from(FLOATS + (torch.float16, torch.int64)))
    off, off_ok = data.draw(offsets_for(n))
    k = data.draw(st.sampled_from([0, 1, 3, n + 5, -1, 2**62]))
    md = data.draw(st.sampled_from([0.0, 2.5, 1e300, -1.0, float("nan")]))
    seed = data.draw(st.sampled_from([0, 7, -1, 2**63 - 1]))
    ok = special is None and dtype in FLOATS and off_ok and 0 <= k < 2**20 and 0 <= md < float("inf")
    res, _ = outcome(ops.sample_anchors, data.draw(layouts(w.to(dtype))), data.draw(layouts(xy.to(dtype))), off, k,
                     md, seed, must_raise=not ok)
    if not ok:
        return
    wd, xyd = w.to(dtype).double(), xy.to(dtype).double()
    assert res.shape == (off.shape[0] - 1, k)
    for g, (lo, hi) in enumerate(valid_segments(off)):
        row = res[g].tolist()
        taken = [i for i in row if i >= 0]
        assert row == taken + [-1] * (k - len(taken)), row  # -1 only at the end
        assert len(set(taken)) == len(taken) and all(lo <= i < hi and wd[i] > 0 for i in taken)
        for a in range(len(taken)):
            for b in range(a):
                assert float((xyd[taken[a]] - xyd[taken[b]]).norm()) >= md
        if md == 0:
            assert len(taken) == min(k, int((wd[lo:hi] > 0).sum()))
        else:  # greedy: every positive point not taken is closer than md to one taken
            for i in range(lo, hi):
                if wd[i] > 0 and i not in taken and len(taken) < k:
                    assert any(float((xyd[i] - xyd[j]).norm()) < md for j in taken)


@FUZZ
@given(data=st.data())
def test_fuzz_knn_graph(data):
    x, x_ok = data.draw(points(n_max=30, d_choices=(1, 2, 64)))
    n = x.shape[0]
    k = data.draw(st.sampled_from([1, 2, 5, n - 1, n, n + 3, 0, -1, 2**40]))
    ok = x_ok and 1 <= k <= n - 1
    res, _ = outcome(ops.knn_graph, x, k, must_raise=not ok)
    if not ok:
        return
    dist, idx = res
    xd = x.double()
    rd, ri = knn_reference(xd.contiguous(), k)
    full = ((xd[:, None] - xd[None]) ** 2).sum(-1)
    assert (idx != torch.arange(n)[:, None]).all()
    torch.testing.assert_close(full.gather(1, idx), rd, rtol=1e-5, atol=1e-9 * float(rd.abs().max() + 1))
    torch.testing.assert_close(dist.double(), rd, rtol=1e-4, atol=1e-6 * float(rd.abs().max() + 1))
    if x.dtype == torch.float64:  # exact distances: ties go to the lower index
        full.fill_diagonal_(float("inf"))
        got = full.gather(1, idx)
        same = got[:, 1:] == got[:, :-1]
        assert (idx[:, 1:][same] > idx[:, :-1][same]).all()
        for i in range(n):
            at_kth = (full[i] == got[i, -1]).nonzero().squeeze(1).tolist()
            chosen = [j for j in at_kth if j in idx[i].tolist()]
            assert chosen == at_kth[:len(chosen)], (i, at_kth, chosen)


@FUZZ
@given(data=st.data())
def test_fuzz_agglomerative_tree(data):
    x, x_ok = data.draw(points(n_max=25, d_choices=(1, 2, 64)))
    n = x.shape[0]
    linkage = data.draw(st.sampled_from(["ward", "average", "complete", "single", "median", ""]))
    n_clusters = data.draw(st.sampled_from([1, 2, n, n + 1, 0, -3]))
    rng = np.random.default_rng(n)
    deg = rng.integers(0, 4, n)
    rowptr = torch.from_numpy(np.concatenate([[0], np.cumsum(deg)]).astype(np.int64))
    col = torch.from_numpy(rng.integers(0, max(n, 1), int(deg.sum())).astype(np.int64))
    bad_graph = data.draw(st.sampled_from([None, None, None, "col_range", "col_negative", "rowptr_short",
                                           "rowptr_dtype", "rowptr_not_monotone"]))
    if bad_graph == "col_range" and col.numel():
        col[0] = n + 2**40
    elif bad_graph == "col_negative" and col.numel():
        col[-1] = -1
    elif bad_graph == "rowptr_short":
        rowptr = rowptr[:-1]
    elif bad_graph == "rowptr_dtype":
        rowptr = rowptr.int()
    elif bad_graph == "rowptr_not_monotone" and n >= 2:
        rowptr = rowptr.clone()
        rowptr[1] = rowptr[-1] + 1
    graph_ok = bad_graph is None or (bad_graph in ("col_range", "col_negative") and col.numel() == 0) or (
        bad_graph == "rowptr_not_monotone" and n < 2)
    ok = x_ok and graph_ok and linkage in ("ward", "average", "complete", "single") and 1 <= n_clusters <= max(n, 1)
    res, _ = outcome(ops.agglomerative_tree, x, rowptr, col, linkage, n_clusters, must_raise=not ok)
    if not ok or n < 2:
        return
    children, dist = res
    conn = np.zeros((n, n), bool)
    for i in range(n):
        for j in col[rowptr[i]:rowptr[i + 1]].tolist():
            if i != j:
                conn[i, j] = conn[j, i] = True
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    # scikit-learn completes a disconnected graph; the op stops: compare on connected graphs
    connected = connected_components(sp.csr_matrix(conn), directed=False)[0] == 1
    if x.dtype == torch.float64 and len(set(map(tuple, x.numpy().round(12)))) == n and connected:
        sk = sk_fit(x.numpy(), sp.csr_matrix(conn), linkage=linkage, n_clusters=n_clusters, compute_distances=True)
        m = children.shape[0]
        got = ops.agglomerative_labels(children, n, m).numpy()
        if m == n - n_clusters:  # the graph kept enough edges for n_clusters
            assert same_partition(got, sk.labels_)
        np.testing.assert_allclose(np.sort(dist.numpy()), np.sort(sk.distances_[:m]), rtol=1e-7, atol=1e-9)


@FUZZ
@given(data=st.data())
def test_fuzz_agglomerative_labels(data):
    n = data.draw(st.integers(0, 20))
    rng = np.random.default_rng(n)
    clusters, children = list(range(n)), []
    for m in range(max(n - 1, 0)):  # a valid random tree
        a, b = sorted(rng.choice(len(clusters), 2, replace=False)) if len(clusters) >= 2 else (0, 0)
        children.append(sorted((clusters[a], clusters[b])))
        clusters = [c for i, c in enumerate(clusters) if i not in (a, b)] + [n + m]
    ch = torch.tensor(children, dtype=torch.long).reshape(-1, 2)
    bad = data.draw(st.sampled_from([None, None, "huge", "negative", "reuse", "dtype", "shape"]))
    if ch.shape[0] and bad == "huge":
        ch[-1, 1] = 2**62
    elif ch.shape[0] and bad == "negative":
        ch[0, 0] = -(2**62)
    elif ch.shape[0] >= 2 and bad == "reuse":
        ch[1] = ch[0]
    elif bad == "dtype":
        ch = ch.int()
    elif bad == "shape":
        ch = ch.reshape(-1)
    n_merges = data.draw(st.sampled_from([0, ch.shape[0], ch.shape[0] + 1, -1]))
    n_samples = data.draw(st.sampled_from([n, n, -1, 2**40]))
    # the first bad row (huge: the last row, negative: row 0, reuse: row 1); rows past n_merges are not read
    first_bad = {None: None, "huge": max(ch.shape[0] - 1, 0), "negative": 0, "reuse": 1}.get(bad, -1)
    rows_ok = first_bad is None or first_bad >= min(ch.shape[0], max(n_merges, 0)) if bad not in ("dtype", "shape") \
        else False
    ok = rows_ok and 0 <= n_merges <= (ch.shape[0] if ch.dim() == 2 else -1) and n_samples == n
    res, _ = outcome(ops.agglomerative_labels, data.draw(layouts(ch)), n_samples, n_merges, must_raise=not ok)
    if not ok:
        return
    parent = list(range(n + n_merges))
    for m in range(n_merges):
        parent[ch[m, 0]] = parent[ch[m, 1]] = n + m

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    assert same_partition(res.numpy(), [root(i) for i in range(n)])


@st.composite
def instance_maps(draw, max_side: int = 20):
    """(map [B, H, W], valid): random ids (some huge) in an integer dtype, or a non-integer /
    negative / 2-D map (not valid)."""
    b, h, w = draw(st.integers(0, 2)), draw(st.integers(0, max_side)), draw(st.integers(0, max_side))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    k = draw(st.integers(1, 5))
    m = rng.integers(0, k + 1, (b, h, w)) * (rng.random((b, h, w)) < draw(st.sampled_from([0.3, 0.7, 1.0])))
    big = draw(st.sampled_from([1, 1, 10**12, 2**60]))  # ids up to 5 * 2**60 < 2**63
    dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8, torch.float32,
                                  torch.bool]))
    m = torch.from_numpy(m * (big if dtype == torch.int64 else 1))
    valid = dtype not in (torch.float32, torch.bool)
    if draw(st.integers(0, 6)) == 0 and m.numel() and dtype != torch.uint8 and valid:
        m.view(-1)[0] = -3
        valid = False
    m = m.to(dtype)
    if draw(st.integers(0, 8)) == 0:
        m = m.reshape(-1)
        valid = False
    return draw(layouts(m)), valid


@FUZZ
@given(data=st.data())
def test_fuzz_morph_refine(data):
    m, m_ok = data.draw(instance_maps())
    open_r = data.draw(st.sampled_from([0, 1, 2, 50, 2**40, -1]))
    close_r = data.draw(st.sampled_from([0, 1, 3, 2**40, -2]))
    disk, holes, largest = data.draw(st.booleans()), data.draw(st.booleans()), data.draw(st.booleans())
    min_size = data.draw(st.sampled_from([0, 3, 2**40, -1]))
    conn = data.draw(st.sampled_from([4, 8, 8, 6, 0]))
    ok = m_ok and open_r >= 0 and close_r >= 0 and min_size >= 0 and conn in (4, 8)
    res, _ = outcome(ops.morph_refine, m, open_r, close_r, disk, holes, min_size, largest, conn, must_raise=not ok)
    if not ok:
        return
    assert res.shape == m.shape and res.dtype == m.dtype
    shape = "disk" if disk else "square"
    big = max(m.shape[1] + m.shape[2], 1)
    for b in range(m.shape[0]):
        ref = refine_reference(m[b].long().numpy(), open_radius=min(open_r, big), close_radius=min(close_r, big),
                               shape=shape, fill_holes=holes, min_size=min_size, largest_component=largest,
                               connectivity=conn)
        np.testing.assert_array_equal(res[b].long().numpy(), ref)


@FUZZ
@given(data=st.data())
def test_fuzz_connected_components(data):
    m, _ = data.draw(instance_maps(max_side=30))
    as_bool = data.draw(st.integers(0, 3)) > 0
    mask = data.draw(layouts((m > 0) if as_bool and m.dim() == 3 else m))
    conn = data.draw(st.sampled_from([4, 8, 8, 1, 6]))
    ok = mask.dtype == torch.bool and mask.dim() == 3 and conn in (4, 8)
    res, _ = outcome(ops.connected_components, mask, conn, must_raise=not ok)
    if not ok:
        return
    structure = ndi.generate_binary_structure(2, 1 if conn == 4 else 2)
    for b in range(mask.shape[0]):
        ref, _ = ndi.label(mask[b].numpy(), structure=structure)
        np.testing.assert_array_equal(res[b].numpy(), ref)


# ----------------------------------------------------------------------------- the public API


def exact_in_float64(x: torch.Tensor) -> bool:
    """pst.cluster computes in float64 for every dtype but float32 (converted exactly)."""
    return x.dtype != torch.float32


@FUZZ
@given(data=st.data())
def test_fuzz_mean_shift_estimators(data):
    from sklearn.cluster import MeanShift as SkMeanShift

    x, x_ok = data.draw(points(n_max=30, d_choices=(1, 2, 3, 64)))
    finite = bool(torch.isfinite(x.double()).all())  # any dtype is converted, as scikit-learn does
    n = x.shape[0]
    bandwidth = data.draw(st.sampled_from([None, 1e-300, 0.5, 2.0, 1e300, 0.0, -1.0, float("nan"), float("inf")]))
    bw_ok = bandwidth is None or 0 < bandwidth < float("inf")
    bin_seeding = data.draw(st.booleans())
    ok = finite and bw_ok and n >= 1
    xn = x.double().numpy()
    got, exc = outcome(pc.MeanShift(bandwidth=bandwidth, bin_seeding=bin_seeding).fit, x, must_raise=not ok)
    if ok and got is not None and bandwidth is not None and bandwidth > 1e100:
        assert len(got.cluster_centers_) == 1  # every point within the bandwidth of every seed: one mode
    elif ok and got is not None and bandwidth is not None and bandwidth < 1e-100 and not bin_seeding:
        # no other point within the bandwidth: every distinct point is its own mode
        assert len(got.cluster_centers_) == len(np.unique(xn, axis=0))
    elif ok and exact_in_float64(x) and x.shape[1] <= 3 and (bandwidth is None or bandwidth > 1e-100):
        # (scikit-learn's own binning gives NaN seeds below 1e-100: no reference there)
        ref, ref_exc = attempt(SkMeanShift(bandwidth=bandwidth, bin_seeding=bin_seeding).fit, xn)
        assert ref_exc is None or exc is not None, f"scikit-learn raised {ref_exc!r}, pst did not"
        if ref is not None and got is not None:
            assert same_partition(got.labels_, ref.labels_)
            # the centres come in the input's float dtype, as scikit-learn's do: float16 rounds them
            eps = np.finfo(got.cluster_centers_.dtype).eps if got.cluster_centers_.dtype.kind == "f" else 0.0
            np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, rtol=max(1e-7, eps), atol=1e-9)
    if bandwidth is not None:  # the functional twin
        res, _ = outcome(pc.mean_shift, x, bandwidth=bandwidth, bin_seeding=bin_seeding, must_raise=not ok)
        if res is not None and got is not None:
            assert same_partition(res[1].cpu().numpy(), got.labels_)
    h = bandwidth if bandwidth is not None else 1.0
    got, exc = outcome(pc.MeanShiftPP(cell_size=h).fit, x, must_raise=not (finite and bw_ok and n >= 1))
    if got is not None and exact_in_float64(x) and h < 1e100 and x.shape[1] <= 3:
        ref_labels, _ = grid_mean_shift_reference(xn, h)
        assert same_partition(got.labels_, ref_labels)
    outcome(pc.grid_mean_shift, x, bandwidth=h, must_raise=not (finite and bw_ok and n >= 1))
    q = data.draw(st.sampled_from([0.3, 1.0, 0.0, -1.0, float("nan")]))
    bw, _ = outcome(pc.estimate_bandwidth, x, quantile=q, must_raise=not (finite and 0 <= q <= 1 and n >= 1))
    if bw is not None:
        assert np.isfinite(bw) and bw >= 0
    bs = data.draw(st.sampled_from([1.0, 1e-300, 0.0, float("inf")]))
    overflow = n and finite and 0 < bs < float("inf") and not np.isfinite(np.round(xn / bs)).all()
    seeds, exc = outcome(pc.get_bin_seeds, x, bs, must_raise=not (finite and 0 < bs < float("inf")) or overflow)
    assert not overflow or "overflows float64" in str(exc), exc
    if seeds is not None and n and exact_in_float64(x):
        from sklearn.cluster._mean_shift import get_bin_seeds as sk_bin_seeds

        got_rows = np.unique(np.asarray(torch.as_tensor(seeds).double()), axis=0)
        if bs > 1e-100:
            np.testing.assert_array_equal(got_rows, np.unique(sk_bin_seeds(xn, bs), axis=0))
        else:  # bins finer than any gap (scikit-learn gives NaN there): the distinct points themselves
            np.testing.assert_allclose(got_rows, np.unique(xn, axis=0), rtol=1e-12, atol=0)


@FUZZ
@given(data=st.data())
def test_fuzz_agglomerative_estimator(data):
    import scipy.sparse as sp
    from sklearn.neighbors import kneighbors_graph

    x, _ = data.draw(points(n_max=25, d_choices=(1, 2, 64)))
    finite = bool(torch.isfinite(x.double()).all())
    n = x.shape[0]
    n_clusters = data.draw(st.sampled_from([1, 2, 3, n, n + 5, 0]))
    linkage = data.draw(st.sampled_from(["ward", "average", "complete", "single", "centroid"]))
    n_neighbors = data.draw(st.sampled_from([1, 3, 10, 2**40, 0]))
    ok = finite and n >= 2 and 1 <= n_clusters <= n and linkage != "centroid" and n_neighbors >= 1
    got, exc = outcome(pc.AgglomerativeClustering(n_clusters=n_clusters, linkage=linkage,
                                                  n_neighbors=n_neighbors).fit, x, must_raise=not ok)
    if not ok:
        return
    assert exc is None or "connected components" in str(exc), exc
    xn = x.double().numpy()
    d2 = ((xn[:, None] - xn[None]) ** 2).sum(-1)
    distinct = all(len(np.unique(row)) == n for row in d2)  # no ties: one kNN graph
    if got is not None and exact_in_float64(x) and distinct:
        conn = kneighbors_graph(xn, min(n_neighbors, n - 1), include_self=False)
        ref = sk_fit(xn, sp.csr_matrix(conn), n_clusters=n_clusters, linkage=linkage)
        assert same_partition(got.labels_, ref.labels_)
    k = data.draw(st.sampled_from([1, n - 1, n, 0]))
    res, _ = outcome(pc.knn_graph, x, k, must_raise=not 1 <= k <= n - 1)
    if res is not None:
        rd, _ = knn_reference(x.double(), k)
        torch.testing.assert_close(res[0].double(), rd, rtol=1e-4, atol=1e-6 * float(rd.abs().max() + 1))
    res, _ = outcome(pc.agglomerative, x, n_clusters=n_clusters, linkage=linkage, must_raise=False)
    if res is not None and got is not None and n_neighbors == 10:
        assert same_partition(res.cpu().numpy(), got.labels_)


@FUZZ
@given(data=st.data())
def test_fuzz_cluster_instances_and_anchors(data):
    b, h, w = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 12)), data.draw(st.integers(0, 12))
    d = data.draw(st.sampled_from([1, 2, 8, 64]))
    rng = np.random.default_rng(b * 1000 + h * 31 + w)
    emb = torch.from_numpy(rng.normal(size=(b, d, h, w))).float()
    sem = torch.from_numpy(rng.integers(10, 14, (b, h, w)))
    obj = torch.from_numpy(rng.random((b, h, w))).float()
    special = data.draw(st.sampled_from([None, None, "nan_emb", "inf_obj", "neg_obj", "emb_f16", "sem_float"]))
    if special == "nan_emb" and emb.numel():
        emb.view(-1)[0] = float("nan")
    elif special == "inf_obj" and obj.numel():
        obj.view(-1)[0] = float("inf")
    elif special == "neg_obj" and obj.numel():
        obj.view(-1)[0] = -1.0
    elif special == "emb_f16":
        emb = emb.half()
    elif special == "sem_float":
        sem = sem.float()
    method = data.draw(st.sampled_from(list(pc.METHODS) + ["kmeans"]))
    bandwidth = data.draw(st.sampled_from([0.5, 1e-300, 1e300, 0.0, float("nan")]))
    thing = data.draw(st.sampled_from([[11, 12], [], [2**40], [-1]]))
    min_size = data.draw(st.sampled_from([0, 2, 2**40, -1]))
    kw = dict(thing_classes=thing, method=method, bandwidth=bandwidth, min_size=min_size)
    res, exc = attempt(pc.cluster_instances, data.draw(layouts(emb)), sem, obj, **kw)
    if special == "emb_f16" and res is not None:  # converted exactly: the float32 answer
        assert torch.equal(res, pc.cluster_instances(emb.float(), sem, obj, **kw))
        special = None
    is_thing = torch.isin(sem.long(), torch.tensor(thing, dtype=torch.long)) if thing else \
        torch.zeros(sem.shape, dtype=torch.bool)
    # NaN / Inf at pixel (0, 0) of image 0: without meaning only when that pixel is clustered
    if special in ("nan_emb", "inf_obj") and not (is_thing.numel() and bool(is_thing.reshape(-1)[0])):
        special = None
    if special == "inf_obj" and method != "meanshift":  # objectness only draws mean shift's anchors
        special = None
    valid = (method in pc.METHODS and 0 < bandwidth < float("inf") and min_size >= 0
             and special in (None, "neg_obj") and all(t >= 0 for t in thing))
    if res is not None:
        assert valid or not thing or b * h * w == 0, f"cluster_instances accepted {kw}, {special}"
        assert special not in ("nan_emb", "inf_obj", "sem_float") or not is_thing.any(), special
        assert res.shape == (b, h, w) and res.dtype == torch.int64 and (res >= 0).all()
        assert not (res[~is_thing] > 0).any()  # an instance lives on thing pixels only
    elif valid and special is None:
        assert "int32 range" in str(exc) or bandwidth < 1e-100, exc
    mask = sem == 12
    k = data.draw(st.sampled_from([0, 1, 5, h * w + 3, -1, 2**40]))
    md = data.draw(st.sampled_from([0.0, 2.0, 1e300, -1.0]))
    anchors, exc = attempt(pc.sample_anchors, obj, mask, k=k, min_distance=md, seed=0)
    if anchors is not None:
        assert anchors.shape == (b, k) and k >= 0 and md >= 0
        for bi in range(b):
            taken = [i for i in anchors[bi].tolist() if i >= 0]
            assert all(bool(mask[bi].reshape(-1)[i]) for i in taken)


@FUZZ
@given(data=st.data())
def test_fuzz_morph_api(data):
    m, m_ok = data.draw(instance_maps())
    fn = data.draw(st.sampled_from(["refine", "opening", "closing", "fill_holes", "remove_small_components",
                                    "keep_largest_component", "connected_components", "structuring_element"]))
    r = data.draw(st.sampled_from([0, 1, 2, 2**40, -1]))
    shape = data.draw(st.sampled_from(["square", "disk", "cross"]))
    conn = data.draw(st.sampled_from([4, 8, 5]))
    kw_ok = shape != "cross" and conn in (4, 8) and r >= 0
    if fn == "structuring_element":
        r = min(r, 50)
        got, _ = outcome(pm.structuring_element, r, shape, must_raise=r < 0 or shape == "cross")
        if got is not None:
            yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
            ref = (yy**2 + xx**2 <= r * r) if shape == "disk" else np.ones_like(yy, bool)
            np.testing.assert_array_equal(got.numpy().astype(bool), ref)
        return
    big = max(m.shape[-1] + m.shape[-2], 1) if m.dim() == 3 else 1
    refs = {
        "refine": (lambda x: pm.refine(x, open_radius=r, close_radius=r, shape=shape, fill_holes=True, min_size=r,
                                       largest_component=False, connectivity=conn),
                   dict(open_radius=min(r, big), close_radius=min(r, big), shape=shape, fill_holes=True,
                        min_size=r, largest_component=False, connectivity=conn)),
        "opening": (lambda x: pm.opening(x, r, shape=shape), dict(open_radius=min(r, big), shape=shape)),
        "closing": (lambda x: pm.closing(x, r, shape=shape), dict(close_radius=min(r, big), shape=shape)),
        "fill_holes": (lambda x: pm.fill_holes(x, connectivity=conn), dict(fill_holes=True, connectivity=conn)),
        "remove_small_components": (lambda x: pm.remove_small_components(x, r, connectivity=conn),
                                    dict(min_size=r, connectivity=conn)),
        "keep_largest_component": (lambda x: pm.keep_largest_component(x, connectivity=conn),
                                   dict(largest_component=True, connectivity=conn)),
    }
    if fn == "connected_components":
        mask = m > 0 if data.draw(st.booleans()) else m
        ok = mask.dtype == torch.bool and mask.dim() in (2, 3) and conn in (4, 8)
        got, _ = outcome(pm.connected_components, mask, conn, must_raise=not ok)
        if got is not None:
            masks = mask if mask.dim() == 3 else mask[None]
            gots = got if mask.dim() == 3 else got[None]
            for b in range(masks.shape[0]):
                ref, _ = ndi.label(masks[b].numpy(), structure=ndi.generate_binary_structure(2, conn // 4))
                np.testing.assert_array_equal(gots[b].numpy(), ref)
        return
    call, ref_kw = refs[fn]
    needs_shape = fn in ("refine", "opening", "closing")
    needs_conn = fn in ("refine", "fill_holes", "remove_small_components", "keep_largest_component")
    needs_r = fn in ("refine", "opening", "closing", "remove_small_components")
    ok = m_ok and (not needs_shape or shape != "cross") and (not needs_conn or conn in (4, 8)) and (
        not needs_r or r >= 0) and m.dim() == 3
    got, exc = attempt(call, m)
    if not ok and not (m_ok and m.dim() == 2 and kw_ok):  # a 2-D map is a batch of one in pst.morph
        assert exc is not None, f"{fn} accepted {m.dtype} {tuple(m.shape)}"
        return
    if got is None:
        assert not m_ok or m.dim() not in (2, 3) or not kw_ok, exc
        return
    maps = m if m.dim() == 3 else m[None]
    outs = got if m.dim() == 3 else got[None]
    ref_kw.setdefault("shape", "square")
    for b in range(maps.shape[0]):
        np.testing.assert_array_equal(outs[b].long().numpy(), refine_reference(maps[b].long().numpy(), **ref_kw))


def test_fuzz_profile_is_known():
    assert FUZZ.max_examples == (40 if PROFILE == "fast" else 2000)


def test_every_op_is_fuzzed():
    """Every kernel op registered in the pst namespace has a property test above (ops whose
    name starts with "_" are switches, not kernels)."""
    names = sorted(n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("pst::"))
    kernels = [n for n in names if not n.startswith("_")]
    assert len(kernels) >= 10, names
    assert [n for n in kernels if f"test_fuzz_{n}" not in globals()] == []
