"""pst.morph against its oracle (tests/_reference_morph.py: one instance at a time with scipy.ndimage), the
benchmark's peers (OpenCV loops on full masks and crops) against pst, and connected_components against
scipy.ndimage.label / cv2.connectedComponents (default and SPAGHETTI) / cc3d (when installed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import pst.morph as pm
from _reference_morph import canonical, refine_reference
from pst._ops import ops
from pst.bench.morph import make_instance_maps
from pst.bench.morph import refine_reference as bench_refine

# ----------------------------------------------------------------------------- maps


def _noise_map(rng, h, w, k, density):
    """Salt-and-pepper of k ids: many tiny components, touching everywhere."""
    ids = rng.integers(1, k + 1, (h, w))
    return np.where(rng.random((h, w)) < density, ids, 0)


def _blocky_map(rng, h, w, k):
    """Rectangles and lines of random ids painted over each other, touching the border."""
    m = np.zeros((h, w), np.int64)
    for _ in range(3 * k):
        y0, x0 = rng.integers(-2, h), rng.integers(-2, w)
        y1, x1 = y0 + rng.integers(1, h // 2 + 2), x0 + rng.integers(1, w // 2 + 2)
        m[max(y0, 0):y1, max(x0, 0):x1] = rng.integers(0, k + 1)
    m[rng.random((h, w)) < 0.05] = 0  # pepper: holes and broken pieces
    return m


def adversarial_maps() -> dict[str, np.ndarray]:
    maps: dict[str, np.ndarray] = {}
    h, w = 23, 31
    maps["empty"] = np.zeros((h, w), np.int64)
    maps["full"] = np.full((h, w), 7, np.int64)
    m = np.zeros((h, w), np.int64)
    m[::4, ::5] = np.arange(1, m[::4, ::5].size + 1).reshape(m[::4, ::5].shape)
    maps["one_pixel"] = m
    m = np.zeros((h, w), np.int64)
    m[3, :] = 1  # horizontal line across the whole map
    m[:, 10] = 2  # vertical line crossing it
    idx = np.arange(min(h, w))
    m[idx, idx] = 3  # diagonal (8-connected only)
    m[idx[:15], 30 - idx[:15]] = 4
    maps["thin_lines"] = m
    yy, xx = np.mgrid[:h, :w]
    maps["checkerboard"] = np.where((yy + xx) % 2 == 0, 1, 2).astype(np.int64)
    maps["diagonal_checker"] = np.where((yy + xx) % 2 == 0, 5, 0).astype(np.int64)
    maps["stripes"] = (xx // 3 % 4).astype(np.int64)  # touching instances, 0 between some
    m = np.zeros((h, w), np.int64)
    m[0, :] = 1
    m[-1, :] = 2
    m[:, 0] = 3
    m[:, -1] = 4
    m[5:18, 6:20] = 5
    m[8:15, 9:17] = 0  # hole in 5
    m[10:13, 11:14] = 6  # instance inside that hole
    m[1:4, 1:4] = 7
    m[2, 2] = 0  # one-pixel hole next to the border frame
    maps["border_frame_and_holes"] = m
    m = np.zeros((h, w), np.int64)
    m[4:19, 4:27] = 1
    m[7:16, 7:24] = 0
    m[9:14, 9:22] = 2  # ring 1 around 2 with a gap of background: closing 1 grows into it
    m[11, 15] = 0
    maps["ring_around_instance"] = m
    m = np.zeros((h, w), np.int64)
    m[5:9, 5:9] = 1
    m[9:13, 9:13] = 1  # touching diagonally: one 8-component, two 4-components
    m[14:17, 20:23] = 1
    m[14:17, 24:27] = 1  # equal-area components: tie for the largest
    maps["diagonal_touch_and_tie"] = m
    maps["big_ids"] = np.where(maps["stripes"] > 0, maps["stripes"] * 10**12 + 3, 0)
    maps["row"] = np.array([[0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 3]], np.int64)
    maps["column"] = maps["row"].T.copy()
    maps["single_pixel_map"] = np.array([[4]], np.int64)
    rng = np.random.default_rng(0)
    maps["noise"] = _noise_map(rng, h, w, 4, 0.6)
    maps["sparse_noise"] = _noise_map(rng, h, w, 3, 0.15)
    maps["blocky"] = _blocky_map(rng, 29, 37, 6)
    maps["blocky2"] = _blocky_map(rng, 40, 33, 9)
    maps["synthetic"] = make_instance_maps(1, 48, 96, 8, seed=3)[0]
    return maps


MAPS = adversarial_maps()

STEPS = [
    dict(open_radius=1),
    dict(open_radius=2, shape="disk"),
    dict(close_radius=1),
    dict(close_radius=2),
    dict(close_radius=3, shape="disk"),
    dict(fill_holes=True),
    dict(fill_holes=True, connectivity=4),
    dict(min_size=3),
    dict(min_size=5, connectivity=4),
    dict(largest_component=True),
    dict(largest_component=True, connectivity=4),
    dict(open_radius=1, close_radius=2, fill_holes=True, min_size=4, largest_component=True),
    dict(open_radius=2, close_radius=1, shape="disk", fill_holes=True, min_size=2, largest_component=True,
         connectivity=4),
    dict(close_radius=40),  # larger than the maps
    dict(open_radius=5, close_radius=4, shape="disk", fill_holes=True),
]


def _ids(params):
    return "-".join(f"{k}={v}" for k, v in params.items())


# ----------------------------------------------------------------------------- refine


@pytest.mark.parametrize("params", STEPS, ids=_ids)
def test_refine_matches_opencv_and_scipy_loops(params, device):
    for name, m in MAPS.items():
        ours = pm.refine(torch.from_numpy(m).to(device), **params).cpu().numpy()
        ref = refine_reference(m, **params)
        assert np.array_equal(ours, ref), f"{name}: the oracle differs in {(ours != ref).sum()} pixels"
        peer = bench_refine(m, backend="opencv", **params)  # the benchmark's peer computes the same
        assert np.array_equal(ours, peer), f"{name}: the OpenCV peer differs in {(ours != peer).sum()} pixels"


@pytest.mark.parametrize("seed", range(6))
def test_refine_random_batches(seed, device):
    rng = np.random.default_rng(100 + seed)
    maps = np.stack([_blocky_map(rng, 36, 44, 7) if i % 2 else _noise_map(rng, 36, 44, 5, 0.5) for i in range(3)])
    params = dict(
        open_radius=int(rng.integers(0, 3)), close_radius=int(rng.integers(0, 4)),
        shape=["square", "disk"][seed % 2], fill_holes=bool(rng.integers(0, 2)),
        min_size=int(rng.integers(0, 6)), largest_component=bool(rng.integers(0, 2)),
        connectivity=[4, 8][seed // 2 % 2],
    )
    ours = pm.refine(torch.from_numpy(maps).to(device), **params).cpu().numpy()
    assert np.array_equal(ours, refine_reference(maps, **params)), params
    assert np.array_equal(ours, bench_refine(maps, backend="opencv", **params)), params


@pytest.mark.parametrize("shape", ["square", "disk"])
def test_refine_benchmark_setting(shape):
    maps = make_instance_maps(2, 192, 384, 30, seed=1)
    params = dict(open_radius=2, close_radius=3, shape=shape, fill_holes=True, min_size=64, largest_component=True)
    ours = pm.refine(torch.from_numpy(maps), **params).numpy()
    assert (ours != maps).any()
    assert np.array_equal(ours, refine_reference(maps, **params))
    for backend, crop in (("opencv", False), ("opencv", True), ("scipy", False)):  # the benchmark's peers
        assert np.array_equal(ours, bench_refine(maps, backend=backend, crop=crop, **params)), (backend, crop)


@pytest.mark.parametrize("shape", ["square", "disk"])
def test_refine_every_radius(shape):
    # each radius gives the disk another set of row half-widths (the kernel splits it into rectangles)
    for name in ("synthetic", "blocky2", "border_frame_and_holes"):
        m = MAPS[name]
        x = torch.from_numpy(m)
        for r in list(range(1, 14)) + [17, 25]:
            for params in (dict(open_radius=r), dict(close_radius=r)):
                ours = pm.refine(x, shape=shape, **params).numpy()
                ref = refine_reference(m, shape=shape, **params)
                assert np.array_equal(ours, ref), (name, params, int((ours != ref).sum()))


def test_refine_large_output_is_an_ordinary_tensor():
    # 1 x 768 x 1024 int64 = 6 MiB: the output's memory comes from the zero-page path with huge pages
    maps = make_instance_maps(1, 768, 1024, 12, seed=5)
    params = dict(open_radius=1, close_radius=2, shape="disk", fill_holes=True, min_size=16)
    out = pm.refine(torch.from_numpy(maps), **params)
    ref = torch.from_numpy(refine_reference(maps, **params))
    assert torch.equal(out, ref)  # (no .numpy() here: torch forbids resizing a tensor shared with numpy)
    assert out.is_contiguous() and out.dtype == torch.int64 and out.shape == maps.shape
    out[0, 0, 0] = 123  # writable
    assert out[0, 0, 0] == 123
    out.resize_(2, 768, 1024)  # resizable: the first map is kept
    assert torch.equal(out[0, 1:], ref[0, 1:])
    out[1] = 7
    assert (out[1] == 7).all()
    assert out.sum().item() >= 7 * 768 * 1024


def test_conflict_rule_closing():
    # the closings of a (horizontal pair) and b (vertical pair) both cover the centre pixel,
    # which is background: it goes to the lower id, whichever instance that is
    for a, b in ((1, 3), (3, 1)):
        m = np.zeros((7, 7), np.int64)
        m[3, 2] = m[3, 4] = a
        m[2, 3] = m[4, 3] = b
        m[1, 1] = 2  # a one-pixel instance: its pixel stays its own
        out = pm.closing(torch.from_numpy(m), 1).numpy()
        assert out[3, 3] == min(a, b) and out[1, 1] == 2
        assert np.array_equal(out, refine_reference(m, close_radius=1))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_dtypes(dtype):
    m = MAPS["blocky"]
    x = torch.from_numpy(m).to(dtype)
    out = pm.refine(x, open_radius=1, close_radius=1, fill_holes=True, min_size=3)
    assert out.dtype == dtype and out.shape == x.shape
    ref = refine_reference(m, open_radius=1, close_radius=1, fill_holes=True, min_size=3)
    assert np.array_equal(out.long().numpy(), ref)


def test_single_steps_are_refine():
    x = torch.from_numpy(MAPS["blocky2"])
    assert torch.equal(pm.opening(x, 2, shape="disk"), pm.refine(x, open_radius=2, shape="disk"))
    assert torch.equal(pm.closing(x, 1), pm.refine(x, close_radius=1))
    assert torch.equal(pm.fill_holes(x, connectivity=4), pm.refine(x, fill_holes=True, connectivity=4))
    assert torch.equal(pm.remove_small_components(x, 4), pm.refine(x, min_size=4))
    assert torch.equal(pm.keep_largest_component(x), pm.refine(x, largest_component=True))


def test_fill_holes_matches_scipy_per_instance():
    m = MAPS["border_frame_and_holes"]
    out = pm.fill_holes(torch.from_numpy(m)).numpy()
    for k in np.unique(m)[1:]:
        filled = ndi.binary_fill_holes(m == k)
        # every pixel of the filled mask is k, unless another instance held it already
        assert ((out == k) == (filled & ((m == k) | (m == 0)))).all()


def test_2d_and_non_contiguous_and_nothing_to_do():
    m = MAPS["blocky2"]
    x = torch.from_numpy(m)
    batch = pm.refine(x[None], close_radius=2, min_size=3)
    assert torch.equal(pm.refine(x, close_radius=2, min_size=3), batch[0])
    xt = torch.from_numpy(np.ascontiguousarray(m.T)).t()  # non-contiguous view of m
    assert not xt.is_contiguous()
    assert torch.equal(pm.refine(xt, close_radius=2, min_size=3), batch[0])
    assert torch.equal(pm.refine(x), x)
    assert pm.refine(x).data_ptr() != x.data_ptr()


def test_huge_radius():
    m = MAPS["blocky"]
    h, w = m.shape
    x = torch.from_numpy(m)
    for shape in ("square", "disk"):
        ours = pm.refine(x, open_radius=10**9, close_radius=10**9, shape=shape)
        ref = refine_reference(m, open_radius=h + w, close_radius=h + w, shape=shape)
        assert np.array_equal(ours.numpy(), ref)


@pytest.mark.parametrize("shape", [(0, 5, 6), (2, 0, 6), (2, 5, 0), (0, 0)])
def test_empty(shape):
    x = torch.zeros(shape, dtype=torch.long)
    out = pm.refine(x, open_radius=1, close_radius=1, fill_holes=True, min_size=2, largest_component=True)
    assert out.shape == x.shape and out.dtype == x.dtype
    cc = pm.connected_components(x > 0)
    assert cc.shape == x.shape and cc.dtype == torch.int32


def test_structuring_element():
    for r in range(6):
        se = pm.structuring_element(r, "disk").numpy()
        dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
        assert np.array_equal(se, dx**2 + dy**2 <= r * r)
        assert pm.structuring_element(r, "square").all() and pm.structuring_element(r).shape == (2 * r + 1,) * 2


# ----------------------------------------------------------------------------- connected components


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_matches_scipy_and_opencv(connectivity, device):
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    for name, m in MAPS.items():
        mask = m > 0
        ours = pm.connected_components(torch.from_numpy(mask).to(device), connectivity).cpu().numpy()
        assert ours.dtype == np.int32
        ref, _ = ndi.label(mask, structure=structure)
        assert np.array_equal(ours, ref), name  # same numbering: raster order of first pixels
        _, cvl = cv2.connectedComponents(mask.astype(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
        assert np.array_equal(ours, canonical(cvl)), name


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_matches_cc3d_and_spaghetti(connectivity):
    """The benchmark's other peers: cc3d (when installed) and OpenCV's SPAGHETTI, on the
    benchmark's maps and on noise (many small components, chunk borders)."""
    cc3d = pytest.importorskip("cc3d")
    rng = np.random.default_rng(3)
    masks = {**{name: m > 0 for name, m in MAPS.items()}, "noise": rng.random((700, 301)) < 0.55}
    for name, mask in masks.items():
        ours = pm.connected_components(torch.from_numpy(mask), connectivity).numpy()
        # uint8: cc3d 4.1.1 labels a background pixel of thin_lines at 8-connectivity from a bool mask
        ref = cc3d.connected_components(mask.astype(np.uint8), connectivity=connectivity)
        assert np.array_equal(ours, canonical(ref.astype(np.int64))), name
        _, sp = cv2.connectedComponentsWithAlgorithm(mask.astype(np.uint8), connectivity, cv2.CV_32S,
                                                     cv2.CCL_SPAGHETTI)
        assert np.array_equal(ours, canonical(sp)), name


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_batch(connectivity):
    rng = np.random.default_rng(7)
    # ~600k pixels: the kernel splits the rows into chunks, so components span chunk borders
    masks = np.stack([rng.random((1201, 101)) < p for p in (0.3, 0.5, 0.6, 0.0, 1.0)])
    masks[2, :, 20] = True  # a column through the whole image
    ours = pm.connected_components(torch.from_numpy(masks), connectivity).numpy()
    structure = ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    for o, m in zip(ours, masks):
        assert np.array_equal(o, ndi.label(m, structure=structure)[0])


