"""pst.cluster.cluster_instances and sample_anchors against per-segment references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import cluster as skc

import pst.cluster as pc


def scene(b=2, d=4, h=40, w=60, seed=0, noise=0.08):
    """Instances with well separated embeddings inside two thing classes (3 and 5)."""
    g = torch.Generator().manual_seed(seed)
    sem = torch.zeros(b, h, w, dtype=torch.long)
    inst = torch.zeros(b, h, w, dtype=torch.long)
    k = 0
    for i in range(b):
        for cls, (y0, x0) in [(3, (2, 2)), (3, (2, 14)), (5, (20, 5)), (5, (20, 30)), (3, (25, 45))]:
            k += 1
            hh, ww = 8 + int(torch.randint(0, 8, (1,), generator=g)), 10 + int(torch.randint(0, 4, (1,), generator=g))
            sem[i, y0:y0 + hh, x0:x0 + ww] = cls
            inst[i, y0:y0 + hh, x0:x0 + ww] = k
    sem[:, 0, :] = 1  # a stuff row
    centers = torch.randn(k + 1, d, generator=g, dtype=torch.float64) * 3
    emb = centers[inst].permute(0, 3, 1, 2) + noise * torch.randn(b, d, h, w, generator=g, dtype=torch.float64)
    obj = (inst > 0).double() * 0.8 + 0.1
    return emb, sem, inst, obj


def same_partition(a, b):
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("method", ["meanshift", "meanshift++", "agglomerative"])
def test_recovers_separated_instances(method):
    emb, sem, inst, obj = scene()
    out = pc.cluster_instances(emb, sem, obj, thing_classes=[3, 5], method=method, bandwidth=1.0)
    assert out.shape == sem.shape and out.dtype == torch.int64
    thing = (sem == 3) | (sem == 5)
    assert ((out > 0) == thing).all()
    for b in range(sem.shape[0]):
        m = thing[b]
        assert same_partition(out[b][m], inst[b][m])
        assert out[b].max() == len(inst[b][m].unique())  # ids 1..K per image


def test_meanshift_equals_sklearn_per_segment_with_the_same_seeds():
    emb, sem, inst, obj = scene(noise=0.6, seed=3)
    bw, k = 1.2, 16
    out = pc.cluster_instances(emb, sem, obj, thing_classes=[3, 5], method="meanshift", bandwidth=bw,
                               n_anchors=k, seed=11)
    b_, d, h, w = emb.shape
    for b in range(b_):
        for cls in (3, 5):
            mask = sem[b] == cls
            pts = emb[b].permute(1, 2, 0)[mask].numpy()
            # the anchors the op draws: same generator, same segment layout (one image, one class)
            flat = mask.reshape(-1).nonzero().squeeze(1)
            anchors = pc.sample_anchors(obj[b] + 1e-12, mask, k, seed=11)
            anchors = anchors[anchors >= 0]
            rows = torch.searchsorted(flat, anchors).numpy()
            ref = skc.MeanShift(bandwidth=bw, seeds=pts[rows]).fit(pts)
            assert same_partition(out[b][mask], torch.from_numpy(ref.labels_))


def test_meanshift_pp_equals_per_segment_calls_and_merge():
    emb, sem, inst, obj = scene(noise=0.5, seed=4)
    out = pc.cluster_instances(emb, sem, None, thing_classes=[5, 3], method="meanshift++", bandwidth=0.7,
                               merge_distance=2.0)
    for b in range(emb.shape[0]):
        for cls in (3, 5):
            mask = sem[b] == cls
            pts = emb[b].permute(1, 2, 0)[mask]
            _, labels, _ = pc.grid_mean_shift(pts, bandwidth=0.7, merge_distance=2.0)
            assert same_partition(out[b][mask], labels)


def test_min_size_and_ordering():
    emb, sem, inst, obj = scene()
    sizes = torch.bincount(inst[0].reshape(-1))
    cut = int(sizes[1:][sizes[1:] > 0].float().median())
    out = pc.cluster_instances(emb, sem, obj, thing_classes=[3, 5], bandwidth=1.0, min_size=cut)
    for b in range(emb.shape[0]):
        for i in inst[b].unique().tolist():
            if i == 0:
                continue
            m = inst[b] == i
            assert (out[b][m] > 0).all() == (int(m.sum()) >= cut)
        # ids: class order (3 then 5), size descending inside a class
        ids = out[b][out[b] > 0]
        cnt = torch.bincount(ids)[1:]
        cls = torch.zeros_like(cnt)
        for j in range(cnt.numel()):
            cls[j] = sem[b][out[b] == j + 1][0]
        assert (cls.diff() >= 0).all()
        for c in (3, 5):
            assert (cnt[cls == c].diff() <= 0).all()


def test_empty_masks_and_no_things():
    emb, sem, inst, obj = scene()
    z = pc.cluster_instances(emb, torch.zeros_like(sem), obj, thing_classes=[3, 5])
    assert (z == 0).all()
    z = pc.cluster_instances(emb, sem, obj, thing_classes=[])
    assert (z == 0).all()
    # one image without things, the other with
    sem2 = sem.clone()
    sem2[0] = 0
    out = pc.cluster_instances(emb, sem2, obj, thing_classes=[3, 5], bandwidth=1.0)
    assert (out[0] == 0).all() and out[1].max() > 0
    # a single thing pixel
    sem3 = torch.zeros_like(sem)
    sem3[0, 5, 5] = 3
    out = pc.cluster_instances(emb, sem3, obj, thing_classes=[3], bandwidth=1.0)
    assert out[0, 5, 5] == 1 and int((out > 0).sum()) == 1


def test_bad_input():
    emb, sem, inst, obj = scene()
    with pytest.raises(ValueError, match=r"embeddings should be \[B, D, H, W\]"):
        pc.cluster_instances(emb[0], sem, obj, thing_classes=[3])
    with pytest.raises(ValueError, match=r"semantic should have shape \[2, 40, 60\], got \[2, 40, 59\]"):
        pc.cluster_instances(emb, sem[..., :-1], obj, thing_classes=[3])
    with pytest.raises(TypeError, match="semantic should be an integer or bool tensor"):
        pc.cluster_instances(emb, sem.float(), obj, thing_classes=[3])
    with pytest.raises(ValueError, match="objectness should have shape"):
        pc.cluster_instances(emb, sem, obj[:1], thing_classes=[3])
    with pytest.raises(ValueError, match="method should be one of"):
        pc.cluster_instances(emb, sem, obj, thing_classes=[3], method="kmeans")
    with pytest.raises(ValueError, match="bandwidth should be > 0.0"):
        pc.cluster_instances(emb, sem, obj, thing_classes=[3], bandwidth=0)
    with pytest.raises(ValueError, match="repeated"):
        pc.cluster_instances(emb, sem, obj, thing_classes=[3, 3])
    bad = emb.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity inside the thing masks"):
        pc.cluster_instances(bad, sem, obj, thing_classes=[3])
    # NaN outside the masks does not matter
    bad = emb.clone()
    bad[0, 0, 0, 0] = float("nan")
    pc.cluster_instances(bad, sem, obj, thing_classes=[3], bandwidth=1.0)
    badobj = obj.clone()
    badobj[0, 3, 3] = -1
    with pytest.raises(ValueError, match="objectness should be finite and >= 0"):
        pc.cluster_instances(emb, sem, badobj, thing_classes=[3])


# ----------------------------------------------------------------------------- anchors


def test_sample_anchors_properties():
    g = torch.Generator().manual_seed(0)
    obj = torch.rand(2, 30, 40, generator=g)
    mask = torch.rand(2, 30, 40, generator=g) > 0.5
    mask[1] = False
    mask[1, 3:6, 3:6] = True  # 9 pixels only
    a = pc.sample_anchors(obj, mask, 20, min_distance=2.0, seed=5)
    assert a.shape == (2, 20) and a.dtype == torch.int64
    assert (a == pc.sample_anchors(obj, mask, 20, min_distance=2.0, seed=5)).all()
    assert not (a == pc.sample_anchors(obj, mask, 20, min_distance=2.0, seed=6)).all()
    for b in range(2):
        got = a[b][a[b] >= 0]
        assert mask[b].reshape(-1)[got].all()
        yx = torch.stack([got // 40, got % 40], 1).double()
        dist = torch.cdist(yx, yx) + torch.eye(len(got)) * 1e9
        assert (dist >= 2.0).all()
        assert len(set(got.tolist())) == len(got)
    # 3x3 block with spacing 2: at most 4 anchors fit (corners), and at least 1
    n1 = int((a[1] >= 0).sum())
    assert 1 <= n1 <= 4
    # padding is at the end
    assert (a[1][n1:] == -1).all()


def test_sample_anchors_follow_objectness():
    # draws without replacement of one anchor: frequency proportional to the weight
    obj = torch.tensor([[1.0, 3.0, 0.0, 6.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    counts = np.zeros(4)
    for s in range(4000):
        counts[int(pc.sample_anchors(obj, mask, 1, seed=s)[0])] += 1
    assert counts[2] == 0
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.3, 0.0, 0.6], atol=0.03)


def test_sample_anchors_bad_input():
    obj = torch.rand(3, 4)
    with pytest.raises(ValueError, match=r"mask should have shape \[3, 4\]"):
        pc.sample_anchors(obj, torch.ones(4, 3, dtype=torch.bool), 2)
    with pytest.raises(TypeError, match="objectness should be a floating tensor"):
        pc.sample_anchors(torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="objectness contains NaN"):
        pc.sample_anchors(torch.full((3, 4), float("nan")), torch.ones(3, 4, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="k should be >= 0"):
        pc.sample_anchors(obj, torch.ones(3, 4, dtype=torch.bool), -1)
    empty = pc.sample_anchors(obj, torch.zeros(3, 4, dtype=torch.bool), 3)
    assert (empty == -1).all()
