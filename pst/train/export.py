"""Predictions of a checkpoint written in the Cityscapes formats (``pst export``),
with :mod:`pst.formats.cityscapes`: panoptic PNG + JSON, labelIds PNGs, instance txt +
mask PNGs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import torch

__all__ = ["export_predictions", "image_id_for"]

logger = logging.getLogger(__name__)

FORMATS = ("panoptic", "semantic", "instance")


def image_id_for(name: str, index: int) -> str:
    """The Cityscapes ``<city>_<seq>_<frame>`` id of a sample name; names that are not
    Cityscapes file names (toy scenes) get ``<name-without-punctuation>_000000_<index>``."""
    from pst.formats.cityscapes import image_id_from_name

    try:
        return image_id_from_name(name)
    except ValueError:
        city = re.sub(r"[^A-Za-z0-9]", "", str(name)) or "image"
        return f"{city}_000000_{index:06d}"


@torch.no_grad()
def export_predictions(checkpoint, out_dir, *, dataset: str = "target_val", mode: str | None = None, limit: int = 0,
                       formats: Sequence[str] = FORMATS, device: str = "cpu") -> dict:
    """Write the predictions of ``checkpoint`` on ``cfg.data.<dataset>`` under ``out_dir``
    (``panoptic/`` + ``panoptic.json``, ``semantic/``, ``instance/``).

    Returns:
        ``{"images": n, "out": str, "formats": [...]}``.
    """
    from pst.formats.cityscapes import PanopticExporter, export_instances, export_semantic
    from pst.io import remove_stale_temps
    from pst.train.checkpoint import load_checkpoint
    from pst.train.data import build_dataset, collate, resize_sample
    from pst.train.evaluate import _panoptic_instances, net_from_checkpoint, predict

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats should be a non-empty subset of {FORMATS}, got {tuple(formats)}")
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir)
    state = load_checkpoint(checkpoint, map_location=device)
    net, cfg = net_from_checkpoint(state, device=device)
    space = cfg.space
    ds = build_dataset(getattr(cfg.data, dataset), space, cfg.data.size)
    n = min(len(ds), limit) if limit else len(ds)
    bs = cfg.eval.batch_size
    exporter = PanopticExporter(out_dir, space) if "panoptic" in formats else None
    for start in range(0, n, bs):
        samples = [ds[i] for i in range(start, min(n, start + bs))]
        if cfg.data.eval_size is not None:
            samples = [resize_sample(s, cfg.data.eval_size) for s in samples]
        batch = collate(samples)
        p = predict(net, batch["image"].to(device), cfg, mode=mode, seed=start)
        for b, name in enumerate(batch["name"]):
            iid = image_id_for(name, start + b)
            masks, labels, scores = _panoptic_instances(p.panoptic[b], p.scores[b], space.thing_ids)
            if exporter is not None:
                ids = [int(p.panoptic[b][masks[k]][0]) for k in range(len(masks))]
                sc = {pid: float(s) for pid, s in zip(ids, scores.tolist())}
                exporter.add(iid, p.panoptic[b].cpu(), scores=sc)
            if "semantic" in formats:
                export_semantic(out_dir / "semantic", iid, p.semantic[b].cpu(), space)
            if "instance" in formats:
                export_instances(out_dir / "instance", iid, masks.cpu(), labels.cpu(), scores.cpu(), space)
    if exporter is not None:
        exporter.close()
    logger.info("exported %d images to %s", n, out_dir)
    return {"images": n, "out": str(out_dir), "formats": list(formats)}
