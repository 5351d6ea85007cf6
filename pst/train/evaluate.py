"""Inference (semantic + instance -> panoptic) and evaluation on a labelled dataset.

:func:`predict` runs the semantic model, clusters each instance model's embeddings
inside its classes' predicted masks and merges the category-centric instance maps
(:func:`pst.train.infer.embedding_instances`: the same clustering as self-training's
pseudo-labels), then fuses (:func:`pst.panoptic.fuse`).
:func:`evaluate_net` streams PQ / PQ-dagger / SQ / RQ (pst.metrics.PanopticQuality),
mIoU (SemanticIoU) and AP (InstanceAP) over a dataset.

``instances="cc"`` is the baseline without embeddings: the instances are the connected
components of each thing class's predicted mask (:func:`connected_instances`), fused in
the same way, so the difference to ``"embedding"`` is what the instance models add.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pst.labels import LABEL_DIVISOR
from pst.train.data import gt_panoptic
from pst.train.infer import embedding_instances, eval_batches
from pst.train.pseudo import instance_scores
from pst.train.runtime import autocast_for

__all__ = ["Prediction", "predict", "evaluate_net", "evaluate_checkpoint",
           "connected_instances", "held_out_spec", "thing_class_table", "INSTANCE_SOURCES"]

# how predict makes instances: clustering the instance models' embeddings, or the
# connected components of the predicted thing masks (the baseline without embeddings)
INSTANCE_SOURCES = ("embedding", "cc")

logger = logging.getLogger(__name__)


class Prediction(NamedTuple):
    """semantic [B,H,W] int64; confidence [B,H,W] float; instances [B,H,W] int64 (merged);
    scores [B,K] float64; panoptic [B,H,W] int64 (class*1000+id, -1 void)."""

    semantic: torch.Tensor
    confidence: torch.Tensor
    instances: torch.Tensor
    scores: torch.Tensor
    panoptic: torch.Tensor


@torch.no_grad()
def connected_instances(semantic: torch.Tensor, confidence: torch.Tensor, thing_ids, *, min_size: int = 0,
                        connectivity: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Instances without embeddings: the connected components of each thing class's mask.

    Args:
        semantic: [B, H, W] int64 predicted train ids.
        confidence: [B, H, W] float, the semantic confidence (an instance's score is its mean).
        thing_ids: train ids of the thing classes.
        min_size: components with fewer pixels are left out (as fusion with that
            ``thing_area`` would drop them). At most ``LABEL_DIVISOR - 1`` components per
            image are kept, the largest.
    Returns:
        instances [B, H, W] int64 (0 = none, 1..K per image, numbered class by class) and
        scores [B, K] float64, as :func:`predict` makes them from embeddings.
    """
    from pst.morph import connected_components

    ids = torch.as_tensor(list(thing_ids), dtype=semantic.dtype, device=semantic.device)
    B, H, W = semantic.shape
    masks = semantic[:, None] == ids[None, :, None, None]  # [B, T, H, W], disjoint over T
    cc = connected_components(masks.reshape(-1, H, W), connectivity).view(B, len(ids), H, W).long()
    n = cc.amax(dim=(2, 3))  # [B, T] components per class
    offset = torch.cumsum(n, dim=1) - n
    inst = torch.where(cc > 0, cc + offset[:, :, None, None], torch.zeros_like(cc)).sum(dim=1)
    if n.numel() and (min_size > 1 or int(n.sum(1).max()) >= LABEL_DIVISOR):
        for b in range(B):  # drop small components, keep the largest LABEL_DIVISOR - 1, renumber 1..K
            uid, inv, counts = torch.unique(inst[b], return_inverse=True, return_counts=True)
            keep = (uid > 0) & (counts >= min_size)
            if int(keep.sum()) >= LABEL_DIVISOR:
                keep &= counts >= counts[keep].sort(descending=True).values[LABEL_DIVISOR - 2]
                keep &= torch.cumsum(keep.long(), 0) < LABEL_DIVISOR  # ties at the cut: the first ones
            new = torch.zeros_like(uid)
            new[keep] = torch.arange(1, int(keep.sum()) + 1, device=uid.device)
            inst[b] = new[inv]
    return inst, instance_scores(inst, confidence)


