"""pst.losses against slow per-pixel / per-instance Python references, gradcheck in float64,
edge cases (no instance, one instance, all ignored) and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from pst.losses import discriminative_loss, embedding_consistency, focal_ce, objectness_loss

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- references
def focal_ce_loop(logits, target, prior, p, pixel_weight, ignore, normalize):
    b, c, h, w = logits.shape
    total, n_valid = 0.0, 0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                t = int(target[i, y, x])
                if t == ignore:
                    continue
                n_valid += 1
                z = [float(logits[i, k, y, x]) for k in range(c)]
                mx = max(z)
                lse = mx + math.log(sum(math.exp(v - mx) for v in z))
                wt = 1.0 if prior is None else (1.0 - float(prior[t])) ** p
                if pixel_weight is not None:
                    wt *= float(pixel_weight[i, y, x])
                total += wt * (lse - z[t])
    denom = max(n_valid, 1) if normalize == "valid" else b * h * w
    return total / denom


def discriminative_loop(emb, inst, dv, dd, a, bta, g, valid=None):
    b = emb.shape[0]
    losses = []
    for i in range(b):
        m_all = inst[i] > 0
        if valid is not None:
            m_all &= valid[i]
        ids = sorted(set(inst[i][m_all].tolist()))
        if not ids:
            continue
        mus, pull = [], 0.0
        for k in ids:
            pts = emb[i][:, m_all & (inst[i] == k)].T  # [n, D]
            mu = pts.mean(0)
            mus.append(mu)
            pull += (torch.linalg.norm(pts - mu, dim=1) - dv).clamp_min(0).pow(2).mean()
        c = len(ids)
        push = 0.0
        for x in range(c):
            for y in range(c):
                if x != y:
                    push += (2 * dd - torch.linalg.norm(mus[x] - mus[y])).clamp_min(0) ** 2
        push = push / (c * (c - 1)) if c > 1 else 0.0
        reg = sum(torch.linalg.norm(mu) for mu in mus) / c
        losses.append(a * pull / c + bta * push + g * reg)
    return sum(losses) / len(losses) if losses else torch.tensor(0.0, dtype=emb.dtype)


def consistency_loop(student, teacher, anchors, dv, valid=None):
    b, d, h, w = student.shape
    s = dv ** 2 / math.log(2)
    terms = []
    for i in range(b):
        es, et = student[i].reshape(d, -1), teacher[i].reshape(d, -1)
        v = torch.ones(h * w, dtype=torch.bool) if valid is None else valid[i].reshape(-1)
        for a in anchors[i].tolist():
            if a < 0 or not v[a]:
                continue
            ms = torch.exp(-((es - es[:, a:a + 1]) ** 2).sum(0) / s)[v]
            mt = torch.exp(-((et - et[:, a:a + 1]) ** 2).sum(0) / s)[v]
            terms.append(1 - 2 * (ms * mt).sum() / ((ms ** 2).sum() + (mt ** 2).sum()))
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------- focal_ce
@pytest.mark.parametrize("normalize", ["valid", "all"])
@pytest.mark.parametrize("use_prior,use_weight", [(False, False), (True, False), (True, True), (False, True)])
def test_focal_ce_matches_loop(normalize, use_prior, use_weight):
    g = _gen(1)
    b, c, h, w = 2, 5, 4, 6
    logits = torch.randn(b, c, h, w, generator=g, dtype=F64) * 3
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.3] = 255
    prior = torch.rand(c, generator=g, dtype=F64) if use_prior else None
    pw = torch.rand(b, h, w, generator=g, dtype=F64) if use_weight else None
    got = focal_ce(logits, target, class_prior=prior, focal_power=3.0, pixel_weight=pw, normalize=normalize)
    ref = focal_ce_loop(logits, target, prior, 3.0, pw, 255, normalize)
    assert got.dtype == F64
    assert float(got) == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_focal_ce_without_weights_is_cross_entropy():
    g = _gen(2)
    logits = torch.randn(3, 7, 5, 5, generator=g)
    target = torch.randint(0, 7, (3, 5, 5), generator=g)
    target[0, :2] = 255
    torch.testing.assert_close(focal_ce(logits, target), F.cross_entropy(logits, target, ignore_index=255))


def test_focal_ce_gradcheck():
    g = _gen(3)
    logits = torch.randn(2, 4, 3, 3, generator=g, dtype=F64, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 3), generator=g)
    target[1, 0] = 255
    prior, pw = torch.rand(4, generator=g, dtype=F64), torch.rand(2, 3, 3, generator=g, dtype=F64)
    assert torch.autograd.gradcheck(lambda x: focal_ce(x, target, class_prior=prior, pixel_weight=pw), (logits,))


def test_focal_ce_all_ignored_is_zero_with_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = focal_ce(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_focal_ce_bf16_computes_in_float32():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    got = focal_ce(logits.bfloat16(), target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, focal_ce(logits.bfloat16().float(), target))


def test_focal_ce_bad_input():
    logits, target = torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"logits should have shape \[B, C, H, W\], got \[3, 4, 4\]"):
        focal_ce(logits[0], target)
    with pytest.raises(TypeError, match="logits should be a floating tensor, got torch.int64"):
        focal_ce(logits.long(), target)
    with pytest.raises(ValueError, match=r"target should have shape \[B, H, W\] = \[2, 4, 4\], got \[2, 4, 5\]"):
        focal_ce(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="target should be an integer tensor, got torch.float32"):
        focal_ce(logits, target.float())
    with pytest.raises(ValueError, match=r"target should hold class ids in \[0, 3\) or ignore_index=255, got 7"):
        focal_ce(logits, target.clone().fill_(7))
    with pytest.raises(ValueError, match=r"class_prior should have shape \[C\] = \[3\], got \[4\]"):
        focal_ce(logits, target, class_prior=torch.rand(4))
    with pytest.raises(ValueError, match=r"pixel_weight should have shape \[B, H, W\] = \[2, 4, 4\], got \[2, 4\]"):
        focal_ce(logits, target, pixel_weight=torch.rand(2, 4))
    with pytest.raises(ValueError, match="logits contains NaN or infinity"):
        focal_ce(logits.clone().fill_(float("nan")), target)
    with pytest.raises(ValueError, match=r"normalize should be one of \('valid', 'all'\), got 'sum'"):
        focal_ce(logits, target, normalize="sum")
    with pytest.raises(TypeError, match="target should be a torch.Tensor, got list"):
        focal_ce(logits, [[0]])


# ----------------------------------------------------------------------------- discriminative
def _instances(g, b, h, w, k):
    inst = torch.randint(0, k + 1, (b, h, w), generator=g)
    return inst * 7 + (inst > 0) * 3  # non-contiguous ids


@pytest.mark.parametrize("use_valid", [False, True])
def test_discriminative_matches_loop(use_valid):
    g = _gen(4)
    b, d, h, w = 4, 3, 6, 7
    emb = torch.randn(b, d, h, w, generator=g, dtype=F64)
    inst = _instances(g, b, h, w, 4)
    inst[1] = 0  # an image with no instance
    inst[2] = (inst[2] > 0) * 11  # an image with one instance
    valid = torch.rand(b, h, w, generator=g) > 0.2 if use_valid else None
    kw = dict(delta_v=0.3, delta_d=1.2, alpha=1.0, beta=0.7, gamma=0.01)
    got = discriminative_loss(emb, inst, valid=valid, **kw)
    ref = discriminative_loop(emb, inst, 0.3, 1.2, 1.0, 0.7, 0.01, valid)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_discriminative_huge_ids():
    g = _gen(14)
    emb = torch.randn(3, 2, 4, 5, generator=g, dtype=F64)
    inst = torch.randint(0, 3, (3, 4, 5), generator=g)
    huge = torch.where(inst > 0, inst * (2**61) + 12345, 0)
    torch.testing.assert_close(discriminative_loss(emb, huge), discriminative_loss(emb, inst))


def test_discriminative_gradcheck():
    g = _gen(5)
    emb = torch.randn(2, 3, 4, 5, generator=g, dtype=F64, requires_grad=True)
    inst = _instances(g, 2, 4, 5, 3)
    assert torch.autograd.gradcheck(lambda e: discriminative_loss(e, inst, delta_v=0.2, delta_d=1.0), (emb,))


def test_discriminative_gradient_matches_loop():
    g = _gen(6)
    emb = torch.randn(3, 4, 5, 5, generator=g, dtype=F64)
    inst = _instances(g, 3, 5, 5, 3)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    discriminative_loss(e1, inst, delta_v=0.2).backward()
    discriminative_loop(e2, inst, 0.2, 1.5, 1.0, 1.0, 0.001).backward()
    torch.testing.assert_close(e1.grad, e2.grad)


def test_discriminative_no_instances_is_zero_and_backpropagates():
    emb = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = discriminative_loss(emb, torch.zeros(2, 4, 4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(emb.grad, torch.zeros_like(emb))
    # valid excludes every instance pixel
    loss = discriminative_loss(emb, torch.ones(2, 4, 4, dtype=torch.long), valid=torch.zeros(2, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0


def test_discriminative_one_instance_has_no_push():
    g = _gen(7)
    emb = torch.randn(1, 2, 4, 4, generator=g, dtype=F64)
    inst = torch.ones(1, 4, 4, dtype=torch.long)
    got = discriminative_loss(emb, inst, delta_v=0.0, gamma=0.0)
    x = emb[0].reshape(2, -1).T
    expected = torch.linalg.norm(x - x.mean(0), dim=1).pow(2).mean()
    torch.testing.assert_close(got, expected)
    # a one-pixel instance: zero pull, finite gradient
    e = emb.clone().requires_grad_()
    inst1 = torch.zeros(1, 4, 4, dtype=torch.long)
    inst1[0, 1, 2] = 5
    discriminative_loss(e, inst1).backward()
    assert torch.isfinite(e.grad).all()


def test_discriminative_separated_clusters_only_pay_regulariser():
    # Two tight, far-apart clusters satisfy both margins: loss = gamma * mean ||mu||.
    emb = torch.zeros(1, 2, 2, 4, dtype=F64)
    emb[0, 0, :, :2] = 5.0
    emb[0, 1, :, 2:] = -5.0
    inst = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]])
    got = discriminative_loss(emb, inst, gamma=0.1)
    torch.testing.assert_close(got, torch.tensor(0.1 * 5.0, dtype=F64))


def test_discriminative_bf16_and_bad_input():
    emb = torch.randn(2, 4, 5, 5)
    inst = torch.randint(0, 3, (2, 5, 5))
    got = discriminative_loss(emb.bfloat16(), inst)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, discriminative_loss(emb.bfloat16().float(), inst))
    with pytest.raises(ValueError, match=r"embedding should have shape \[B, D, H, W\], got \[4, 5, 5\]"):
        discriminative_loss(emb[0], inst)
    with pytest.raises(ValueError, match=r"instances should have shape \[B, H, W\] = \[2, 5, 5\], got \[2, 5, 4\]"):
        discriminative_loss(emb, inst[..., :4])
    with pytest.raises(TypeError, match="instances should be an integer tensor, got torch.bool"):
        discriminative_loss(emb, inst > 0)
    with pytest.raises(ValueError, match="instances should be >= 0, got -1"):
        discriminative_loss(emb, inst - 1)
    with pytest.raises(TypeError, match="valid should be a bool tensor, got torch.int64"):
        discriminative_loss(emb, inst, valid=inst)
    with pytest.raises(ValueError, match="embedding contains NaN or infinity"):
        discriminative_loss(emb.clone().fill_(float("inf")), inst)


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def test_discriminative_is_vectorised():
    # The number of tensor ops (forward and backward) does not grow with the number of
    # instances: no Python loop per instance or per image.
    g = _gen(8)
    counts = []
    for b, k in ((2, 3), (4, 300)):
        emb = torch.randn(b, 8, 48, 48, generator=g, requires_grad=True)
        inst = torch.randint(0, k + 1, (b, 48, 48), generator=g)
        with _OpCounter() as c:
            discriminative_loss(emb, inst).backward()
        counts.append(c.n)
        assert torch.isfinite(emb.grad).all()
    assert counts[0] == counts[1] and counts[0] > 10


# ----------------------------------------------------------------------------- objectness
def test_objectness_matches_reference():
    g = _gen(9)
    logits = torch.randn(2, 5, 6, generator=g, dtype=F64)
    target = torch.rand(2, 5, 6, generator=g) > 0.5
    valid = torch.rand(2, 5, 6, generator=g) > 0.3
    p = torch.sigmoid(logits)
    per_px = -(target * p.log() + (~target) * (1 - p).log())
    torch.testing.assert_close(objectness_loss(logits, target), per_px.mean())
    torch.testing.assert_close(objectness_loss(logits, target, valid=valid), per_px[valid].mean())
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: objectness_loss(z, target, valid=valid), (x,))
    zero = objectness_loss(x, target, valid=torch.zeros_like(valid))
    zero.backward()
    assert zero.item() == 0.0


def test_objectness_bad_input():
    logits = torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match=r"target should have shape \[B, H, W\] = \[2, 5, 6\], got \[2, 5\]"):
        objectness_loss(logits, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="target should be a bool \\(or floating\\) tensor, got torch.int64"):
        objectness_loss(logits, torch.ones(2, 5, 6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target should lie in \[0, 1\]"):
        objectness_loss(logits, torch.full((2, 5, 6), 2.0))
    with pytest.raises(ValueError, match=r"logits should have shape \[B, H, W\], got \[2, 1, 5, 6\]"):
        objectness_loss(logits[:, None], torch.ones(2, 5, 6, dtype=torch.bool))


# ----------------------------------------------------------------------------- consistency
@pytest.mark.parametrize("use_valid", [False, True])
def test_consistency_matches_loop(use_valid):
    g = _gen(10)
    b, d, h, w = 3, 4, 5, 6
    student = torch.randn(b, d, h, w, generator=g, dtype=F64) * 0.5
    teacher = student + 0.3 * torch.randn(b, d, h, w, generator=g, dtype=F64)
    anchors = torch.randint(0, h * w, (b, 4), generator=g)
    anchors[0, 2:] = -1
    anchors[2] = -1  # an image without anchors
    valid = torch.rand(b, h, w, generator=g) > 0.2 if use_valid else None
    if valid is not None:
        valid.view(b, -1)[0, anchors[0, 0]] = True
    got = embedding_consistency(student, teacher, anchors, delta_v=0.4, valid=valid)
    ref = consistency_loop(student, teacher, anchors, 0.4, valid)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


def test_consistency_gradcheck_and_teacher_constant():
    g = _gen(11)
    student = torch.randn(2, 3, 4, 4, generator=g, dtype=F64, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, generator=g, dtype=F64, requires_grad=True)
    anchors = torch.tensor([[0, 5, 15], [3, -1, -1]])
    assert torch.autograd.gradcheck(lambda s: embedding_consistency(s, teacher, anchors), (student,))
    embedding_consistency(student, teacher, anchors).backward()
    assert teacher.grad is None


def test_consistency_identical_is_zero_and_no_anchor_is_zero():
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    anchors = torch.tensor([[1, 2], [30, -1]])
    assert embedding_consistency(x, x.detach(), anchors).item() == pytest.approx(0.0, abs=1e-6)
    loss = embedding_consistency(x, x.detach(), torch.full((2, 3), -1))
    loss.backward()
    assert loss.item() == 0.0
    assert embedding_consistency(x, x.detach(), torch.zeros(2, 0, dtype=torch.long)).item() == 0.0


def test_consistency_bad_input():
    s = torch.randn(2, 3, 4, 4)
    a = torch.tensor([[0, 1], [2, -1]])
    with pytest.raises(ValueError, match=r"teacher should have the student's shape \[2, 3, 4, 4\], got \[2, 3, 4, 5\]"):
        embedding_consistency(s, torch.randn(2, 3, 4, 5), a)
    with pytest.raises(ValueError, match=r"anchors should have shape \[B, k\] with B = 2, got \[2\]"):
        embedding_consistency(s, s, a[0])
    with pytest.raises(ValueError, match=r"anchors should be -1 or in \[0, 16\), got values in \[-1, 16\]"):
        embedding_consistency(s, s, torch.tensor([[0, 16], [2, -1]]))
    with pytest.raises(TypeError, match="anchors should be an integer tensor, got torch.float32"):
        embedding_consistency(s, s, a.float())
    with pytest.raises(ValueError, match="delta_v should be a number > 0, got 0"):
        embedding_consistency(s, s, a, delta_v=0)


def test_losses_under_autocast_match_float32():
    # Inside an autocast region the losses still compute in float32 (bf16 matmuls would ruin
    # the squared-norm differences).
    g = _gen(12)
    emb = torch.randn(2, 8, 16, 16, generator=g) * 0.3
    teacher = emb + 0.1 * torch.randn(2, 8, 16, 16, generator=g)
    inst = torch.randint(0, 5, (2, 16, 16), generator=g)
    anchors = torch.randint(0, 256, (2, 6), generator=g)
    logits, target = torch.randn(2, 4, 16, 16, generator=g), torch.randint(0, 4, (2, 16, 16), generator=g)
    prior = torch.rand(4, generator=g)
    calls = [lambda: discriminative_loss(emb, inst), lambda: embedding_consistency(emb, teacher, anchors),
             lambda: focal_ce(logits, target, class_prior=prior),
             lambda: objectness_loss(logits[:, 0], target > 1)]
    for call in calls:
        ref = call()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = call()
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_consistency_gradcheck_with_valid():
    g = _gen(13)
    student = torch.randn(2, 3, 4, 4, generator=g, dtype=F64, requires_grad=True)
    teacher = torch.randn(2, 3, 4, 4, generator=g, dtype=F64)
    valid = torch.rand(2, 4, 4, generator=g) > 0.3
    anchors = valid.reshape(2, -1).float().argsort(1, descending=True)[:, :3]
    assert torch.autograd.gradcheck(lambda s: embedding_consistency(s, teacher, anchors, valid=valid), (student,))
