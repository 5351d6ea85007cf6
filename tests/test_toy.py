"""pst.data.toy: procedural scenes, their ground truth, determinism, speed and the domain gap."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from pst.data.toy import STYLES, ToyScenes, ToyStyle, blend_styles, get_style, render_scene
from pst.labels import TOY


def test_sample_format_and_ground_truth():
    for i in range(12):
        s = render_scene(0, i, "target")
        img, sem, ins = s["image"], s["semantic"], s["instances"]
        assert img.dtype == torch.float32 and img.shape == (3, 128, 256)
        assert 0 <= img.min() and img.max() <= 1
        assert sem.dtype == torch.int64 and ins.dtype == torch.int64 and sem.shape == ins.shape == (128, 256)
        assert 0 <= sem.min() and sem.max() < TOY.num_classes  # every pixel labelled
        ids = torch.unique(ins)
        assert torch.equal(ids, torch.arange(len(ids)))  # 0, 1..K consecutive
        things = torch.isin(sem, torch.tensor(TOY.thing_ids))
        assert torch.equal(ins > 0, things)  # instances exactly on thing pixels
        for k in ids[1:]:  # each instance inside one thing class
            assert len(torch.unique(sem[ins == k])) == 1
        assert s["name"] == f"toy-target-0-{i}"


def test_deterministic_from_seed_index_style():
    a, b = render_scene(5, 3, "source"), render_scene(5, 3, "source")
    for k in ("image", "semantic", "instances"):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["semantic"], render_scene(5, 4, "source")["semantic"])
    assert not torch.equal(a["semantic"], render_scene(6, 3, "source")["semantic"])
    t = render_scene(5, 3, "target")
    assert not torch.allclose(a["image"], t["image"])
    # independent of the global random state
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(render_scene(5, 3, "source")["image"], a["image"])


def test_scenes_hold_all_classes_and_touching_instances():
    seen = np.zeros(TOY.num_classes, bool)
    touching = 0
    n = 40
    for i in range(n):
        s = render_scene(1, i, "source")
        seen[np.unique(s["semantic"].numpy())] = True
        ins = s["instances"].numpy()
        # two different instances side by side (4-neighbours): touching or overlapping objects
        h = (ins[:, 1:] > 0) & (ins[:, :-1] > 0) & (ins[:, 1:] != ins[:, :-1])
        v = (ins[1:] > 0) & (ins[:-1] > 0) & (ins[1:] != ins[:-1])
        touching += bool(h.any() or v.any())
    assert seen.all(), [c for c, ok in zip(TOY.classes, seen) if not ok]
    assert touching >= n // 2


def _pixels(style, seed, n):
    X, Y = [], []
    for i in range(n):
        s = render_scene(seed, i, style, (64, 128))
        X.append(s["image"].reshape(3, -1).T.numpy())
        Y.append(s["semantic"].reshape(-1).numpy())
    return np.concatenate(X), np.concatenate(Y)


def test_domain_gap_for_a_colour_classifier():
    """A nearest-class-mean colour classifier fitted on source pixels is much worse on target."""
    X, Y = _pixels("source", 0, 16)
    means = np.stack([X[Y == c].mean(0) for c in range(TOY.num_classes)])

    def accuracy(X, Y):
        pred = ((X[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
        return (pred == Y).mean()

    acc_source = accuracy(*_pixels("source", 1, 16))
    acc_target = accuracy(*_pixels("target", 1, 16))
    assert acc_source > 0.75
    assert acc_target < acc_source - 0.3, (acc_source, acc_target)


def test_target_has_larger_objects_noise_and_blur():
    src = [render_scene(2, i, "source") for i in range(16)]
    tgt = [render_scene(2, i, "target") for i in range(16)]
    frac = lambda ss: np.mean([(s["instances"] > 0).float().mean().item() for s in ss])  # noqa: E731
    assert frac(tgt) > frac(src)
    # sensor noise: neighbouring pixels inside the sky differ in the target, hardly in the source
    def sky_roughness(ss):
        vals = []
        for s in ss:
            sky = (s["semantic"] == TOY.index("sky"))
            both = sky[:, 1:] & sky[:, :-1]
            vals.append((s["image"][:, :, 1:] - s["image"][:, :, :-1]).abs().mean(0)[both].mean().item())
        return np.nanmean(vals)
    assert sky_roughness(tgt) > 3 * sky_roughness(src)


def test_render_speed():
    n = 30
    render_scene(0, 0, "target")
    t0 = time.process_time()
    for i in range(n):
        render_scene(0, i, "target")
    per_scene = (time.process_time() - t0) / n
    assert per_scene < 0.025, f"{per_scene * 1e3:.1f} ms per 128x256 scene"


def test_sizes_styles_and_dataset():
    s = render_scene(0, 0, "source", (64, 96))
    assert s["image"].shape == (3, 64, 96)
    ds = ToyScenes(5, seed=2, style="target", size=(32, 64), transform=lambda x: {**x, "t": 1})
    assert len(ds) == 5 and ds[-1]["name"] == "toy-target-2-4" and ds[0]["t"] == 1
    with pytest.raises(IndexError, match="index 5 out of range for 5 toy scenes"):
        ds[5]
    batch = next(iter(torch.utils.data.DataLoader(ToyScenes(4, size=(32, 64)), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 64) and batch["instances"].shape == (4, 32, 64)
    assert set(STYLES) >= {"source", "target"} and get_style("target") is STYLES["target"]
    custom = dataclasses.replace(STYLES["target"], name="foggy", blur=2.0, brightness=1.2)
    assert render_scene(0, 0, custom)["name"] == "toy-foggy-0-0"
    mid = blend_styles("source", "target", 0.5)
    np.testing.assert_allclose(mid.colors[0], (np.array(STYLES["source"].colors[0])
                                               + np.array(STYLES["target"].colors[0])) / 2)
    assert isinstance(mid.n_objects[0], int)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown toy style 'night'; known: source, target"):
        render_scene(0, 0, "night")
    with pytest.raises(TypeError, match="style should be a style name or a ToyStyle"):
        render_scene(0, 0, 3)
    with pytest.raises(ValueError, match="seed should be an int >= 0"):
        render_scene(-1, 0)
    with pytest.raises(ValueError, match="index should be an int >= 0"):
        render_scene(0, 1.5)
    with pytest.raises(ValueError, match=r"size should be \(H, W\) with 16 <= H, W <= 4096"):
        render_scene(0, 0, size=(8, 256))
    with pytest.raises(ValueError, match=r"size should be \(H, W\)"):
        ToyScenes(3, size=128)
    with pytest.raises(ValueError, match="n should be an int >= 0"):
        ToyScenes(-1)
    with pytest.raises(ValueError, match="colors should be 11 RGB triples"):
        ToyStyle(name="x", colors=((0, 0, 0),))
    with pytest.raises(ValueError, match="noise should be a finite number >= 0"):
        dataclasses.replace(STYLES["source"], noise=float("nan"))
    with pytest.raises(ValueError, match="object_scale should be"):
        dataclasses.replace(STYLES["source"], object_scale=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"t should be in \[0, 1\]"):
        blend_styles("source", "target", 1.5)