@torch.no_grad()
def predict(net, images: torch.Tensor, cfg, *, mode: str | None = None, seed: int = 0,
            amp: bool = False, instances: str = "embedding") -> Prediction:
    """Panoptic prediction of a batch.

    Args:
        net: :class:`pst.train.model.PanopticNet` (eval mode is set here).
        images: [B, 3, H, W] float in [0, 1].
        cfg: the run's :class:`pst.config.Config`.
        mode: the category mode whose instance models are used (default: the first).
        instances: "embedding" (cluster the instance models' embeddings) or "cc" (the
            connected components of the predicted thing masks; no instance model runs).
    """
    from pst.panoptic import fuse

    if instances not in INSTANCE_SOURCES:
        raise ValueError(f"instances should be one of {INSTANCE_SOURCES}, got {instances!r}")
    use_cc = instances == "cc"
    space = cfg.space
    mode = mode or cfg.categories[0]
    keys = [] if use_cc else net.keys_for(mode)
    if not keys and not use_cc:
        raise ValueError(f"the network has no instance models for category mode {mode!r} "
                         f"(it has {sorted({m for m, _ in net.groups.values()})})")
    icfg = cfg.eval.instances or cfg.selftrain.instances
    net.eval()
    with autocast_for(images.device, amp):
        out = net(images, keys=keys)
    probs = torch.softmax(out["logits"].float(), dim=1)
    conf, sem = probs.max(dim=1)
    if use_cc:
        instances, inst_scores = connected_instances(sem, conf, space.thing_ids, min_size=cfg.eval.thing_area)
    else:
        instances, inst_scores = embedding_instances(out["instance"], net.groups, keys, sem, conf, icfg, seed=seed)
    min_score = cfg.eval.min_score or None  # 0: every instance kept
    pan = fuse(sem, instances, thing_ids=space.thing_ids, num_classes=space.num_classes,
               thing_area=cfg.eval.thing_area, stuff_area=cfg.eval.stuff_area,
               scores=None if min_score is None else inst_scores, min_score=min_score)
    return Prediction(sem, conf, instances, inst_scores, pan)


def _panoptic_instances(pan: torch.Tensor, scores: torch.Tensor, thing_ids) -> tuple:
    """Masks [N,H,W] bool, labels [N], scores [N] of the thing segments of one panoptic map."""
    ids = torch.unique(pan)
    cls = torch.div(ids, LABEL_DIVISOR, rounding_mode="floor")
    inst = ids % LABEL_DIVISOR
    thing = torch.zeros(256, dtype=torch.bool, device=pan.device)
    thing[list(thing_ids)] = True
    keep = (ids >= 0) & (inst > 0) & thing[cls.clamp(0, 255)]
    ids, cls, inst = ids[keep], cls[keep], inst[keep]
    masks = pan[None] == ids[:, None, None]
    sc = torch.zeros(len(ids), dtype=torch.float64, device=pan.device)
    if len(ids) and scores.numel():
        valid = (inst - 1) < scores.shape[0]
        sc[valid] = scores[(inst - 1)[valid]].double()
    return masks, cls, sc


def _nan_to_none(v: float) -> float | None:
    return None if v != v else float(v)


