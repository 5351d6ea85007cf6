"""Inference (semantic + instance -> panoptic) and evaluation on a labelled dataset.

:func:`predict` runs the semantic model, clusters each instance model's embeddings
inside its classes' predicted masks (the same :func:`pst.train.pseudo.instance_pseudo_labels`
as self-training), merges the category-centric instance maps
(:func:`pst.panoptic.merge_instance_maps`) and fuses (:func:`pst.panoptic.fuse`).
:func:`evaluate_net` streams PQ / PQ-dagger / SQ / RQ (pst.metrics.PanopticQuality),
mIoU (SemanticIoU) and AP (InstanceAP) over a dataset.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from pst.labels import LABEL_DIVISOR
from pst.train.data import collate, gt_panoptic, resize_sample
from pst.train.pseudo import instance_pseudo_labels, instance_scores

__all__ = ["Prediction", "predict", "evaluate_net", "evaluate_checkpoint", "net_from_checkpoint", "autocast_for"]

logger = logging.getLogger(__name__)


def autocast_for(device: torch.device, enabled: bool):
    """bfloat16 autocast on a GPU that supports it (float16 otherwise); nothing on CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


class Prediction(NamedTuple):
    """semantic [B,H,W] int64; confidence [B,H,W] float; instances [B,H,W] int64 (merged);
    scores [B,K] float64; panoptic [B,H,W] int64 (class*1000+id, -1 void)."""

    semantic: torch.Tensor
    confidence: torch.Tensor
    instances: torch.Tensor
    scores: torch.Tensor
    panoptic: torch.Tensor


@torch.no_grad()
def predict(net, images: torch.Tensor, cfg, *, mode: str | None = None, seed: int = 0,
            amp: bool = False) -> Prediction:
    """Panoptic prediction of a batch.

    Args:
        net: :class:`pst.train.model.PanopticNet` (eval mode is set here).
        images: [B, 3, H, W] float in [0, 1].
        cfg: the run's :class:`pst.config.Config`.
        mode: the category mode whose instance models are used (default: the first).
    """
    from pst.panoptic import fuse, merge_instance_maps

    space = cfg.space
    mode = mode or cfg.categories[0]
    keys = net.keys_for(mode)
    if not keys:
        raise ValueError(f"the network has no instance models for category mode {mode!r} "
                         f"(it has {sorted({m for m, _ in net.groups.values()})})")
    icfg = cfg.eval.instances or cfg.selftrain.instances
    net.eval()
    with autocast_for(images.device, amp):
        out = net(images, keys=keys)
    probs = torch.softmax(out["logits"].float(), dim=1)
    conf, sem = probs.max(dim=1)
    maps, scores = [], []
    for k in keys:
        _, ids = net.groups[k]
        emb = out["instance"][k]["embedding"].float()
        obj = torch.sigmoid(out["instance"][k]["objectness"].float())
        inst = instance_pseudo_labels(emb, obj, sem, ids, icfg, seed=seed)
        maps.append(inst)
        sc = instance_scores(inst, obj * conf)
        if sc.shape[1] == 0:  # merge_instance_maps needs one column per id; pad empty maps
            sc = torch.zeros((inst.shape[0], 0), dtype=torch.float64, device=inst.device)
        scores.append(sc)
    if len(maps) == 1:
        instances, inst_scores = maps[0], scores[0]
    else:
        merged = merge_instance_maps(maps, scores)
        instances, inst_scores = merged.instances, torch.nan_to_num(merged.scores, nan=0.0)
    pan = fuse(sem, instances, thing_ids=space.thing_ids, num_classes=space.num_classes,
               thing_area=cfg.eval.thing_area, stuff_area=cfg.eval.stuff_area)
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


