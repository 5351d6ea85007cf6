"""Pseudo-labels of self-training.

Semantic (SAC, Araslanov & Roth 2021, github.com/visinf/da-sac): the teacher sees ``n_views``
clean augmented copies of each target image (random zoom in [0.5, 1], flips;
``pst.data.transforms.multi_view``); its softmax outputs are warped back to the image
frame and averaged (``warp_back``). Per image and class c the threshold is
``tau_c = max(0.2, 0.75 * peak_c * (1 - exp(-chi_c / beta)))`` with ``peak_c`` the
highest confidence among pixels predicted c and ``chi_c`` an EMA (0.99) of the mean
teacher probability of c (:class:`ClassPrior`, beta = 1e-3); pixels under it are ignored.
With ``align_to`` (distribution alignment, Berthelot et al. 2020, ReMixMatch), the fused
probabilities are first multiplied by ``align_to_c / chi_c`` and renormalised: a class the
teacher predicts on the target far more often than it occurs in the source (the source labels'
EMA frequency, :meth:`ClassPrior.update_labels`) loses the pixels where it barely wins.

Instance: the teacher's embeddings are clustered inside the thing masks of the semantic
pseudo-label (:func:`pst.cluster.cluster_instances`, objectness anchors), then cleaned
with :func:`pst.morph.refine` and clipped back to their class masks.

The same labels written to disk (``pst pseudo-label``) are made by
:func:`pst.train.pseudo_files.write_pseudo_labels`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import torch

from pst.labels import IGNORE
from pst.train.distributed import all_reduce_mean

__all__ = ["ClassPrior", "class_thresholds", "SemanticPseudo", "SemanticPseudoSettings",
           "semantic_pseudo_labels", "gate_things", "instance_pseudo_labels", "instance_scores"]


class ClassPrior:
    """EMA ``chi`` [C] of the mean teacher probability per class (the class prior).

    The first update sets it; later ones do ``chi = m * chi + (1 - m) * mean`` with the
    mean averaged over processes under DDP so that every process holds the same prior.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99):
        if num_classes < 1:
            raise ValueError(f"num_classes should be >= 1, got {num_classes}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum should be in [0, 1], got {momentum}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.chi: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> torch.Tensor:
        """Args: probs [B, C, H, W] softmax. Returns the updated chi [C] float32."""
        if probs.dim() != 4 or probs.shape[1] != self.num_classes:
            raise ValueError(f"probs should be [B, {self.num_classes}, H, W], got {tuple(probs.shape)}")
        return self._blend(all_reduce_mean(probs.float().mean(dim=(0, 2, 3))))

    def _blend(self, mean: torch.Tensor) -> torch.Tensor:
        """The first update sets chi to ``mean``; later ones blend it in with the momentum."""
        if self.chi is None:
            self.chi = mean.clone()
        else:
            self.chi = self.momentum * self.chi.to(mean.device) + (1.0 - self.momentum) * mean
        return self.chi

    @torch.no_grad()
    def update_labels(self, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor | None:
        """Update with the class frequencies of a label map [B, H, W] (pixels equal to
        ``ignore_index`` not counted). Returns chi, unchanged when no pixel is labelled."""
        if labels.dim() != 3:
            raise ValueError(f"labels should be [B, H, W], got {tuple(labels.shape)}")
        lab = labels[(labels != ignore_index) & (labels >= 0) & (labels < self.num_classes)]
        counts = torch.bincount(lab.long(), minlength=self.num_classes).float()
        counts = all_reduce_mean(torch.cat([counts, counts.sum().reshape(1)]))
        if float(counts[-1]) == 0:
            return self.chi
        return self._blend(counts[:-1] / counts[-1])

    def state_dict(self) -> dict:
        return {"chi": None if self.chi is None else self.chi.cpu(), "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.chi = None if state["chi"] is None else state["chi"].clone()
        self.momentum = float(state["momentum"])


def class_thresholds(confidence: torch.Tensor, labels: torch.Tensor, chi: torch.Tensor, *,
                     minimum: float = 0.2, scale: float = 0.75, beta: float = 1e-3) -> torch.Tensor:
    """Class-wise thresholds per image (SAC).

    Args:
        confidence: [B, H, W] float, the top softmax probability per pixel.
        labels: [B, H, W] int64, its class.
        chi: [C] float class prior.
    Returns:
        [B, C] float: ``max(minimum, scale * peak_bc * (1 - exp(-chi_c / beta)))``, with
        ``peak_bc`` the highest confidence of class c in image b (0 if absent).
    """
    B = confidence.shape[0]
    C = chi.numel()
    idx = (torch.arange(B, device=labels.device)[:, None] * C + labels.reshape(B, -1)).reshape(-1)
    peak = torch.zeros(B * C, dtype=confidence.dtype, device=confidence.device)
    peak = peak.scatter_reduce(0, idx, confidence.reshape(-1), reduce="amax", include_self=True).view(B, C)
    tau = scale * peak * (1.0 - torch.exp(-chi.to(peak)[None] / beta))
    return tau.clamp_min(minimum)


class SemanticPseudo(NamedTuple):
    """labels [B,H,W] int64 (IGNORE under threshold); confidence [B,H,W] float;
    probs [B,C,H,W] float (fused teacher softmax); argmax [B,H,W] int64 (unthresholded)."""

    labels: torch.Tensor
    confidence: torch.Tensor
    probs: torch.Tensor
    argmax: torch.Tensor


@dataclasses.dataclass(frozen=True)
class SemanticPseudoSettings:
    """How :func:`semantic_pseudo_labels` fuses views and thresholds: ``n_views`` teacher views
    zoomed into ``zoom`` [lo, hi] (flipped at random when ``flip``), thresholds
    ``max(minimum, scale * peak_c * (1 - exp(-chi_c / beta)))``. The defaults are SAC's;
    :meth:`from_config` reads them from ``cfg.selftrain``."""

    n_views: int = 4
    zoom: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    minimum: float = 0.2
    scale: float = 0.75
    beta: float = 1e-3

    @classmethod
    def from_config(cls, st) -> SemanticPseudoSettings:
        """The settings of a :class:`pst.config.SelfTrainConfig` (``cfg.selftrain``)."""
        return cls(n_views=st.n_views, zoom=tuple(st.view_zoom), flip=st.view_flip, minimum=st.threshold_min,
                   scale=st.threshold_scale, beta=st.prior_beta)


@torch.no_grad()
def semantic_pseudo_labels(teacher, images: torch.Tensor, prior: ClassPrior | None,
                           settings: SemanticPseudoSettings = SemanticPseudoSettings(), *,
                           generator: torch.Generator | None = None, update_prior: bool = True,
                           align_to: torch.Tensor | None = None) -> SemanticPseudo:
    """Multi-view fused, class-wise thresholded semantic pseudo-labels.

    Args:
        teacher: forward(x [B,3,h,w]) -> logits [B,C,h,w].
        images: [B, 3, H, W] float in [0, 1] (clean: no photometric noise).
        prior: the class prior, updated with this batch when ``update_prior`` (None: no
            prior, the exp factor is 1).
        settings: views and thresholds (:class:`SemanticPseudoSettings`).
        generator: draws the views' zoom windows and flips.
        align_to: optional [C] class distribution (the source labels' frequencies) that the
            teacher's is aligned to: probabilities times ``align_to / prior.chi``, renormalised
            (needs ``prior``). ``probs`` of the result are then the aligned ones.
    """
    if not isinstance(settings, SemanticPseudoSettings):
        raise TypeError(f"settings should be a SemanticPseudoSettings, got {type(settings).__name__}")
    n_views, minimum, scale, beta = settings.n_views, settings.minimum, settings.scale, settings.beta
    B, _, H, W = images.shape
    if n_views > 1:
        from pst.data.transforms import multi_view, warp_back

        views, params = multi_view(images, n_views, zoom=tuple(settings.zoom), flip=settings.flip, generator=generator)
        outs = [torch.softmax(teacher(v).float(), dim=1) for v in views]
        probs = warp_back(outs, params, (H, W))
    else:
        probs = torch.softmax(teacher(images).float(), dim=1)
    probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
    if prior is not None and update_prior:
        chi = prior.update(probs)
    elif prior is not None and prior.chi is not None:
        chi = prior.chi
    else:
        chi = torch.ones(probs.shape[1], device=probs.device)
    if align_to is not None:
        if prior is None:
            raise ValueError("align_to needs the teacher's class prior (prior=None given)")
        if align_to.shape != (probs.shape[1],):
            raise ValueError(f"align_to should be [{probs.shape[1]}] class frequencies, got {tuple(align_to.shape)}")
        ratio = align_to.to(probs) / chi.to(probs).clamp_min(1e-6)
        probs = probs * ratio[None, :, None, None]
        probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
    conf, arg = probs.max(dim=1)
    tau = class_thresholds(conf, arg, chi.to(probs.device), minimum=minimum, scale=scale, beta=beta)
    keep = conf >= tau.gather(1, arg.reshape(B, -1)).view(B, H, W)
    labels = torch.where(keep, arg, torch.full_like(arg, IGNORE))
    return SemanticPseudo(labels, conf, probs, arg)


@torch.no_grad()
def gate_things(labels: torch.Tensor, objectness: dict[str, torch.Tensor], groups: dict,
                threshold: float) -> torch.Tensor:
    """Semantic pseudo-labels whose thing pixels need the instance branch's agreement.

    A pixel labelled with a thing class becomes ``IGNORE`` where the teacher's objectness
    of an instance model covering that class is below ``threshold``. The objectness
    comes from another network (the U-Net) than the semantic labels, so its errors are
    partly independent: on the toy target, of the pixels a source model labels as things,
    82% of the true thing pixels have objectness > 0.5 against 34% of the stuff pixels.

    Args:
        labels: [B, H, W] int64 semantic pseudo-labels (``IGNORE`` = void).
        objectness: instance model key -> [B, H, W] probabilities in [0, 1].
        groups: key -> (mode, thing ids) of the instance models (``net.groups``).
        threshold: in [0, 1]; 0 leaves the labels as they are.
    Returns:
        [B, H, W] int64, a new tensor.
    """
    from pst.train.objectives import group_mask

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold should be in [0, 1], got {threshold}")
    drop = torch.zeros_like(labels, dtype=torch.bool)
    if threshold > 0:
        for key, (_, ids) in groups.items():
            if key not in objectness:
                raise ValueError(f"no objectness for instance model {key!r} (have {sorted(objectness)})")
            obj = objectness[key]
            if obj.shape != labels.shape:
                raise ValueError(f"objectness of {key!r} should be {tuple(labels.shape)}, got {tuple(obj.shape)}")
            drop |= group_mask(labels, ids) & (obj < threshold)
    return torch.where(drop, torch.full_like(labels, IGNORE), labels)


@torch.no_grad()
def instance_pseudo_labels(embedding: torch.Tensor, objectness: torch.Tensor | None, semantic: torch.Tensor,
                           thing_ids: Sequence[int], icfg, *, seed: int = 0) -> torch.Tensor:
    """Instance pseudo-labels of one instance model.

    Args:
        embedding: [B, D, H, W] float teacher embeddings.
        objectness: [B, H, W] float probabilities in [0, 1], or None.
        semantic: [B, H, W] int64 (pseudo-)labels; only ``thing_ids`` pixels are clustered.
        icfg: :class:`pst.config.InstancePseudoConfig`. ``cluster_within="class"``
            clusters each class's mask on its own; ``"group"`` clusters the union of
            ``thing_ids`` at once (an object whose pixels the semantic labels split between
            two of the classes stays one instance; fusion then gives it its majority class).
    Returns:
        [B, H, W] int64, 0 = none, 1..K per image, each instance inside one class's mask
        (``"group"``: inside the union of the classes' masks).
    """
    from pst.cluster import cluster_instances
    from pst.morph import refine
    from pst.train.objectives import group_mask

    ids = [int(i) for i in thing_ids]
    by_group = icfg.cluster_within == "group" and len(ids) > 1
    if by_group:  # one segment per image: the group's mask, labelled with its first class
        mask = group_mask(semantic, ids)
        seg_map = torch.where(mask, torch.full_like(semantic, ids[0]), torch.full_like(semantic, IGNORE))
        classes = ids[:1]
    else:
        seg_map, classes = semantic, ids
    inst = cluster_instances(
        embedding.float(), seg_map, None if objectness is None else objectness.float(),
        thing_classes=classes, method=icfg.method, bandwidth=icfg.bandwidth,
        merge_distance=icfg.merge_distance, min_size=icfg.min_size, n_anchors=icfg.n_anchors,
        max_iter=icfg.max_iter, seed=seed)
    if icfg.open_radius or icfg.close_radius or icfg.fill_holes or icfg.largest_component:
        inst = refine(inst, open_radius=icfg.open_radius, close_radius=icfg.close_radius,
                      fill_holes=icfg.fill_holes, min_size=icfg.min_size,
                      largest_component=icfg.largest_component).long()
        # refinement may grow an instance over another class: clip it to its own class mask
        B = inst.shape[0]
        K = int(inst.max()) if inst.numel() else 0
        if by_group:
            inst = torch.where(mask, inst, torch.zeros_like(inst))
        elif K:
            cls = _instance_majority(inst, semantic, K)  # [B, K+1]
            own = cls.gather(1, inst.view(B, -1)).view_as(inst)
            inst = torch.where(semantic == own, inst, torch.zeros_like(inst))
    return inst


def _instance_majority(inst: torch.Tensor, semantic: torch.Tensor, K: int) -> torch.Tensor:
    """[B, K+1] majority semantic class under each instance id (column 0 = -1)."""
    B = inst.shape[0]
    sem = semantic.clamp(0, 255).long()
    idx = (torch.arange(B, device=inst.device)[:, None] * (K + 1) + inst.view(B, -1)) * 256 + sem.view(B, -1)
    counts = torch.bincount(idx.reshape(-1), minlength=B * (K + 1) * 256).view(B, K + 1, 256)
    counts[..., IGNORE] = 0
    cls = counts.argmax(-1)
    cls[:, 0] = -1
    return cls


def instance_scores(instances: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``weights`` over each instance.

    Args:
        instances: [B, H, W] int64, 0 = none, 1..K.
        weights: [B, H, W] float (e.g. objectness x semantic confidence).
    Returns:
        [B, K] float64 (0 for ids absent from an image), K = max id over the batch.
    """
    B = instances.shape[0]
    K = int(instances.max()) if instances.numel() else 0
    if K == 0:
        return torch.zeros((B, 0), dtype=torch.float64, device=instances.device)
    idx = (torch.arange(B, device=instances.device)[:, None] * (K + 1) + instances.view(B, -1)).reshape(-1)
    s = torch.bincount(idx, weights=weights.reshape(-1).double(), minlength=B * (K + 1)).view(B, K + 1)
    n = torch.bincount(idx, minlength=B * (K + 1)).view(B, K + 1)
    return (s / n.clamp_min(1))[:, 1:]
