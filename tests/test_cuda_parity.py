"""Device parity of the compiled ops: the CUDA kernel against the CPU kernel on the same inputs.

Random, adversarial (duplicates, ties, integer-valued data, empty segments, one point) and empty
inputs, with sizes that are not multiples of the kernels' block sizes (32, 128, 256). Integer
labels must be equal (every kernel numbers deterministically like its CPU twin); floats equal or
within a few ulp where only the order of float64 sums differs. The whole module skips without a
GPU or without pst's CUDA kernels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pst
from pst._ops import has_kernel, ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (torch.cuda.is_available() and pst.has_cuda()),
                       reason="needs a CUDA device and pst built with CUDA kernels"),
]

SIZES = [1, 31, 33, 257, 1000]
DTYPES = [torch.float32, torch.float64]


def _needs(op: str) -> None:
    if not has_kernel(op, "CUDA"):
        pytest.skip(f"pst has no CUDA kernel for {op}")


def _cuda(*ts):
    return tuple(t.cuda() for t in ts)


def _offsets(counts) -> torch.Tensor:
    return torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.long)


def _segments(n: int, g: int, rng: np.random.Generator, *, empty: bool = True) -> torch.Tensor:
    """Offsets of g segments over n rows, some empty when `empty`."""
    cuts = np.sort(rng.integers(0, n + 1, size=g - 1))
    counts = np.diff(np.concatenate([[0], cuts, [n]]))
    if not empty and g > 0 and n >= g:
        counts = np.full(g, n // g)
        counts[-1] += n - counts.sum()
    return _offsets(counts)


def _blobs(n: int, d: int, k: int, rng: np.random.Generator, spread: float = 0.05) -> np.ndarray:
    centres = rng.uniform(-4, 4, size=(k, d))
    return centres[rng.integers(0, k, size=n)] + spread * rng.standard_normal((n, d))


def _assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    tol = 1e-5 if a.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(a.cpu(), b.cpu(), rtol=tol, atol=tol, equal_nan=True)


# ---------------------------------------------------------------- nearest_center

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_nearest_center(n, dtype):
    _needs("nearest_center")
    rng = np.random.default_rng(n)
    g = 4
    x = torch.tensor(rng.standard_normal((n, 5)), dtype=dtype)
    off = _segments(n, g, rng)
    coff = _offsets([0, 3, 1, 7])  # one segment without centres
    c = torch.tensor(rng.standard_normal((11, 5)), dtype=dtype)
    ref = ops.nearest_center(x, off, c, coff)
    got = ops.nearest_center(*_cuda(x, off, c, coff))
    assert torch.equal(got[0].cpu(), ref[0])
    assert torch.equal(got[1].cpu(), ref[1])  # same float64 arithmetic: bit-equal


def test_nearest_center_ties_and_empty():
    _needs("nearest_center")
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])  # ties: the lower index wins
    off, coff = _offsets([3]), _offsets([4])
    ref = ops.nearest_center(x, off, c, coff)
    got = ops.nearest_center(*_cuda(x, off, c, coff))
    assert torch.equal(got[0].cpu(), ref[0]) and torch.equal(got[1].cpu(), ref[1])
    e = torch.empty(0, 2)
    got = ops.nearest_center(*_cuda(e, _offsets([0]), c, coff))
    assert got[0].shape == (0,) and got[0].is_cuda


# ---------------------------------------------------------------- mean_shift

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [2, 8, 13, 40])  # register paths (4, 8, 16) and the generic one
def test_mean_shift(d, dtype):
    _needs("mean_shift")
    rng = np.random.default_rng(d)
    n, g = 1000, 3
    x = torch.tensor(_blobs(n, d, 6, rng, spread=0.1), dtype=dtype)
    off = _segments(n, g, rng, empty=False)
    s = 37
    seeds = x[torch.tensor(rng.integers(0, n, size=s))] + 0.01
    seg = torch.tensor(rng.integers(0, g, size=s), dtype=torch.long)
    bw = 0.6 * np.sqrt(d / 2)
    ref = ops.mean_shift(x, off, seeds, seg, bw, 300, 1e-3 * bw)
    got = ops.mean_shift(*_cuda(x, off, seeds, seg), bw, 300, 1e-3 * bw)
    assert torch.equal(got[1].cpu(), ref[1])
    assert torch.equal(got[2].cpu(), ref[2])
    _assert_close(got[0], ref[0])


@pytest.mark.parametrize("max_iter", [0, 1, 5])
def test_mean_shift_adversarial(max_iter):
    _needs("mean_shift")
    # duplicates, a seed far from every point, an empty segment, a one-point segment
    x = torch.tensor([[0.0, 0.0]] * 40 + [[1.0, 0.0]] * 3 + [[5.0, 5.0]], dtype=torch.float64)
    off = _offsets([43, 0, 1])
    seeds = torch.tensor([[0.1, 0.0], [100.0, 100.0], [0.0, 0.0], [5.0, 5.0], [0.9, 0.0]], dtype=torch.float64)
    seg = torch.tensor([0, 0, 1, 2, 0])
    ref = ops.mean_shift(x, off, seeds, seg, 1.0, max_iter, 0.0)
    got = ops.mean_shift(*_cuda(x, off, seeds, seg), 1.0, max_iter, 0.0)
    for a, b in zip(got, ref):
        assert torch.equal(a.cpu(), b)


def test_mean_shift_empty_and_errors():
    _needs("mean_shift")
    x = torch.randn(10, 3)
    off = _offsets([10])
    got = ops.mean_shift(*_cuda(x, off, torch.empty(0, 3), torch.empty(0, dtype=torch.long)), 1.0, 10, 0.0)
    assert got[0].shape == (0, 3)
    bad = torch.tensor([0, 11])
    with pytest.raises(RuntimeError, match=r"offsets\[-1\] should equal the number of points"):
        ops.mean_shift(*_cuda(x, bad, x[:2], torch.zeros(2, dtype=torch.long)), 1.0, 10, 0.0)
    with pytest.raises(RuntimeError, match=r"seed_segment\[1\] = 3 is not a segment index"):
        ops.mean_shift(*_cuda(x, off, x[:2], torch.tensor([0, 3])), 1.0, 10, 0.0)
    with pytest.raises(RuntimeError, match="same device"):
        ops.mean_shift(x.cuda(), off, x[:2].cuda(), torch.zeros(2, dtype=torch.long).cuda(), 1.0, 10, 0.0)


# ---------------------------------------------------------------- merge_modes

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 33, 300])
def test_merge_modes(k, dtype):
    _needs("merge_modes")
    rng = np.random.default_rng(k)
    c = torch.tensor(rng.integers(0, 6, size=(k, 3)).astype(float) * 0.25, dtype=dtype)  # many equal distances
    w = torch.tensor(rng.integers(1, 4, size=k).astype(float))  # many equal weights
    seg = torch.tensor(rng.integers(0, 3, size=k), dtype=torch.long)
    for radius in (0.25, 0.6, 10.0):
        ref = ops.merge_modes(c, w, seg, radius)
        got = ops.merge_modes(*_cuda(c, w, seg), radius)
        assert torch.equal(got[1].cpu(), ref[1])
        assert torch.equal(got[0].cpu(), ref[0])


def test_merge_modes_empty():
    _needs("merge_modes")
    got = ops.merge_modes(torch.empty(0, 2).cuda(), torch.empty(0, dtype=torch.float64).cuda(),
                          torch.empty(0, dtype=torch.long).cuda(), 1.0)
    assert got[0].shape == (0,) and got[1].shape == (0,)


# ---------------------------------------------------------------- sample_anchors

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("min_distance", [0.0, 3.0])
def test_sample_anchors(n, dtype, min_distance):
    _needs("sample_anchors")
    rng = np.random.default_rng(n)
    w = rng.uniform(0, 1, size=n)
    w[rng.uniform(size=n) < 0.3] = 0  # never drawn
    coords = torch.tensor(rng.integers(0, 20, size=(n, 2)).astype(float), dtype=dtype)
    off = _segments(n, 5, rng)
    for k in (0, 1, 7, 64):
        ref = ops.sample_anchors(torch.tensor(w, dtype=dtype), coords, off, k, min_distance, 3)
        got = ops.sample_anchors(*_cuda(torch.tensor(w, dtype=dtype), coords, off), k, min_distance, 3)
        assert torch.equal(got.cpu(), ref)


def test_sample_anchors_errors():
    _needs("sample_anchors")
    w = torch.tensor([1.0, -1.0, float("nan")]).cuda()
    with pytest.raises(RuntimeError, match=r"weights should be finite and >= 0, got weights\[1\] = -1"):
        ops.sample_anchors(w, torch.zeros(3, 2).cuda(), _offsets([3]).cuda(), 2, 0.0, 0)


# ---------------------------------------------------------------- grid_mean_shift

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 8])
def test_grid_mean_shift_blobs(d, dtype):
    _needs("grid_mean_shift")
    rng = np.random.default_rng(d)
    n, g, h = 2001, 3, 1.0
    # tight blobs around cell centres: no position comes near a cell border
    centres = rng.integers(-6, 6, size=(7, d)) * 4 + 0.5
    x = torch.tensor(centres[rng.integers(0, 7, size=n)] + 0.02 * rng.standard_normal((n, d)), dtype=dtype)
    off = _segments(n, g, rng)
    ref = ops.grid_mean_shift(x, off, h, 50, 1e-4)
    got = ops.grid_mean_shift(*_cuda(x, off), h, 50, 1e-4)
    for i in (1, 2, 3, 4):
        assert torch.equal(got[i].cpu(), ref[i])
    _assert_close(got[0], ref[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_grid_mean_shift_one_pass(n, dtype):
    # one pass bins the input itself (exact on both devices): labels and counts equal on any data
    _needs("grid_mean_shift")
    rng = np.random.default_rng(n)
    x = torch.tensor(rng.uniform(-3, 3, size=(n, 3)), dtype=dtype)
    off = _segments(n, 4, rng)
    ref = ops.grid_mean_shift(x, off, 0.7, 1, 0.0)
    got = ops.grid_mean_shift(*_cuda(x, off), 0.7, 1, 0.0)
    for i in (1, 2, 3, 4):
        assert torch.equal(got[i].cpu(), ref[i])
    _assert_close(got[0], ref[0])


def test_grid_mean_shift_edge_cases():
    _needs("grid_mean_shift")
    same = torch.ones(100, 2, dtype=torch.float64)  # one cell
    ref = ops.grid_mean_shift(same, _offsets([100]), 0.5, 10, 0.0)
    got = ops.grid_mean_shift(*_cuda(same, _offsets([100])), 0.5, 10, 0.0)
    for a, b in zip(got, ref):
        assert torch.equal(a.cpu(), b)
    got = ops.grid_mean_shift(*_cuda(torch.empty(0, 3), _offsets([0, 0])), 1.0, 10, 0.0)
    assert got[0].shape == (0, 3) and got[3].shape == (0,)
    with pytest.raises(RuntimeError, match="beyond the int32 range"):
        ops.grid_mean_shift(*_cuda(torch.tensor([[1e12, 0.0]], dtype=torch.float64), _offsets([1])), 1.0, 10, 0.0)


# ---------------------------------------------------------------- knn_graph

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [2, 33, 257, 1000])
def test_knn_graph_integer_ties(n, dtype):
    _needs("knn_graph")
    rng = np.random.default_rng(n)
    x = torch.tensor(rng.integers(0, 4, size=(n, 3)).astype(float), dtype=dtype)  # exact, many ties
    for k in sorted({1, min(5, n - 1)} | ({n - 1} if n <= 257 else set())):
        ref = ops.knn_graph(x, k)
        got = ops.knn_graph(x.cuda(), k)
        assert torch.equal(got[0].cpu(), ref[0]) and torch.equal(got[1].cpu(), ref[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_knn_graph_random(dtype):
    _needs("knn_graph")
    x = torch.tensor(np.random.default_rng(0).standard_normal((777, 8)), dtype=dtype)
    ref = ops.knn_graph(x, 10)
    got = ops.knn_graph(x.cuda(), 10)
    _assert_close(got[0], ref[0])
    assert torch.equal(got[1].cpu(), ref[1])


# ---------------------------------------------------------------- connected_components

@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 31, 33), (3, 64, 64), (1, 257, 129), (2, 1, 100), (2, 100, 1)])
@pytest.mark.parametrize("density", [0.3, 0.5, 0.7])
def test_connected_components(shape, connectivity, density):
    _needs("connected_components")
    rng = np.random.default_rng(sum(shape))
    m = torch.tensor(rng.uniform(size=shape) < density)
    ref = ops.connected_components(m, connectivity)
    got = ops.connected_components(m.cuda(), connectivity)
    assert torch.equal(got.cpu(), ref)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_adversarial(connectivity):
    _needs("connected_components")
    h, w = 67, 91
    yy, xx = np.mgrid[:h, :w]
    masks = [
        np.zeros((h, w), bool),
        np.ones((h, w), bool),
        (yy + xx) % 2 == 0,                      # checkerboard: diagonal links only
        (yy % 4 == 0) | (xx == w - 1),           # a comb joined at the last column
        np.abs(yy - xx) < 1,                     # one diagonal
        ((yy - 33) ** 2 + (xx - 45) ** 2 < 900) & ((yy - 33) ** 2 + (xx - 45) ** 2 > 400),  # ring
    ]
    m = torch.tensor(np.stack(masks))
    ref = ops.connected_components(m, connectivity)
    got = ops.connected_components(m.cuda(), connectivity)
    assert torch.equal(got.cpu(), ref)
    empty = torch.zeros(0, 5, 5, dtype=torch.bool).cuda()
    assert ops.connected_components(empty, connectivity).shape == (0, 5, 5)


# ---------------------------------------------------------------- morph_refine

INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
# (open_radius, close_radius, fill_holes, min_size, largest_component): every step alone, all
# together, radii beyond the image (clipped to H + W, as on the CPU), and nothing at all
MORPH_ARGS = [(1, 0, False, 0, False), (0, 2, False, 0, False), (0, 0, True, 0, False), (0, 0, False, 6, False),
              (0, 0, False, 0, True), (1, 1, True, 5, True), (3, 2, True, 20, False), (0, 40, False, 0, False),
              (25, 0, False, 0, False), (2, 3, True, 0, True), (0, 0, False, 0, False)]


def _instance_maps(rng: np.random.Generator, b: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """[b, h, w] maps of several kinds: salt-and-pepper ids, blob instances (components of smoothed
    noise) with scattered id values up to the dtype's maximum, and overlapping rectangles."""
    top = int(torch.iinfo(dtype).max)
    out = np.zeros((b, h, w), np.int64)
    for i in range(b):
        kind = i % 3
        if kind == 0:
            out[i] = rng.integers(0, 6, size=(h, w))
        elif kind == 1:
            noise = torch.tensor(rng.standard_normal((1, 1, max(1, h // 6), max(1, w // 6))), dtype=torch.float32)
            up = torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False)[0]
            lab = ops.connected_components(up > 0.2, 8)[0].numpy().astype(np.int64)
            ids = np.concatenate([[0], rng.integers(1, top, size=lab.max(), endpoint=True)])  # repeats: one instance
            if lab.max() > 0:
                ids[-1] = top  # the largest id the dtype holds
            out[i] = ids[lab]
        else:
            for _ in range(8):
                y, x = rng.integers(0, h), rng.integers(0, w)
                out[i, y:y + rng.integers(1, h // 2 + 2), x:x + rng.integers(1, w // 2 + 2)] = rng.integers(1, 5)
            out[i][rng.uniform(size=(h, w)) < 0.05] = 0  # holes
    return torch.tensor(out).to(dtype)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("disk", [False, True])
@pytest.mark.parametrize("connectivity", [4, 8])
def test_morph_refine(disk, connectivity, dtype):
    _needs("morph_refine")
    rng = np.random.default_rng(INT_DTYPES.index(dtype) * 4 + 2 * disk + (connectivity == 8))
    inst = _instance_maps(rng, 3, 61, 83, dtype)
    x = inst.cuda()
    for o, c, fill, min_size, largest in MORPH_ARGS:
        ref = ops.morph_refine(inst, o, c, disk, fill, min_size, largest, connectivity)
        got = ops.morph_refine(x, o, c, disk, fill, min_size, largest, connectivity)
        assert got.dtype == dtype and got.is_cuda
        assert torch.equal(got.cpu(), ref), (o, c, fill, min_size, largest)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 77), (2, 77, 1), (1, 2, 2), (1, 129, 257)])
def test_morph_refine_shapes(shape):
    _needs("morph_refine")
    rng = np.random.default_rng(sum(shape))
    inst = torch.tensor(rng.integers(0, 3, size=shape), dtype=torch.int64)
    full = torch.full(shape, 7, dtype=torch.int64)  # one instance covering every image
    for m in (inst, full, torch.zeros(shape, dtype=torch.int64)):
        for disk in (False, True):
            for args in [(1, 1, True, 3, True), (2, 0, False, 0, False), (0, 3, True, 0, False)]:
                o, c, fill, min_size, largest = args
                ref = ops.morph_refine(m, o, c, disk, fill, min_size, largest, 8)
                got = ops.morph_refine(m.cuda(), o, c, disk, fill, min_size, largest, 8)
                assert torch.equal(got.cpu(), ref), (shape, disk, args)
    empty = torch.zeros(0, 4, 5, dtype=torch.int32).cuda()
    assert ops.morph_refine(empty, 1, 1, True, True, 1, True, 8).shape == (0, 4, 5)


def test_morph_refine_non_contiguous_and_errors():
    _needs("morph_refine")
    inst = torch.tensor(np.random.default_rng(5).integers(0, 4, size=(2, 40, 30)), dtype=torch.int32)
    t = inst.transpose(1, 2)
    got = ops.morph_refine(t.cuda(), 1, 1, False, True, 2, False, 8)
    assert torch.equal(got.cpu(), ops.morph_refine(t, 1, 1, False, True, 2, False, 8))
    with pytest.raises(ValueError, match="connectivity should be 4 or 8"):
        ops.morph_refine(inst.cuda(), 1, 0, False, False, 0, False, 6)
    with pytest.raises(TypeError, match="integer tensor"):
        ops.morph_refine(inst.float().cuda(), 1, 0, False, False, 0, False, 8)
    # (negative ids are a device-side assert on CUDA, which would end this process's CUDA context:
    # not tested here)


def test_refine_does_not_wait_for_the_device():
    _needs("morph_refine")
    from pst.morph import refine  # noqa: PLC0415

    inst = _instance_maps(np.random.default_rng(0), 2, 64, 96, torch.int64).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = refine(inst, open_radius=1, close_radius=2, shape="disk", fill_holes=True, min_size=5,
                     largest_component=True)
        refine(inst, open_radius=1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = refine(inst.cpu(), open_radius=1, close_radius=2, shape="disk", fill_holes=True, min_size=5,
                 largest_component=True)
    assert torch.equal(out.cpu(), ref)


# ---------------------------------------------------------------- agglomerative (a host step)

@pytest.mark.parametrize("linkage", ["ward", "average", "complete", "single"])
def test_agglomerative_ops(linkage):
    _needs("agglomerative_tree")
    rng = np.random.default_rng(0)
    x = torch.tensor(_blobs(300, 4, 5, rng, spread=0.3))
    _, idx = ops.knn_graph(x, 8)
    rowptr, col = torch.arange(0, 300 * 8 + 1, 8), idx.reshape(-1).contiguous()
    for stop in (1, 5):
        ref = ops.agglomerative_tree(x, rowptr, col, linkage, stop)
        got = ops.agglomerative_tree(*_cuda(x, rowptr, col), linkage, stop)
        assert got[0].is_cuda and got[1].is_cuda
        assert torch.equal(got[0].cpu(), ref[0]) and torch.equal(got[1].cpu(), ref[1])
        lab = ops.agglomerative_labels(got[0], 300, got[0].shape[0])
        assert lab.is_cuda
        assert torch.equal(lab.cpu(), ops.agglomerative_labels(ref[0], 300, ref[0].shape[0]))
    with pytest.raises(RuntimeError, match="linkage should be one of"):
        ops.agglomerative_tree(*_cuda(x, rowptr, col), "median", 1)
    with pytest.raises(RuntimeError, match="same device"):
        ops.agglomerative_tree(x.cuda(), rowptr, col.cuda(), linkage, 1)


def test_agglomerative_on_cuda_tensors():
    _needs("agglomerative_tree")
    from pst.cluster import agglomerative  # noqa: PLC0415

    x = torch.tensor(_blobs(500, 8, 6, np.random.default_rng(1), spread=0.2))
    for kw in (dict(n_clusters=6, linkage="ward"), dict(n_clusters=None, distance_threshold=1.0, linkage="average")):
        ref = agglomerative(x, knn_backend="pst", **kw)
        got = agglomerative(x.cuda(), knn_backend="pst", **kw)
        assert got.is_cuda
        assert torch.equal(got.cpu(), ref)


# ---------------------------------------------------------------- trusted inputs (no host copies)

def test_trusted_inputs_skip_only_the_value_checks():
    _needs("mean_shift")
    from pst._trusted import trusted_inputs  # noqa: PLC0415

    rng = np.random.default_rng(3)
    x = torch.tensor(_blobs(500, 3, 4, rng, spread=0.1))
    off = _segments(500, 4, rng)
    seeds = x[::13].contiguous()
    seg = torch.tensor(rng.integers(0, 4, size=seeds.shape[0]))
    ref = ops.mean_shift(*_cuda(x, off, seeds, seg), 0.8, 100, 1e-4)
    with trusted_inputs():
        got = ops.mean_shift(*_cuda(x, off, seeds, seg), 0.8, 100, 1e-4)
        with pytest.raises(RuntimeError, match="same device"):  # still checked
            ops.mean_shift(x.cuda(), off, seeds.cuda(), seg.cuda(), 0.8, 100, 1e-4)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match=r"offsets\[-1\] should equal the number of points"):  # checked again
        ops.mean_shift(*_cuda(x, torch.tensor([0, 7]), seeds, torch.zeros_like(seg)), 0.8, 100, 1e-4)


def _syncs(fn) -> int:
    """How many times fn() made the host wait for the device (torch's sync debug mode)."""
    import warnings  # noqa: PLC0415

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


def test_mean_shift_ops_do_not_wait_for_the_device():
    _needs("mean_shift")
    from pst._trusted import trusted_inputs  # noqa: PLC0415

    rng = np.random.default_rng(4)
    x, off = torch.tensor(_blobs(2000, 8, 6, rng, spread=0.1), dtype=torch.float32).cuda(), _segments(2000, 5, rng)
    seeds = x[::50].contiguous()
    seg = torch.tensor(rng.integers(0, 5, size=seeds.shape[0])).cuda()
    off = off.cuda()
    w = torch.rand(2000, dtype=torch.float64).cuda()
    xy = torch.rand(2000, 2, dtype=torch.float64).cuda()

    def run():
        with trusted_inputs():
            ops.sample_anchors(w, xy, off, 8, 0.0, 0)
            modes, counts, _ = ops.mean_shift(x, off, seeds, seg, 1.0, 50, 1e-3)
            ops.merge_modes(modes, counts.double(), seg, 1.0)
            ops.nearest_center(x, off, modes, _offsets([seeds.shape[0]] + [0] * 4).cuda())

    assert _syncs(run) == 0
