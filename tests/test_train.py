"""The training framework: EMA, pseudo-labels, sampling, augmentation, checkpoints, resume."""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from pst.config import load_config
from pst.labels import IGNORE, TOY
from pst.train.checkpoint import find_checkpoints, load_checkpoint, save_checkpoint
from pst.train.data import StepSampler, gt_panoptic, photometric, scale_crop, shift_hue, step_generator
from pst.train.ema import ema_update, make_teacher, recalibrate_bn
from pst.train.model import instance_groups, set_lr
from pst.train.pseudo import (ClassPrior, SemanticPseudoSettings, class_thresholds, instance_scores,
                              semantic_pseudo_labels)
from pst.train.report import colorize_panoptic, gap_closed

# a tiny but complete pipeline: every stage runs a couple of steps on 64x128 toy scenes
TINY = [
    "data.source.n=8", "data.target.n=8", "data.target_val.n=4", "data.size=[64,128]", "data.batch_size=2",
    "model.width=8", "source.steps=4", "source.checkpoint_every=2", "source.log_every=2", "source.warmup=1",
    "selftrain.steps=4", "selftrain.eval_every=2", "selftrain.checkpoint_every=2", "selftrain.log_every=2",
    "selftrain.ema_every=1", "selftrain.n_views=2", "selftrain.bn_recalibrate=4", "eval.n_overlays=2",
    "eval.stuff_area=16",
    "categories=[base]", "device=cpu",
]


def tiny_config(*extra):
    return load_config("toy", TINY + list(extra))


# --------------------------------------------------------------------------- EMA

class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


def test_ema_update_matches_formula_on_weights_and_buffers():
    torch.manual_seed(0)
    s = _Net()
    t = make_teacher(s)
    assert not any(p.requires_grad for p in t.parameters()) and not t.training
    with torch.no_grad():
        for p in s.parameters():
            p.add_(torch.randn_like(p))
        s.bn.running_mean.add_(1.0)
        s.bn.num_batches_tracked += 5
    before = {k: v.clone() for k, v in t.state_dict().items()}
    ema_update(t, s, 0.9)
    for k, v in t.state_dict().items():
        sv = s.state_dict()[k]
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * sv)
        else:
            assert torch.equal(v, sv)
    ema_update(t, s, 0.0)  # momentum 0 copies the student
    for k, v in t.state_dict().items():
        torch.testing.assert_close(v, s.state_dict()[k].to(v.dtype))


def test_ema_update_errors():
    s = _Net()
    with pytest.raises(ValueError, match=r"momentum should be in \[0, 1\], got 1.5"):
        ema_update(make_teacher(s), s, 1.5)
    other = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="same tensors"):
        ema_update(other, s, 0.9)


def test_recalibrate_bn_averages_batch_statistics():
    torch.manual_seed(0)
    net = _Net()
    make_teacher(net)  # unrelated copy: must not be touched
    net.eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "tracked" not in k}
    batches = [torch.randn(3, 3, 6, 5) * (i + 1) + i for i in range(3)]
    assert recalibrate_bn(net, iter(batches), forward=lambda m, x: m.bn(m.conv(x))) == 3
    with torch.no_grad():
        ys = [net.conv(x) for x in batches]
    mean = torch.stack([y.mean(dim=(0, 2, 3)) for y in ys]).mean(0)
    var = torch.stack([y.transpose(0, 1).reshape(4, -1).var(dim=1, unbiased=True) for y in ys]).mean(0)
    torch.testing.assert_close(net.bn.running_mean, mean)
    torch.testing.assert_close(net.bn.running_var, var)
    assert int(net.bn.num_batches_tracked) == 3 and net.bn.momentum == 0.1 and not net.training
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k