@torch.no_grad()
def evaluate_net(net, dataset, cfg, *, device: torch.device, mode: str | None = None,
                 amp: bool = False, progress: bool = False, keep: int = 0, seed: int = 0) -> dict[str, Any]:
    """Metrics of ``net`` on a labelled dataset.

    Returns:
        ``{"PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff", "mIoU", "AP", "AP50"}``
        (fractions) plus ``"n_images"``, ``"seconds"`` and, when ``keep`` > 0,
        ``"examples"``: the first ``keep`` images with their gt / predicted panoptic maps.
    """
    from tqdm import tqdm

    from pst.metrics.instance import InstanceAP
    from pst.metrics.panoptic import PanopticQuality
    from pst.metrics.semantic import SemanticIoU

    space = cfg.space
    pq, miou, ap = PanopticQuality(space), SemanticIoU(label_space=space), InstanceAP(space)
    t0 = time.perf_counter()
    bs = cfg.eval.batch_size
    examples: list[dict] = []
    n = len(dataset)
    for start in tqdm(range(0, n, bs), desc="evaluate", disable=not progress, leave=False):
        samples = [dataset[i] for i in range(start, min(n, start + bs))]
        if cfg.data.eval_size is not None:
            samples = [resize_sample(s, cfg.data.eval_size) for s in samples]
        batch = collate(samples)
        images = batch["image"].to(device)
        sem_gt = batch["semantic"].to(device)
        gt = gt_panoptic(sem_gt, batch["instances"].to(device), space.thing_ids)
        p = predict(net, images, cfg, mode=mode, seed=seed + start, amp=amp)
        pq.update(p.panoptic, gt)
        miou.update(p.semantic, sem_gt)
        for b in range(images.shape[0]):
            masks, labels, scores = _panoptic_instances(p.panoptic[b], p.scores[b] if p.scores.dim() == 2
                                                        else p.scores, space.thing_ids)
            ap.update(masks, labels, scores, gt[b])
            if len(examples) < keep:
                examples.append({"name": batch["name"][b], "image": batch["image"][b].cpu(),
                                 "gt": gt[b].cpu(), "pred": p.panoptic[b].cpu()})
    r_pq, r_iou, r_ap = pq.compute(), miou.compute(), ap.compute()
    out = {k: float(r_pq[k]) for k in ("PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff") if k in r_pq}
    out["mIoU"] = float(r_iou["mIoU"])
    out["AP"] = float(r_ap["AP"])
    out["AP50"] = float(r_ap["AP50"])
    out["n_images"] = n
    out["seconds"] = time.perf_counter() - t0
    if keep:
        out["examples"] = examples
    return out


def net_from_checkpoint(state: dict, *, which: str = "model", device: torch.device | str = "cpu"):
    """(net, cfg) rebuilt from a checkpoint dict (``which``: "model" or "teacher")."""
    from pst.config import config_from_dict
    from pst.train.model import build_panoptic_net

    cfg = config_from_dict(state["config"])
    net = build_panoptic_net(cfg)
    sd = state.get(which) or state["model"]
    net.load_state_dict(sd)
    return net.to(device).eval(), cfg


def evaluate_checkpoint(path, *, seed: int = 3, style: str = "target", n_scenes: int = 32,
                        device: str | torch.device = "cpu", out: str | Path | None = None,
                        mode: str | None = None) -> dict:
    """Evaluate a checkpoint (or every final checkpoint of a run folder) on ``n_scenes``
    toy scenes of ``seed`` and ``style`` (``pst evaluate --checkpoint``).

    Returns:
        ``{name: {"PQ", "PQ_dagger", "SQ", "RQ", "mIoU", "AP", ...}}`` for every
        checkpoint found (names as in the demo's metrics.json: ``source_only``,
        ``self_trained``, ``oracle``; other files by their stem), plus ``"_eval"`` with
        the scene settings; also written to ``out`` (JSON) when given.
    """
    from pst.config import DatasetConfig
    from pst.io import write_json
    from pst.train.checkpoint import find_checkpoints, load_checkpoint
    from pst.train.data import build_dataset

    if n_scenes < 1:
        raise ValueError(f"n_scenes should be >= 1, got {n_scenes}")
    device = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    results: dict[str, Any] = {}
    names = {"source": "source_only", "selftrain": "self_trained", "oracle": "oracle"}
    for stem, ckpt in find_checkpoints(path).items():
        stage = names.get(stem, stem)
        state = load_checkpoint(ckpt)
        net, cfg = net_from_checkpoint(state, device=device)
        if cfg.label_space != "toy":
            raise ValueError(f"{ckpt}: trained on label space {cfg.label_space!r}; toy scenes need 'toy'")
        spec = DatasetConfig(name="toy", style=style, n=n_scenes, seed=seed)
        ds = build_dataset(spec, cfg.space, cfg.data.size)
        modes = [mode] if mode else cfg.categories
        res = {}
        for m in modes:
            res[m] = evaluate_net(net, ds, cfg, device=device, mode=m)
        results[stage] = {**res[modes[0]], "checkpoint": str(ckpt), "by_category": res} if len(modes) > 1 \
            else {**res[modes[0]], "checkpoint": str(ckpt)}
        logger.info("%s: PQ %.3f mIoU %.3f AP %.3f", stage, results[stage]["PQ"], results[stage]["mIoU"],
                    results[stage]["AP"])
    results["_eval"] = {"seed": seed, "style": style, "n_scenes": n_scenes}
    if out is not None:
        write_json(out, results)
    return results