def test_connected_components_threads():
    # big enough (~570k pixels per image) for the kernel to split one image's rows into
    # chunks labelled in parallel (one image, several threads) and join them; with as many
    # images as threads it labels whole images in parallel instead
    masks = np.random.default_rng(8).random((2, 1100, 520)) < 0.55
    masks[1, :, 100] = True  # a column through every chunk
    x = torch.from_numpy(masks)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        whole = pm.connected_components(x)
        torch.set_num_threads(max(2, old))
        chunked = torch.cat([pm.connected_components(x[i:i + 1]) for i in range(2)])
    finally:
        torch.set_num_threads(old)
    assert torch.equal(whole, chunked)
    for o, m in zip(whole.numpy(), masks):
        assert np.array_equal(o, ndi.label(m, structure=np.ones((3, 3)))[0])


# ----------------------------------------------------------------------------- bad input


def test_bad_input_refine():
    x = torch.from_numpy(MAPS["blocky"])
    with pytest.raises(TypeError, match=r"instances should be a torch.Tensor, got ndarray"):
        pm.refine(MAPS["blocky"], min_size=1)
    with pytest.raises(ValueError, match=r"instances should be a \[B, H, W\] or \[H, W\] tensor, got shape \(5,\)"):
        pm.refine(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 3, 4\)"):
        pm.refine(torch.zeros(1, 2, 3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"instances should be an integer tensor .* got torch.float32"):
        pm.refine(x.float())
    with pytest.raises(TypeError, match=r"got torch.bool"):
        pm.refine(x > 0)
    with pytest.raises(ValueError, match=r"open_radius should be >= 0, got -1"):
        pm.refine(x, open_radius=-1)
    with pytest.raises(ValueError, match=r"close_radius should be >= 0, got -2"):
        pm.closing(x, -2)
    with pytest.raises(TypeError, match=r"close_radius should be an int, got float 1.5"):
        pm.refine(x, close_radius=1.5)
    with pytest.raises(TypeError, match=r"open_radius should be an int, got bool True"):
        pm.refine(x, open_radius=True)
    with pytest.raises(ValueError, match=r"min_size should be >= 0, got -3"):
        pm.remove_small_components(x, -3)
    with pytest.raises(TypeError, match=r"fill_holes should be a bool, got int 1"):
        pm.refine(x, fill_holes=1)
    with pytest.raises(ValueError, match=r"shape should be one of \('square', 'disk'\), got 'circle'"):
        pm.refine(x, open_radius=1, shape="circle")
    with pytest.raises(ValueError, match=r"connectivity should be 4 or 8, got 6"):
        pm.refine(x, min_size=2, connectivity=6)
    neg = x.clone()
    neg[3, 4] = -2
    with pytest.raises(ValueError, match=r"instances should hold ids >= 0 \(0 = no instance\), got negative values"):
        pm.refine(neg, close_radius=1)
    with pytest.raises(ValueError, match=r"got negative values"):
        pm.refine(neg)


def test_bad_input_connected_components():
    with pytest.raises(TypeError, match=r"mask should be a bool tensor, got torch.int64"):
        pm.connected_components(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask should be a \[B, H, W\] or \[H, W\] tensor, got shape \(4,\)"):
        pm.connected_components(torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"connectivity should be 4 or 8, got 2"):
        pm.connected_components(torch.zeros(3, 4, dtype=torch.bool), 2)


def test_kernel_checks_without_python_wrapper():
    # the raw ops check their arguments too (the CUDA helper builds on these schemas)
    with pytest.raises(RuntimeError, match=r"instances should be a 3-D tensor \[B, H, W\]"):
        ops.morph_refine(torch.zeros(3, 4, dtype=torch.long), 1, 0, False, False, 0, False, 8)
    with pytest.raises(ValueError, match=r"open_radius should be >= 0, got -1"):
        ops.morph_refine(torch.zeros(1, 3, 4, dtype=torch.long), -1, 0, False, False, 0, False, 8)
    with pytest.raises(TypeError, match=r"instances should be an integer tensor"):
        ops.morph_refine(torch.zeros(1, 3, 4), 1, 0, False, False, 0, False, 8)
    with pytest.raises(RuntimeError, match=r"mask should be Bool, got Long"):
        ops.connected_components(torch.zeros(1, 3, 4, dtype=torch.long), 8)