def test_recalibrate_bn_serves_several_models_from_one_pass():
    torch.manual_seed(0)
    a, b = _Net(), _Net()
    b.eval()
    batches = [torch.randn(2, 3, 5, 5) + i for i in range(2)]
    fwd = lambda m, x: m.bn(m.conv(x))  # noqa: E731
    ref_a, ref_b = copy.deepcopy(a), copy.deepcopy(b)
    recalibrate_bn(ref_a, batches, forward=fwd)
    recalibrate_bn(ref_b, batches, forward=fwd)
    reads = []
    assert recalibrate_bn([a, b], (reads.append(1) or x for x in batches), forward=fwd) == 2
    assert len(reads) == 2 and a.training and not b.training
    for got, ref in ((a, ref_a), (b, ref_b)):
        assert torch.equal(got.bn.running_mean, ref.bn.running_mean)
        assert torch.equal(got.bn.running_var, ref.bn.running_var)


def test_recalibrate_bn_without_batches_keeps_statistics():
    net = _Net()
    with torch.no_grad():
        net.bn.running_mean.fill_(2.0)
    assert recalibrate_bn(net, []) == 0
    assert torch.equal(net.bn.running_mean, torch.full((4,), 2.0)) and net.bn.momentum == 0.1


# --------------------------------------------------------------------------- pseudo-labels

def test_class_thresholds_match_loop():
    g = torch.Generator().manual_seed(0)
    B, C, H, W = 3, 5, 6, 7
    probs = torch.softmax(torch.randn(B, C, H, W, generator=g) * 3, 1)
    conf, lab = probs.max(1)
    chi = torch.tensor([0.5, 0.2, 1e-4, 0.01, 0.0])
    tau = class_thresholds(conf, lab, chi, minimum=0.2, scale=0.75, beta=1e-3)
    ref = torch.zeros(B, C)
    for b in range(B):
        for c in range(C):
            sel = conf[b][lab[b] == c]
            peak = float(sel.max()) if sel.numel() else 0.0
            ref[b, c] = max(0.2, 0.75 * peak * (1 - math.exp(-float(chi[c]) / 1e-3)))
    torch.testing.assert_close(tau, ref)