def thing_class_table(r_pq: dict, r_iou: dict, r_ap: dict, thing_ids) -> dict[str, dict]:
    """``{class name: {"PQ", "SQ", "RQ", "TP", "FP", "FN", "IoU", "AP", "AP50"}}`` for the
    thing classes, from the ``compute()`` results of PanopticQuality, SemanticIoU and
    InstanceAP (fractions; None where a class does not count)."""
    out = {}
    for c in thing_ids:
        row = r_pq["per_class"][c]
        out[row["name"]] = {**{k: _nan_to_none(row[k]) for k in ("PQ", "SQ", "RQ")},
                            **{k: int(row[k]) for k in ("TP", "FP", "FN")},
                            "IoU": _nan_to_none(r_iou["IoU"][c]),
                            "AP": _nan_to_none(r_ap["per_class"][c]["AP"]),
                            "AP50": _nan_to_none(r_ap["per_class"][c]["AP50"])}
    return out


@torch.no_grad()
def evaluate_net(net, dataset, cfg, *, device: torch.device, mode: str | None = None,
                 amp: bool = False, progress: bool = False, keep: int = 0, seed: int = 0,
                 instances: str = "embedding") -> dict[str, Any]:
    """Metrics of ``net`` on a labelled dataset.

    ``instances``: "embedding" or "cc" (the connected-components baseline), see :func:`predict`.
    Instance AP counts ground-truth objects of at least ``space.ap_min_region(image size)``
    pixels (100 for the Cityscapes label spaces; for the toy scenes 100 px scaled by pixel
    count, with a floor of 16).

    Returns:
        ``{"PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff", "mIoU", "AP", "AP50"}``
        (fractions) plus ``"per_class"`` (:func:`thing_class_table`, thing classes only),
        ``"ap_min_region_size"``, ``"instances"``, ``"n_images"``, ``"seconds"`` and, when
        ``keep`` > 0, ``"examples"``: the first ``keep`` images with their gt / predicted
        panoptic maps.
    """
    from pst.metrics.instance import InstanceAP
    from pst.metrics.panoptic import PanopticQuality
    from pst.metrics.semantic import SemanticIoU

    space = cfg.space
    pq, miou = PanopticQuality(space), SemanticIoU(label_space=space)
    ap = None  # its minimum region size follows the size of the images
    t0 = time.perf_counter()
    examples: list[dict] = []
    n = len(dataset)
    for start, batch in eval_batches(dataset, cfg, progress=progress):
        images = batch["image"].to(device)
        sem_gt = batch["semantic"].to(device)
        gt = gt_panoptic(sem_gt, batch["instances"].to(device), space.thing_ids)
        p = predict(net, images, cfg, mode=mode, seed=seed + start, amp=amp, instances=instances)
        if ap is None:
            ap = InstanceAP(space, min_region_size=space.ap_min_region(images.shape[-2:]))
        pq.update(p.panoptic, gt)
        miou.update(p.semantic, sem_gt)
        for b in range(images.shape[0]):
            masks, labels, scores = _panoptic_instances(p.panoptic[b], p.scores[b] if p.scores.dim() == 2
                                                        else p.scores, space.thing_ids)
            ap.update(masks, labels, scores, gt[b])
            if len(examples) < keep:
                examples.append({"name": batch["name"][b], "image": batch["image"][b].cpu(),
                                 "gt": gt[b].cpu(), "pred": p.panoptic[b].cpu()})
    if ap is None:
        ap = InstanceAP(space, min_region_size=space.ap_min_region(cfg.data.eval_size or cfg.data.size))
    r_pq, r_iou, r_ap = pq.compute(), miou.compute(), ap.compute()
    out = {k: float(r_pq[k]) for k in ("PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff") if k in r_pq}
    out["mIoU"] = float(r_iou["mIoU"])
    out["AP"] = float(r_ap["AP"])
    out["AP50"] = float(r_ap["AP50"])
    out["per_class"] = thing_class_table(r_pq, r_iou, r_ap, space.thing_ids)
    out["ap_min_region_size"] = ap.min_region_size
    out["instances"] = instances
    out["n_images"] = n
    out["seconds"] = time.perf_counter() - t0
    if keep:
        out["examples"] = examples
    return out


