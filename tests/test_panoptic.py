"""pst.panoptic against obviously-correct pure-Python loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pst.labels import IGNORE
from pst.panoptic import VOID, fuse, masks_to_instance_map, merge_instance_maps, panoptic_to_semantic

C = 8
THINGS = (5, 6, 7)


def random_scene(rng, H=24, W=32, K=6, ignore_frac=0.05):
    sem = np.zeros((H, W), dtype=np.int64)
    for _ in range(8):
        y, x = rng.integers(0, H - 2), rng.integers(0, W - 2)
        sem[y:y + rng.integers(2, 12), x:x + rng.integers(2, 16)] = rng.integers(0, C)
    sem[rng.random((H, W)) < ignore_frac] = IGNORE
    inst = np.zeros((H, W), dtype=np.int64)
    for k in range(1, K + 1):
        y, x = rng.integers(0, H - 2), rng.integers(0, W - 2)
        inst[y:y + rng.integers(1, 9), x:x + rng.integers(1, 11)] = k
    return sem, inst


def ref_fuse(sem, inst, *, things=THINGS, div=1000, instance_classes=None, scores=None, min_score=None,
             thing_area=0, stuff_area=0, unassigned="void", thing_pixels_only=False):
    pan = np.full(sem.shape, VOID, dtype=np.int64)
    thing_pix = np.isin(sem, things)
    covered = np.zeros(sem.shape, dtype=bool)
    for k in np.unique(inst):
        if k == 0:
            continue
        m = inst == k
        area = (m & thing_pix).sum() if thing_pixels_only else m.sum()
        if area < max(thing_area, 1):
            continue
        if instance_classes is None:
            votes = {c: int((sem[m] == c).sum()) for c in things}
            best = max(votes.values())
            if best == 0:
                continue
            cls = min(c for c in things if votes[c] == best)
        else:
            cls = int(instance_classes[k - 1])
        if min_score is not None and scores[k - 1] < min_score:
            continue
        pix = m & thing_pix if thing_pixels_only else m
        pan[pix] = cls * div + k
        covered |= pix
    for c in range(C):
        if c in things and unassigned == "void":
            continue
        region = (sem == c) & ~covered
        if region.any() and region.sum() >= stuff_area:
            pan[region] = c * div
    return pan


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("unassigned", ["void", "segment"])
def test_fuse_matches_reference(seed, unassigned, device):
    rng = np.random.default_rng(seed)
    sem, inst = random_scene(rng)
    kw = dict(thing_area=int(rng.integers(0, 20)), stuff_area=int(rng.integers(0, 60)), unassigned=unassigned,
              thing_pixels_only=bool(seed % 2))
    ours = fuse(torch.from_numpy(sem).to(device), torch.from_numpy(inst).to(device), thing_ids=THINGS,
                num_classes=C, thing_area=kw["thing_area"], stuff_area=kw["stuff_area"],
                unassigned_things=unassigned, thing_pixels_only=kw["thing_pixels_only"])
    assert ours.device.type == torch.device(device).type and ours.dtype == torch.int64
    np.testing.assert_array_equal(ours.cpu().numpy(), ref_fuse(sem, inst, **kw))


def test_fuse_with_classes_and_scores():
    rng = np.random.default_rng(7)
    sem, inst = random_scene(rng, K=6)
    classes = torch.tensor([5, 6, 7, 5, 6, 7])
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.45])
    ours = fuse(torch.from_numpy(sem), torch.from_numpy(inst), thing_ids=THINGS, num_classes=C,
                instance_classes=classes, scores=scores, min_score=0.4, stuff_area=0)
    ref = ref_fuse(sem, inst, instance_classes=classes.numpy(), scores=scores.numpy(), min_score=0.4)
    np.testing.assert_array_equal(ours.numpy(), ref)


def test_fuse_batched_equals_single():
    rng = np.random.default_rng(3)
    scenes = [random_scene(rng) for _ in range(3)]
    sem = torch.from_numpy(np.stack([s for s, _ in scenes]))
    inst = torch.from_numpy(np.stack([i for _, i in scenes]))
    batched = fuse(sem, inst, thing_ids=THINGS, num_classes=C, stuff_area=30)
    for b in range(3):
        single = fuse(sem[b], inst[b], thing_ids=THINGS, num_classes=C, stuff_area=30)
        assert torch.equal(batched[b], single)


def test_fuse_majority_vote_and_ties():
    sem = torch.tensor([[5, 5, 6, 6, 6, 0], [7, 7, 6, 6, 0, 0]])
    inst = torch.tensor([[1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 2, 0]])
    pan = fuse(sem, inst, thing_ids=THINGS, num_classes=C, stuff_area=0)
    # instance 1: votes 5:2, 6:1, 7:2 -> tie 5/7 goes to 5; instance 2: 6 wins, its road pixels follow it
    assert pan.tolist() == [[5001] * 3 + [6002] * 3, [5001, 5001] + [6002] * 3 + [0]]


def test_fuse_errors():
    s = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"semantic and instances should have the same shape, got \(4, 4\) and \(4, 5\)"):
        fuse(s, torch.zeros(4, 5, dtype=torch.long), thing_ids=THINGS)
    with pytest.raises(TypeError, match="instances should be an integer tensor, got dtype torch.float32"):
        fuse(s, torch.zeros(4, 4), thing_ids=THINGS)
    with pytest.raises(ValueError, match=r"should have shape \[H, W\] or \[B, H, W\], got \(4,\)"):
        fuse(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), thing_ids=THINGS)
    with pytest.raises(ValueError, match="instances should be >= 0"):
        fuse(s, s - 1, thing_ids=THINGS)
    with pytest.raises(ValueError, match="instance ids should be below label_divisor=1000, got 1000"):
        fuse(s, s + 1000, thing_ids=THINGS)
    with pytest.raises(ValueError, match="unassigned_things should be 'void' or 'segment', got 'x'"):
        fuse(s, s, thing_ids=THINGS, unassigned_things="x")
    with pytest.raises(ValueError, match="min_score needs scores"):
        fuse(s, s, thing_ids=THINGS, min_score=0.5)
    with pytest.raises(ValueError, match="semantic holds class 9, but num_classes is 8"):
        fuse(s + 9, s, thing_ids=THINGS, num_classes=C)
    with pytest.raises(ValueError, match=r"thing_ids should lie in \[0, 8\)"):
        fuse(s, s, thing_ids=(9,), num_classes=C)
    with pytest.raises(ValueError, match="scores should not be NaN"):
        fuse(s, s + 1, thing_ids=(0,), num_classes=C, scores=torch.tensor([float("nan")]), min_score=0.1)
    with pytest.raises(ValueError, match=r"instance_classes should hold thing ids"):
        fuse(s, s + 1, thing_ids=THINGS, num_classes=C, instance_classes=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"scores has 1 entries per image, but the instance map holds id 2"):
        fuse(s, s + 2, thing_ids=THINGS, num_classes=C, scores=torch.tensor([0.5]), min_score=0.1)


def test_fuse_empty_and_all_ignore():
    e = torch.zeros(0, 5, dtype=torch.long)
    assert fuse(e, e, thing_ids=THINGS, num_classes=C).shape == (0, 5)
    eb = torch.zeros(0, 3, 4, dtype=torch.long)  # empty batch
    assert fuse(eb, eb, thing_ids=THINGS, num_classes=C).shape == (0, 3, 4)
    assert merge_instance_maps([eb], [torch.zeros(0, 2)]).instances.shape == (0, 3, 4)
    ign = torch.full((3, 3), IGNORE)
    assert (fuse(ign, torch.zeros(3, 3, dtype=torch.long), thing_ids=THINGS, num_classes=C) == VOID).all()


def ref_merge(maps, scores):
    M = len(maps)
    H, W = maps[0].shape
    winner = np.zeros((H, W, 2), dtype=np.int64)  # (map, id)
    for y in range(H):
        for x in range(W):
            best = None
            for m in range(M):
                k = maps[m][y, x]
                if k > 0 and (best is None or scores[m][k - 1] > best[0]):
                    best = (scores[m][k - 1], m, k)
            winner[y, x] = (best[1], best[2]) if best else (-1, 0)
    present = sorted({(int(m), int(k)) for m, k in winner.reshape(-1, 2) if k > 0})
    lut = {mk: i + 1 for i, mk in enumerate(present)}
    out = np.array([[lut.get((int(m), int(k)), 0) for m, k in row] for row in winner])
    return out, [scores[m][k - 1] for m, k in present], present


@pytest.mark.parametrize("seed", range(4))
def test_merge_instance_maps_matches_reference(seed):
    rng = np.random.default_rng(seed)
    maps, scores = [], []
    for _ in range(3):
        _, inst = random_scene(rng, H=12, W=16, K=5)
        maps.append(inst)
        s = rng.choice([0.2, 0.5, 0.7], size=5)  # ties between maps on purpose
        scores.append(s)
    res = merge_instance_maps([torch.from_numpy(m) for m in maps], [torch.from_numpy(s) for s in scores])
    out, sc, present = ref_merge(maps, scores)
    np.testing.assert_array_equal(res.instances.numpy(), out)
    np.testing.assert_array_equal(res.scores.numpy(), sc)
    assert list(zip(res.source.tolist(), res.source_id.tolist())) == present


def test_merge_batched_and_errors():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(np.stack([random_scene(rng, K=3)[1] for _ in range(2)]))
    b = torch.from_numpy(np.stack([random_scene(rng, K=3)[1] for _ in range(2)]))
    sa, sb = torch.rand(2, 3), torch.rand(2, 3)
    res = merge_instance_maps([a, b], [sa, sb])
    for i in range(2):
        single = merge_instance_maps([a[i], b[i]], [sa[i], sb[i]])
        assert torch.equal(res.instances[i], single.instances)
    with pytest.raises(ValueError, match="at least one instance map"):
        merge_instance_maps([], [])
    with pytest.raises(ValueError, match="one scores tensor per map, got 2 maps and 1 scores"):
        merge_instance_maps([a, b], [sa])
    with pytest.raises(ValueError, match=r"maps\[1\] holds instance id 3, but scores\[1\] has only 2 entries"):
        merge_instance_maps([a, b], [sa, sb[:, :2]])
    with pytest.raises(ValueError, match=r"scores\[0\] should not be NaN"):
        merge_instance_maps([a], [torch.full((2, 3), float("nan"))])


def test_masks_to_instance_map_matches_reference():
    rng = np.random.default_rng(5)
    masks = rng.random((7, 10, 12)) < 0.3
    scores = rng.choice([0.1, 0.4, 0.9], size=7)
    out = masks_to_instance_map(torch.from_numpy(masks), torch.from_numpy(scores)).numpy()
    for y in range(10):
        for x in range(12):
            cands = [(-scores[n], n) for n in range(7) if masks[n, y, x]]
            assert out[y, x] == (min(cands)[1] + 1 if cands else 0)
    assert masks_to_instance_map(torch.zeros(0, 3, 4, dtype=torch.bool), torch.zeros(0)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"scores should have shape \[N\]=\[7\], got \(6,\)"):
        masks_to_instance_map(torch.from_numpy(masks), torch.zeros(6))
    with pytest.raises(ValueError, match="masks should be bool or 0/1 integers"):
        masks_to_instance_map(torch.full((1, 2, 2), 2), torch.zeros(1))


def test_panoptic_to_semantic():
    pan = torch.tensor([[VOID, 0, 5003], [7000, 255001, 1999]])
    assert panoptic_to_semantic(pan).tolist() == [[IGNORE, 0, 5], [7, 255, 1]]