def test_class_prior_ema():
    p = ClassPrior(3, momentum=0.9)
    a = torch.zeros(1, 3, 2, 2)
    a[:, 0] = 1
    b = torch.zeros(1, 3, 2, 2)
    b[:, 1] = 1
    torch.testing.assert_close(p.update(a), torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(p.update(b), torch.tensor([0.9, 0.1, 0]))
    q = ClassPrior(3)
    q.load_state_dict(p.state_dict())
    torch.testing.assert_close(q.chi, p.chi)
    with pytest.raises(ValueError, match=r"probs should be \[B, 3, H, W\]"):
        p.update(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="num_classes should be >= 1"):
        ClassPrior(0)


class _FixedTeacher(nn.Module):
    """Logits that do not depend on the view: per-pixel logits given at construction."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1, -1, -1)[:, :, : x.shape[2], : x.shape[3]]


def test_semantic_pseudo_labels_threshold_and_ignore():
    C, H, W = 3, 4, 4
    logits = torch.zeros(1, C, H, W)
    logits[0, 0, :2] = 5.0   # confident class 0 on the top half
    logits[0, 1, 2:] = 0.3   # barely class 1 on the bottom half
    teacher = _FixedTeacher(logits)
    prior = ClassPrior(C)
    sp = semantic_pseudo_labels(teacher, torch.rand(1, 3, H, W), prior, SemanticPseudoSettings(n_views=1))
    probs = torch.softmax(logits, 1)
    conf, arg = probs.max(1)
    tau = class_thresholds(conf, arg, prior.chi)
    expect = torch.where(conf >= tau.gather(1, arg.view(1, -1)).view(1, H, W), arg, torch.full_like(arg, IGNORE))
    assert torch.equal(sp.labels, expect)
    assert (sp.labels[0, :2] == 0).all()  # peak pixels always pass their own class threshold
    torch.testing.assert_close(sp.probs, probs)
    torch.testing.assert_close(prior.chi, probs.mean(dim=(0, 2, 3)))


def test_class_prior_from_labels_counts_labelled_pixels():
    labels = torch.tensor([[[0, 1, 1, IGNORE], [2, 2, 2, 2]], [[1, IGNORE, IGNORE, 0], [0, 0, 2, 1]]])
    p = ClassPrior(4, momentum=0.5)
    counts = [sum(int(v == c) for v in labels.flatten().tolist()) for c in range(4)]
    freq = torch.tensor(counts, dtype=torch.float32) / sum(counts)
    torch.testing.assert_close(p.update_labels(labels), freq)
    second = torch.full((1, 2, 2), 3)
    torch.testing.assert_close(p.update_labels(second), 0.5 * freq + 0.5 * torch.tensor([0.0, 0, 0, 1]))
    before = p.chi.clone()
    assert torch.equal(p.update_labels(torch.full((1, 2, 2), IGNORE)), before)  # nothing labelled: unchanged
    with pytest.raises(ValueError, match=r"labels should be \[B, H, W\], got \(2, 2\)"):
        p.update_labels(torch.zeros(2, 2, dtype=torch.long))


def test_semantic_pseudo_labels_aligned_to_a_class_distribution():
    """align_to: probabilities times align_to / chi, renormalised, before argmax and thresholds."""
    C, H, W = 3, 4, 6
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, C, H, W, generator=g)
    logits[:, 2] += 1.0  # class 2 is over-predicted
    teacher = _FixedTeacher(logits)
    src = torch.tensor([0.5, 0.4, 0.1])
    prior = ClassPrior(C)
    sp = semantic_pseudo_labels(teacher, torch.rand(2, 3, H, W), prior, SemanticPseudoSettings(n_views=1),
                                align_to=src)
    probs = torch.softmax(logits, 1)
    chi = probs.mean(dim=(0, 2, 3))
    torch.testing.assert_close(prior.chi, chi)  # the prior sees the raw probabilities
    aligned = torch.empty_like(probs)
    for b in range(2):
        for y in range(H):
            for x in range(W):
                v = [float(probs[b, c, y, x]) * float(src[c]) / float(chi[c]) for c in range(C)]
                aligned[b, :, y, x] = torch.tensor(v) / sum(v)
    torch.testing.assert_close(sp.probs, aligned)
    conf, arg = aligned.max(1)
    tau = class_thresholds(conf, arg, chi)
    expect = torch.where(conf >= tau.gather(1, arg.view(2, -1)).view(2, H, W), arg, torch.full_like(arg, IGNORE))
    assert torch.equal(sp.labels, expect)
    assert (sp.argmax == 2).sum() < (probs.argmax(1) == 2).sum()  # the over-predicted class gave pixels up
    with pytest.raises(ValueError, match="align_to needs the teacher's class prior"):
        semantic_pseudo_labels(teacher, torch.rand(2, 3, H, W), None, SemanticPseudoSettings(n_views=1), align_to=src)
    with pytest.raises(ValueError, match=r"align_to should be \[3\] class frequencies, got \(2,\)"):
        semantic_pseudo_labels(teacher, torch.rand(2, 3, H, W), ClassPrior(C), SemanticPseudoSettings(n_views=1),
                               align_to=src[:2])


def test_align_config_checked():
    from pst.config import load_config

    assert load_config("toy", ["selftrain.align=source"]).selftrain.align == "source"
    assert load_config("toy", ["selftrain.align=off", "selftrain.mix=off"]).selftrain.align == "off"  # YAML: False
    with pytest.raises(ValueError, match="selftrain.align should be one of off, source, got 'target'"):
        load_config("toy", ["selftrain.align=target"])


def test_semantic_pseudo_labels_multi_view_is_consistent():
    """A teacher whose output is the same at every pixel gives the same fused output for any views."""
    C = 4
    teacher = _FixedTeacher(torch.tensor([2.0, 0.5, 0.0, -1.0]).view(1, C, 1, 1).expand(1, C, 32, 64).clone())
    g = torch.Generator().manual_seed(1)
    sp = semantic_pseudo_labels(teacher, torch.rand(2, 3, 32, 64), None, SemanticPseudoSettings(n_views=4),
                                generator=g)
    ref = torch.softmax(torch.tensor([2.0, 0.5, 0.0, -1.0]), 0)
    torch.testing.assert_close(sp.probs, ref.view(1, C, 1, 1).expand(2, C, 32, 64), atol=1e-5, rtol=1e-5)
    assert (sp.labels == 0).all()


def test_semantic_pseudo_settings_come_from_the_selftrain_config():
    st = tiny_config("selftrain.n_views=3", "selftrain.view_zoom=[0.6,0.9]", "selftrain.view_flip=false",
                     "selftrain.threshold_min=0.1", "selftrain.threshold_scale=0.5", "selftrain.prior_beta=0.01").selftrain
    assert SemanticPseudoSettings.from_config(st) == SemanticPseudoSettings(
        n_views=3, zoom=(0.6, 0.9), flip=False, minimum=0.1, scale=0.5, beta=0.01)
    teacher = _FixedTeacher(torch.zeros(1, 2, 4, 4))
    with pytest.raises(TypeError, match="SemanticPseudoSettings"):
        semantic_pseudo_labels(teacher, torch.rand(1, 3, 4, 4), None, st)


def test_check_finite_and_diverged_name_the_step_and_the_remedy():
    from pst.train.loop import check_finite, diverged

    check_finite({"a": torch.tensor(1.0)}, 3)
    with pytest.raises(FloatingPointError, match=re.escape("step 3: non-finite loss terms ['b', 'c']")):
        check_finite({"a": torch.tensor(1.0), "b": torch.tensor(float("nan")), "c": torch.tensor([0.0, -math.inf])}, 3)
    with pytest.raises(ValueError, match="selftrain step 5: the network diverged .*lower selftrain.lr or set "
                                         "selftrain.grad_clip") as info:
        with diverged("selftrain", 5):
            raise ValueError("logits contain NaN or infinity")
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="lower oracle.lr or set source.grad_clip"):
        with diverged("oracle", 0):
            raise ValueError("inf")
    with pytest.raises(ValueError, match="^other$"):  # other errors pass unchanged
        with diverged("source", 0):
            raise ValueError("other")


def test_stopwatch_sums_the_parts_of_counted_iterations():
    import time

    from pst.train.loop import Stopwatch

    w = Stopwatch(("data", "iteration"))
    for _ in range(2):
        with w.iteration():
            with w("data"):
                time.sleep(0.01)
    assert w.steps == 2 and 0.02 <= w.sums["data"] <= w.sums["iteration"]
    before = dict(w.sums)
    with pytest.raises(RuntimeError):
        with w.iteration(), w("data"):
            time.sleep(0.01)
            raise RuntimeError
    assert w.steps == 2 and w.sums == before  # a failed block adds nothing
    assert w.means() == {k: v / 2 for k, v in before.items()}


def test_instance_scores_match_loop():
    g = torch.Generator().manual_seed(0)
    inst = torch.randint(0, 4, (2, 5, 6), generator=g)
    w = torch.rand(2, 5, 6, generator=g)
    s = instance_scores(inst, w)
    K = int(inst.max())
    assert s.shape == (2, K)
    for b in range(2):
        for k in range(1, K + 1):
            m = inst[b] == k
            ref = float(w[b][m].mean()) if m.any() else 0.0
            assert abs(float(s[b, k - 1]) - ref) < 1e-6
    assert instance_scores(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2)).shape == (1, 0)


# --------------------------------------------------------------------------- data

def test_step_sampler_deterministic_and_disjoint():
    a = StepSampler(10, 3, seed=5)
    b = StepSampler(10, 3, seed=5)
    assert [a.indices(s) for s in range(7)] == [b.indices(s) for s in reversed(range(7))][::-1]
    # one epoch of a global batch covers a permutation
    flat = [i for s in range(10) for i in StepSampler(10, 1, seed=2).indices(s)]
    assert sorted(flat) == list(range(10))
    r0 = StepSampler(12, 2, seed=0, rank=0, world_size=2)
    r1 = StepSampler(12, 2, seed=0, rank=1, world_size=2)
    seen = [i for s in range(3) for i in r0.indices(s) + r1.indices(s)]
    assert sorted(seen) == list(range(12))
    with pytest.raises(ValueError, match="non-empty"):
        StepSampler(0, 1, seed=0)


def test_scale_crop_keeps_labels_consistent():
    H, W = 32, 64
    img = torch.rand(3, H, W)
    sem = torch.randint(0, 5, (H, W))
    sem[0, 0] = IGNORE
    inst = torch.randint(0, 3, (H, W))
    s = {"image": img, "semantic": sem, "instances": inst, "name": "x"}
    out1 = scale_crop(s, (16, 32), (0.5, 1.0), True, step_generator(0, "t", 1))
    out2 = scale_crop(s, (16, 32), (0.5, 1.0), True, step_generator(0, "t", 1))
    for k in ("image", "semantic", "instances"):
        assert torch.equal(out1[k], out2[k])
    assert out1["image"].shape == (3, 16, 32) and out1["semantic"].shape == (16, 32)
    assert set(out1["semantic"].unique().tolist()) <= set(sem.unique().tolist())
    assert out1["semantic"].dtype == torch.int64
    # zoom 1 and the same size: identity or a flip
    same = scale_crop(s, (H, W), (1.0, 1.0), True, step_generator(0, "t", 2))
    assert torch.equal(same["semantic"], sem) or torch.equal(same["semantic"], sem.flip(-1))


def test_photometric_range_and_determinism():
    x = torch.rand(4, 3, 8, 8)
    a = photometric(x, jitter=0.4, blur_p=0.5, greyscale_p=0.5, generator=step_generator(1, 2))
    b = photometric(x, jitter=0.4, blur_p=0.5, greyscale_p=0.5, generator=step_generator(1, 2))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(photometric(x, jitter=0, blur_p=0, greyscale_p=0, generator=step_generator(0)), x)


def test_shift_hue_matches_colorsys():
    import colorsys

    x = torch.rand(3, 3, 5, 6)
    x[0, :, 0, 0] = 0.5  # grey: no hue
    x[1, :, 1, 1] = 0.0  # black
    x[2, :, 2, 2] = torch.tensor([1.0, 0.0, 0.0])  # on a sector boundary
    x[2, :, 3, 3] = torch.tensor([0.2, 0.9, 0.9])  # two channels at the maximum
    shift = torch.tensor([0.1, -0.3, 0.45])
    got = shift_hue(x, shift)
    for b in range(3):
        for i in range(5):
            for j in range(6):
                h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                want = colorsys.hsv_to_rgb((h + float(shift[b])) % 1.0, s, v)
                assert torch.allclose(got[b, :, i, j], torch.tensor(want), atol=1e-5), (b, i, j)
    assert torch.allclose(shift_hue(x, torch.zeros(3)), x, atol=1e-6)
    assert torch.allclose(shift_hue(x, torch.ones(3)), x, atol=1e-5)  # a full turn
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\] float"):
        shift_hue(x[:, :2], shift)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\] float"):
        shift_hue((x * 255).to(torch.uint8), shift)
    with pytest.raises(ValueError, match="one per image"):
        shift_hue(x, shift[:2])


def test_photometric_hue():
    x = torch.rand(4, 3, 8, 8)
    plain = photometric(x, jitter=0.4, blur_p=0.5, greyscale_p=0.5, generator=step_generator(1, 2))
    a = photometric(x, jitter=0.4, blur_p=0.5, greyscale_p=0.5, hue=0.2, generator=step_generator(1, 2))
    b = photometric(x, jitter=0.4, blur_p=0.5, greyscale_p=0.5, hue=0.2, generator=step_generator(1, 2))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, plain)
    # value (the channel maximum) is what a hue rotation keeps: same as without it, before blur/greyscale
    c = photometric(x, jitter=0.0, blur_p=0.0, greyscale_p=0.0, hue=0.5, generator=step_generator(3))
    assert torch.allclose(c.amax(dim=1), x.amax(dim=1), atol=1e-6) and not torch.allclose(c, x)
    with pytest.raises(ValueError, match="augment.hue"):
        load_config("toy", ["augment.hue=0.7"])


def test_hue_in_source_stage_not_in_oracle(monkeypatch):
    import pst.train.source as source_mod
    from pst.train.runtime import setup_runtime

    class Seen(Exception):
        pass

    def spy(*args, augment, **kwargs):  # what the step loads its batch with; the step ends there
        raise Seen(augment.hue)

    cfg = tiny_config("augment.hue=0.3")
    monkeypatch.setattr(source_mod, "load_batch", spy)
    rt = setup_runtime(cfg, "cpu")
    for stage, hue in (("source", 0.3), ("oracle", 0.0)):
        with pytest.raises(Seen) as seen:
            source_mod.SupervisedStage(cfg, rt, stage).step(0)
        assert seen.value.args == (hue,)


def test_gt_panoptic_matches_loop():
    sem = torch.tensor([[0, 5, 5, IGNORE], [7, 7, 2, 5]])
    inst = torch.tensor([[0, 1, 1, 0], [2, 0, 9, 0]])
    pan = gt_panoptic(sem, inst, TOY.thing_ids)
    for (i, j), c in np.ndenumerate(sem.numpy()):
        if c == IGNORE:
            ref = -1
        elif c in TOY.thing_ids:
            ref = c * 1000 + int(inst[i, j])
        else:
            ref = c * 1000
        assert int(pan[i, j]) == ref


def test_instance_groups_follow_label_space():
    g = instance_groups(TOY, ["base", "ccm", "icm"])
    assert g["base__all"] == ("base", TOY.thing_ids)
    ccm = {k: v[1] for k, v in g.items() if v[0] == "ccm"}
    assert sorted(i for ids in ccm.values() for i in ids) == sorted(TOY.thing_ids)
    assert len([k for k, v in g.items() if v[0] == "icm"]) == len(TOY.thing_ids)


def test_poly_lr_schedule():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 1.0, "initial_lr": 1.0}], lr=1.0)
    assert set_lr(opt, 0, 10, power=1.0) == pytest.approx(1.0)
    assert set_lr(opt, 5, 10, power=1.0) == pytest.approx(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    assert set_lr(opt, 0, 10, power=1.0, warmup=4) == pytest.approx(0.25)


def test_gap_closed_and_colorize():
    assert gap_closed(0.2, 0.3, 0.4) == pytest.approx(0.5)
    assert gap_closed(0.2, 0.3, 0.2) is None
    assert gap_closed(0.2, float("nan"), 0.4) is None
    pan = torch.tensor([[5001, 5001, 0], [-1, 2000, 2000]])
    rgb = colorize_panoptic(pan, TOY)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[1, 0] == 0).all()  # void is black
    assert tuple(rgb[1, 2]) == TOY.colors[2]


# --------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_and_errors(tmp_path):
    p = tmp_path / "a" / "source.pt"
    save_checkpoint(p, {"stage": "source", "step": 3, "model": {"w": torch.ones(2)}})
    s = load_checkpoint(p, require=("model",))
    assert s["step"] == 3 and torch.equal(s["model"]["w"], torch.ones(2))
    assert not list(p.parent.glob(".tmp-*"))  # nothing half-written left behind
    assert find_checkpoints(tmp_path / "a") == {"source": p}
    assert find_checkpoints(p) == {"source": p}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    torch.save({"x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a pst checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        find_checkpoints(tmp_path / "empty_dir_that_exists" if (tmp_path / "empty_dir_that_exists").mkdir() is None
                         else tmp_path)


# --------------------------------------------------------------------------- resume

def _state(path):
    return load_checkpoint(path)["model"]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_source_resume_equals_uninterrupted(tmp_path):
    from pst.train.source import train_supervised

    cfg = tiny_config()
    full = train_supervised(cfg, tmp_path / "full", progress=False)
    assert train_supervised(cfg, tmp_path / "cut", max_steps=2, progress=False) is None
    assert (tmp_path / "cut" / "source" / "last.pt").is_file()
    assert load_checkpoint(tmp_path / "cut" / "source" / "last.pt")["step"] == 2
    resumed = train_supervised(cfg, tmp_path / "cut", resume=True, progress=False)
    _assert_same_state(_state(full), _state(resumed))
    # a second resume of a finished stage does not train again
    assert train_supervised(cfg, tmp_path / "cut", resume=True, progress=False) == resumed


@pytest.mark.parametrize("align", ["off", "source"])
def test_selftrain_resume_equals_uninterrupted(tmp_path, align):
    from pst.train.selftrain import self_train
    from pst.train.source import train_supervised

    cfg = tiny_config("source.steps=2", "selftrain.steps=3", "selftrain.eval_every=0", f"selftrain.align={align}")
    src = train_supervised(cfg, tmp_path / "src", progress=False)
    full = self_train(cfg, tmp_path / "full", init=src, progress=False)
    assert self_train(cfg, tmp_path / "cut", init=src, max_steps=1, progress=False) is None
    resumed = self_train(cfg, tmp_path / "cut", init=src, resume=True, progress=False)
    a, b = load_checkpoint(full), load_checkpoint(resumed)
    _assert_same_state(a["model"], b["model"])
    _assert_same_state(a["teacher"], b["teacher"])
    torch.testing.assert_close(a["extra"]["prior"]["chi"], b["extra"]["prior"]["chi"])
    if align == "off":
        assert a["extra"]["source_prior"] is None
    else:  # the source labels' class frequencies, carried over the interruption
        chi = a["extra"]["source_prior"]["chi"]
        torch.testing.assert_close(chi, b["extra"]["source_prior"]["chi"])
        assert float(chi.sum()) == pytest.approx(1.0) and (chi >= 0).all()
    t = a["extra"]["timing"]
    assert 0 <= t["instance_pseudo_share"] <= 1 and t["steps_timed"] == 3


def test_stage_threads_apply_to_the_stage_only(tmp_path):
    """selftrain.threads: torch's thread count while the stage runs, restored after it."""
    from pst.train.selftrain import self_train
    from pst.train.source import train_supervised

    cfg = tiny_config("source.steps=1", "selftrain.steps=1", "selftrain.eval_every=0", "threads=1",
                      "selftrain.threads=2", "selftrain.bn_recalibrate=0")
    src = train_supervised(cfg, tmp_path / "src", progress=False)
    before = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(1)
        self_train(cfg, tmp_path / "st", init=src, progress=False,
                   on_finish=lambda net, teacher: seen.append(torch.get_num_threads()))
        assert seen == [2] and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="selftrain.threads"):
        tiny_config("selftrain.threads=-1")


