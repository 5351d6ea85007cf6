"""Training losses: focal-weighted cross-entropy (semantic), discriminative pull/push loss,
objectness and teacher-student embedding consistency (instance).

Every loss returns a scalar that stays connected to its prediction input (zero, with a
defined gradient, when there is nothing to supervise), runs with autocast disabled,
computes in float32 when its inputs are half/bfloat16 and in float64 for float64 inputs
(gradcheck).
Weights, targets, prior and teacher are constants: no gradient flows into them.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F

from pst._checks import check_all_finite, check_choice, check_tensor, tensor

__all__ = ["focal_ce", "discriminative_loss", "objectness_loss", "embedding_consistency", "NORMALIZE"]

NORMALIZE = ("valid", "all")
_EPS = 1e-12  # squared-norm floor: sqrt stays differentiable (zero gradient) at coincident points

_F = TypeVar("_F", bound=Callable[..., torch.Tensor])


def _full_precision(fn: _F) -> _F:
    """Run ``fn`` with autocast off: its distances come from differences of squared norms
    (matmuls) that bfloat16 would ruin; inputs in low precision are upcast explicitly."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------- helpers
def _compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """float64 stays float64, everything else computes in float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _zero(x: torch.Tensor) -> torch.Tensor:
    """A zero scalar connected to ``x`` (backward works and gives zero gradients)."""
    return _compute_dtype(x).sum() * 0.0


def _safe_norm(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return v.pow(2).sum(dim).clamp_min(_EPS).sqrt()


# ----------------------------------------------------------------------------- semantic
@_full_precision
def focal_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_prior: torch.Tensor | None = None,
    focal_power: float = 3.0,
    pixel_weight: torch.Tensor | None = None,
    ignore_index: int = 255,
    normalize: str = "valid",
) -> torch.Tensor:
    """Cross-entropy weighted per class by ``(1 - chi_c) ** focal_power`` and per pixel.

    As in SAC (Araslanov & Roth 2021, github.com/visinf/da-sac): ``chi`` is the running class prior
    (the EMA of the teacher's mean class probability), so frequent classes are weighted
    down; ``pixel_weight`` is the teacher's confidence. The per-pixel loss is
    ``w_pix * (1 - chi_t) ** p * (-log softmax(logits)_t)``; it is summed and divided by
    the number of non-ignored pixels (``normalize="valid"``; with no weights this equals
    ``F.cross_entropy(logits, target, ignore_index=...)``) or by all ``B * H * W``
    pixels (``normalize="all"``, SAC's ``.mean()`` over a map with zeros at ignored pixels).

    Args:
        logits: [B, C, H, W] floating (any float dtype; computed in float32 or float64).
        target: [B, H, W] integer class ids in [0, C) or ``ignore_index``.
        class_prior: [C] floating in [0, 1], or None (no class weighting).
        focal_power: p >= 0 (SAC: 3).
        pixel_weight: [B, H, W] floating >= 0, or None.
        ignore_index: label skipped by the loss.
        normalize: ``"valid" | "all"``.

    Returns:
        scalar, float32 (float64 for float64 logits).
    """
    logits = check_tensor(logits, "logits", dims="B, C, H, W", kind="floating")
    b, c, h, w = logits.shape
    target = check_tensor(target, "target", dims="B, H, W", shape=(b, h, w), kind="integer").long()
    check_choice(normalize, "normalize", NORMALIZE)
    if not (isinstance(focal_power, (int, float)) and focal_power >= 0):
        raise ValueError(f"focal_power should be a number >= 0, got {focal_power!r}")
    check_all_finite(logits, "logits")
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= c))
    if bool(bad.any()):
        raise ValueError(f"target should hold class ids in [0, {c}) or ignore_index={ignore_index}, "
                         f"got {int(target[bad][0])}")
    x = _compute_dtype(logits)
    t = torch.where(valid, target, torch.zeros_like(target))
    nll = -F.log_softmax(x, 1).gather(1, t[:, None])[:, 0]  # [B, H, W]
    weight = valid.to(x.dtype)
    if class_prior is not None:
        prior = check_tensor(class_prior, "class_prior", dims="C", shape=(c,), kind="floating").detach().to(x.dtype)
        check_all_finite(prior, "class_prior")
        weight = weight * (1.0 - prior.clamp(0.0, 1.0)).pow(focal_power)[t]
    if pixel_weight is not None:
        pw = check_tensor(pixel_weight, "pixel_weight", dims="B, H, W", shape=(b, h, w), kind="floating")
        pw = pw.detach().to(x.dtype)
        check_all_finite(pw, "pixel_weight")
        weight = weight * pw
    denom = valid.sum().clamp_min(1) if normalize == "valid" else max(b * h * w, 1)
    return (weight * nll).sum() / denom


# ----------------------------------------------------------------------------- instance
@_full_precision
def discriminative_loss(
    embedding: torch.Tensor,
    instances: torch.Tensor,
    *,
    delta_v: float = 0.5,
    delta_d: float = 1.5,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 0.001,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discriminative pull/push loss (De Brabandere et al. 2017), batched.

    Per image with instances ``c = 1..C`` (pixels with id 0 or ``valid == False`` are
    skipped), means ``mu_c`` of the embeddings ``x_i``:

    - pull ``1/C sum_c 1/N_c sum_i [||mu_c - x_i|| - delta_v]_+^2``
    - push ``1/(C (C-1)) sum_{A != B} [2 delta_d - ||mu_A - mu_B||]_+^2`` (0 if C < 2)
    - reg  ``1/C sum_c ||mu_c||``

    ``alpha * pull + beta * push + gamma * reg`` averaged over the images that have at
    least one instance (0, still connected to ``embedding``, if none has). Instance ids
    need not be contiguous. All images and instances are handled by scatter-adds over
    ids offset per image, with no Python loop.

    Args:
        embedding: [B, D, H, W] floating.
        instances: [B, H, W] integer >= 0 (0 = no instance).
        valid: [B, H, W] bool or None.

    Returns:
        scalar, float32 (float64 for float64 embeddings).
    """
    embedding = check_tensor(embedding, "embedding", dims="B, D, H, W", kind="floating")
    b, d, h, w = embedding.shape
    instances = check_tensor(instances, "instances", dims="B, H, W", shape=(b, h, w), kind="integer").long()
    valid = None if valid is None else check_tensor(valid, "valid", dims="B, H, W", shape=instances.shape, kind="bool")
    for name, v in (("delta_v", delta_v), ("delta_d", delta_d)):
        if not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{name} should be a number >= 0, got {v!r}")
    if bool((instances < 0).any()):
        raise ValueError(f"instances should be >= 0, got {int(instances.min())}")
    check_all_finite(embedding, "embedding")
    x_all = _compute_dtype(embedding)
    mask = instances > 0
    if valid is not None:
        mask = mask & valid
    img_px, pix = mask.reshape(b, -1).nonzero(as_tuple=True)  # grouped by image
    if img_px.numel() == 0:
        return _zero(embedding)
    dt, dev = x_all.dtype, x_all.device
    x = x_all.reshape(b, d, -1)[img_px, :, pix]  # [N, D]
    ids = instances.reshape(b, -1)[img_px, pix]
    # Ids offset per image: compact them first (any int64 id, no overflow), then key = image * U + id.
    _, ids = torch.unique(ids, return_inverse=True)
    stride = int(ids.max()) + 1
    keys, inv = torch.unique(img_px * stride + ids, return_inverse=True)  # sorted: grouped by image
    m = keys.numel()
    img = torch.div(keys, stride, rounding_mode="floor")  # [M] image of each instance
    counts = torch.bincount(inv, minlength=m).to(dt)
    mu = torch.zeros(m, d, dtype=dt, device=dev).index_add_(0, inv, x) / counts[:, None]  # [M, D]

    n_inst = torch.bincount(img, minlength=b)  # [B]
    per_img = n_inst.clamp_min(1).to(dt)
    hinge = (_safe_norm(x - mu[inv]) - delta_v).clamp_min(0).pow(2)  # [N]
    pull_c = torch.zeros(m, dtype=dt, device=dev).index_add_(0, inv, hinge) / counts
    pull = torch.zeros(b, dtype=dt, device=dev).index_add_(0, img, pull_c) / per_img
    reg = torch.zeros(b, dtype=dt, device=dev).index_add_(0, img, _safe_norm(mu)) / per_img

    # Push: instance means padded per image to [B, K, D], pairwise distances per image.
    k = int(n_inst.max())
    first = torch.cumsum(n_inst, 0) - n_inst
    pos = torch.arange(m, device=dev) - first[img]
    padded = torch.zeros(b, k, d, dtype=dt, device=dev).index_put((img, pos), mu)
    present = torch.zeros(b, k, dtype=torch.bool, device=dev)
    present[img, pos] = True
    sq = padded.pow(2).sum(-1)
    d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * padded @ padded.transpose(1, 2)  # [B, K, K]
    dist = d2.clamp_min(_EPS).sqrt()
    pair = present[:, :, None] & present[:, None, :] & ~torch.eye(k, dtype=torch.bool, device=dev)
    push_pairs = (2.0 * delta_d - dist).clamp_min(0).pow(2) * pair
    n_pairs = (n_inst * (n_inst - 1)).clamp_min(1).to(dt)
    push = push_pairs.sum((1, 2)) / n_pairs

    total = alpha * pull + beta * push + gamma * reg  # [B], zero for images without instances
    return total.sum() / (n_inst > 0).sum().to(dt)


@_full_precision
def objectness_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy (with logits) of "pixel is on an object", mean over valid pixels.

    Args:
        logits: [B, H, W] floating.
        target: [B, H, W] bool (or floating in [0, 1] for soft targets).
        valid: [B, H, W] bool or None (all pixels).

    Returns:
        scalar, float32 (float64 for float64 logits); 0 (connected) if no pixel is valid.
    """
    logits = check_tensor(logits, "logits", dims="B, H, W", kind="floating")
    target = tensor(target, "target")
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"target should have shape [B, H, W] = {list(logits.shape)}, got {list(target.shape)}")
    if target.dtype != torch.bool and not target.is_floating_point():
        raise TypeError(f"target should be a bool (or floating) tensor, got {target.dtype}")
    valid = None if valid is None else check_tensor(valid, "valid", dims="B, H, W", shape=logits.shape, kind="bool")
    check_all_finite(logits, "logits")
    x = _compute_dtype(logits)
    t = target.detach().to(x.dtype)
    if target.is_floating_point() and t.numel() and bool(((t < 0) | (t > 1) | t.isnan()).any()):
        raise ValueError("target should lie in [0, 1]")
    per_px = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if valid is None:
        return per_px.mean() if per_px.numel() else _zero(logits)
    if not bool(valid.any()):
        return _zero(logits)
    return (per_px * valid).sum() / valid.sum()


@_full_precision
def embedding_consistency(
    student: torch.Tensor,
    teacher: torch.Tensor,
    anchors: torch.Tensor,
    *,
    delta_v: float = 0.5,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-student consistency of soft instance masks around anchor pixels (SPOCO-style).

    For an anchor pixel ``a`` the soft mask of a network with embeddings ``e`` is
    ``m(x) = exp(-||e_x - e_a||^2 / s)``, ``s = delta_v^2 / ln 2`` (0.5 at distance
    ``delta_v``). The loss is ``1 - Dice(m_student, m_teacher)`` with
    ``Dice = 2 sum m_s m_t / (sum m_s^2 + sum m_t^2)`` over the valid pixels of the
    anchor's image, averaged over all real anchors (-1 padding and anchors on invalid
    pixels are skipped; 0, connected, if none is left). The
    teacher is a constant; the student's anchor embedding is its own at the anchor pixel.

    Cost: time and memory O(B * k * H * W) (a few [B, k, H*W] maps); SPOCO uses up to 20
    anchors per image.

    Args:
        student: [B, D, H, W] floating.
        teacher: [B, D, H, W] floating (same shape).
        anchors: [B, k] integer flat pixel indices ``h * W + w``; -1 = padding.
        delta_v: > 0.
        valid: [B, H, W] bool or None.

    Returns:
        scalar, float32 (float64 for float64 student).
    """
    student = check_tensor(student, "student", dims="B, D, H, W", kind="floating")
    teacher = check_tensor(teacher, "teacher", dims="B, D, H, W", kind="floating")
    if teacher.shape != student.shape:
        raise ValueError(f"teacher should have the student's shape {list(student.shape)}, got {list(teacher.shape)}")
    b, d, h, w = student.shape
    anchors = tensor(anchors, "anchors")
    if anchors.dim() != 2 or anchors.shape[0] != b:
        raise ValueError(f"anchors should have shape [B, k] with B = {b}, got {list(anchors.shape)}")
    anchors = check_tensor(anchors, "anchors", dims="B, k", shape=anchors.shape, kind="integer").long()
    valid = None if valid is None else check_tensor(valid, "valid", dims="B, H, W", shape=(b, h, w), kind="bool")
    if not (isinstance(delta_v, (int, float)) and delta_v > 0):
        raise ValueError(f"delta_v should be a number > 0, got {delta_v!r}")
    if anchors.numel() and bool(((anchors < -1) | (anchors >= h * w)).any()):
        raise ValueError(f"anchors should be -1 or in [0, {h * w}), got values in "
                         f"[{int(anchors.min())}, {int(anchors.max())}]")
    check_all_finite(student, "student")
    check_all_finite(teacher, "teacher")
    real = anchors >= 0  # [B, k]
    if valid is not None:  # anchors on invalid pixels are skipped
        real = real & valid.reshape(b, -1).gather(1, anchors.clamp_min(0))
    if not bool(real.any()):
        return _zero(student)
    s = _compute_dtype(student).reshape(b, d, h * w)
    t = teacher.detach().to(s.dtype).reshape(b, d, h * w)
    idx = anchors.clamp_min(0)[:, None, :].expand(b, d, anchors.shape[1])
    scale = delta_v ** 2 / math.log(2.0)

    def soft_mask(e: torch.Tensor) -> torch.Tensor:  # [B, D, HW] -> [B, k, HW]
        # -||e_x - e_a||^2 / s = (2 e_a.e_x - |e_a|^2 - |e_x|^2) / s as one batched matmul of
        # [2 e_a / s, -|e_a|^2 / s, -1] with [e_x, 1, |e_x|^2 / s]: the [B, k, HW] map then
        # sees only the matmul and the exp (it is memory-bound on CPU).
        ea = e.gather(2, idx)  # [B, D, k]
        en = e.pow(2).sum(1, keepdim=True) / scale  # [B, 1, HW]
        an = ea.pow(2).sum(1)[:, :, None] / scale  # [B, k, 1]
        lhs = torch.cat([ea.transpose(1, 2) * (2.0 / scale), -an, -torch.ones_like(an)], 2)  # [B, k, D + 2]
        rhs = torch.cat([e, torch.ones_like(en), en], 1)  # [B, D + 2, HW]
        return torch.exp(torch.bmm(lhs, rhs))

    ms = soft_mask(s)
    with torch.no_grad():
        mt = soft_mask(t)
    if valid is not None:
        v = valid.reshape(b, 1, h * w).to(s.dtype)
        ms, mt = ms * v, mt * v
    inter = torch.linalg.vecdot(ms, mt)
    denom = torch.linalg.vecdot(ms, ms) + torch.linalg.vecdot(mt, mt)
    dice = 2.0 * inter / denom.clamp_min(_EPS)
    real_f = real.to(s.dtype)
    return ((1.0 - dice) * real_f).sum() / real_f.sum()