def held_out_spec(cfg, *, seed: int | None = None, style: str | None = None, n_scenes: int | None = None):
    """The evaluation set of ``pst evaluate --checkpoint``: the run's held-out set
    ``cfg.data.target_val`` (the one the demo and the self-training curve use), with
    ``seed`` / ``style`` / ``n_scenes`` replacing its fields where given. Overriding any of
    them means toy scenes (the label space must then be "toy")."""
    import dataclasses

    if n_scenes is not None and n_scenes < 1:
        raise ValueError(f"n_scenes should be >= 1, got {n_scenes}")
    spec = cfg.data.target_val
    given = {k: v for k, v in (("seed", seed), ("style", style), ("n", n_scenes)) if v is not None}
    if not given:
        return spec
    if cfg.label_space != "toy":
        raise ValueError(f"toy scene options (seed, style, n_scenes) need a run on the 'toy' label space, "
                         f"this one was trained on {cfg.label_space!r}")
    if spec.name != "toy":
        spec = dataclasses.replace(spec, name="toy", root=None, split=None, limit=0)
    return dataclasses.replace(spec, has_labels=True, **given)


def evaluate_checkpoint(path, *, seed: int | None = None, style: str | None = None, n_scenes: int | None = None,
                        device: str | torch.device = "cpu", out: str | Path | None = None,
                        mode: str | None = None) -> dict:
    """Evaluate a checkpoint (or every final checkpoint of a run folder) on the run's
    held-out set, ``data.target_val`` of the checkpoint's config, or on toy scenes with
    its ``seed`` / ``style`` / ``n`` replaced by the arguments given (:func:`held_out_spec`;
    ``pst evaluate --checkpoint``).

    Returns:
        ``{name: {"PQ", "PQ_dagger", "SQ", "RQ", "mIoU", "AP", ...}}`` for every
        checkpoint found (names as in the demo's metrics.json: ``source_only``,
        ``self_trained``, ``oracle``; other files by their stem), plus ``"_eval"`` with
        the data set settings (``name``, ``seed``, ``style``, ``n_scenes``); also written to
        ``out`` (JSON) when given.
    """
    from pst.io import write_json
    from pst.train.checkpoint import find_checkpoints, load_checkpoint, net_from_checkpoint
    from pst.train.data import build_dataset
    from pst.train.runtime import amp_enabled

    if n_scenes is not None and n_scenes < 1:
        raise ValueError(f"n_scenes should be >= 1, got {n_scenes}")
    device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    results: dict[str, Any] = {}
    names = {"source": "source_only", "selftrain": "self_trained", "oracle": "oracle"}
    evaluated = None
    for stem, ckpt in find_checkpoints(path).items():
        stage = names.get(stem, stem)
        state = load_checkpoint(ckpt)
        net, cfg = net_from_checkpoint(state, device=device)
        try:
            spec = held_out_spec(cfg, seed=seed, style=style, n_scenes=n_scenes)
        except ValueError as exc:
            raise ValueError(f"{ckpt}: {exc}") from None
        ds = build_dataset(spec, cfg.space, cfg.data.size)
        evaluated = {"name": spec.name, "seed": spec.seed, "style": spec.style, "n_scenes": len(ds),
                     "root": spec.root, "split": spec.split}
        modes = [mode] if mode else cfg.categories
        res = {}
        for m in modes:
            res[m] = evaluate_net(net, ds, cfg, device=device, mode=m, amp=amp_enabled(cfg, device))
        results[stage] = {**res[modes[0]], "checkpoint": str(ckpt), "by_category": res} if len(modes) > 1 \
            else {**res[modes[0]], "checkpoint": str(ckpt)}
        logger.info("%s: PQ %.3f mIoU %.3f AP %.3f", stage, results[stage]["PQ"], results[stage]["mIoU"],
                    results[stage]["AP"])
    results["_eval"] = evaluated
    if out is not None:
        write_json(out, results)
    return results