def test_seed_changes_weights(tmp_path):
    from pst.train.source import train_supervised

    a = train_supervised(tiny_config("source.steps=1"), tmp_path / "a", progress=False)
    b = train_supervised(tiny_config("source.steps=1", "seed=1"), tmp_path / "b", progress=False)
    sa, sb = _state(a), _state(b)
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if sa[k].is_floating_point())


def test_oracle_needs_labels(tmp_path):
    from pst.train.source import train_supervised

    with pytest.raises(ValueError, match="oracle training needs a labelled target"):
        train_supervised(tiny_config("data.target.has_labels=false"), tmp_path, stage="oracle", progress=False)
    with pytest.raises(ValueError, match="stage should be 'source' or 'oracle'"):
        train_supervised(tiny_config(), tmp_path, stage="selftrain", progress=False)


def test_build_optimizer_sgd_and_adamw():
    from pst.train.model import build_optimizer, build_panoptic_net

    cfg = tiny_config("source.optimizer=adamw", "source.lr=0.003", "source.momentum=0.8", "source.weight_decay=0.01",
                      "source.head_lr_mult=2")
    net = build_panoptic_net(cfg)
    opt = build_optimizer(net, cfg.source)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["lr"] for g in opt.param_groups} == {0.003, 0.006}
    assert all(g["betas"] == (0.8, 0.999) for g in opt.param_groups)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.01, 0.0}  # none on BN and biases
    sgd = build_optimizer(net, tiny_config("selftrain.optimizer=sgd").selftrain)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="source.optimizer should be one of 'sgd', 'adamw', got 'adam'"):
        tiny_config("source.optimizer=adam")


def test_model_options_are_validated():
    with pytest.raises(ValueError, match="model.decoder_stride applies to deeplabv3plus only"):
        tiny_config("model.semantic=deeplabv2", "model.decoder_stride=2")
    with pytest.raises(ValueError, match="model.embed_coords should be >= 0.0, got -1"):
        tiny_config("model.embed_coords=-1")
    with pytest.raises(ValueError, match="model.embed_coords needs embed_dim >= 2"):
        tiny_config("model.embed_coords=8", "model.embed_dim=1")
    with pytest.raises(ValueError, match="model.embed_coords should be a finite number"):
        tiny_config("model.embed_coords=.inf")


def test_source_and_oracle_side_by_side_only_with_cores_for_both(monkeypatch):
    import os

    from pst.train import demo

    cfg = tiny_config()
    for cores, threads, expected in ((2, 1, 1), (1, 1, 0), (8, 0, 4), (4, 3, 0), (2, 0, 1)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert demo._side_by_side_threads(dataclasses.replace(cfg, threads=threads), None) == expected
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert demo._side_by_side_threads(cfg, None) == 0


# --------------------------------------------------------------------------- mixed precision on CPU

def test_cpu_autocast_runs_in_bfloat16_and_only_where_enabled():
    from pst.train.runtime import autocast_for

    lin = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with autocast_for(torch.device("cpu"), True):
        y = lin(x)
    assert y.dtype == torch.bfloat16
    # the same result as float32 within bfloat16's precision (8 bits of mantissa)
    torch.testing.assert_close(y.float(), lin(x), atol=0.05, rtol=0.02)
    with autocast_for(torch.device("cpu"), False):
        assert lin(x).dtype == torch.float32


def test_setup_runtime_enables_cpu_amp_only_with_native_bfloat16(monkeypatch):
    import pst.train.runtime as runtime

    cfg = tiny_config("amp=true")
    for native in (True, False):
        monkeypatch.setattr(runtime, "cpu_has_bf16", lambda native=native: native)
        assert runtime.setup_runtime(cfg, "cpu").amp is native
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.setup_runtime(tiny_config("amp=false"), "cpu").amp is False


def test_cpu_has_bf16_reads_the_cpu_flags():
    from pst.train.runtime import cpu_has_bf16

    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


# --------------------------------------------------------------------------- thing labels gated by objectness

def test_gate_things_matches_a_pixel_loop():
    from pst.train.pseudo import gate_things

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, TOY.num_classes, (2, 6, 7), generator=g)
    labels[0, 0, :3] = IGNORE
    groups = {"base": ("base", (5, 6, 7)), "bike": ("ccm", (9, 10))}
    obj = {k: torch.rand(2, 6, 7, generator=g) for k in groups}
    out = gate_things(labels, obj, groups, 0.4)
    expected = labels.clone()
    for b in range(2):
        for y in range(6):
            for x in range(7):
                c = int(labels[b, y, x])
                if any(c in ids and float(obj[k][b, y, x]) < 0.4 for k, (_, ids) in groups.items()):
                    expected[b, y, x] = IGNORE
    assert torch.equal(out, expected)
    assert (out != labels).any() and torch.equal(labels[out != IGNORE], out[out != IGNORE])
    assert torch.equal(gate_things(labels, obj, groups, 0.0), labels)  # 0: off


def test_gate_things_errors():
    from pst.train.pseudo import gate_things

    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    groups = {"base": ("base", (5,))}
    with pytest.raises(ValueError, match=r"threshold should be in \[0, 1\], got 1.5"):
        gate_things(labels, {"base": torch.ones(1, 4, 4)}, groups, 1.5)
    with pytest.raises(ValueError, match="no objectness for instance model 'base'"):
        gate_things(labels, {}, groups, 0.5)
    with pytest.raises(ValueError, match=r"objectness of 'base' should be \(1, 4, 4\), got \(1, 4, 5\)"):
        gate_things(labels, {"base": torch.ones(1, 4, 5)}, groups, 0.5)
