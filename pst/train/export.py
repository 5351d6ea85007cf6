"""Predictions of a checkpoint written in the Cityscapes formats (``pst export``),
with :mod:`pst.formats.cityscapes`: panoptic PNG + JSON, labelIds PNGs, instance txt +
mask PNGs.

An export is complete or visibly not. Everything is written into ``<out>/.pst-export-partial/``,
``export.json`` (what was exported, from which checkpoint) last; only when all of it is written
are its entries (``panoptic/`` + ``panoptic.json``, ``semantic/``, ``instance/``) moved into
``<out>``, replacing those of an earlier export, and ``export.json`` after them: renames, which
need no room on the disk. An interrupted export leaves its files in the partial folder only,
which the next export into ``<out>`` deletes before it starts again; folders of ``<out>``
without ``export.json`` beside them are not an export's finished output.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import torch

from pst.io import WriteError, remove_stale_temps, write_json
from pst.train.runlock import holds_run_folder

__all__ = ["export_predictions", "image_id_for", "PARTIAL", "MANIFEST"]

logger = logging.getLogger(__name__)

FORMATS = ("panoptic", "semantic", "instance")
PARTIAL = ".pst-export-partial"  # the export in progress, inside the out folder
MANIFEST = "export.json"  # written last: the export is complete
# what each format puts in the out folder
_ENTRIES = {"panoptic": ("panoptic", "panoptic.json"), "semantic": ("semantic",), "instance": ("instance",)}


def image_id_for(name: str, index: int) -> str:
    """The Cityscapes ``<city>_<seq>_<frame>`` id of a sample name; names that are not
    Cityscapes file names (toy scenes) get ``<name-without-punctuation>_000000_<index>``."""
    from pst.formats.cityscapes import image_id_from_name

    try:
        return image_id_from_name(name)
    except ValueError:
        city = re.sub(r"[^A-Za-z0-9]", "", str(name)) or "image"
        return f"{city}_000000_{index:06d}"


@holds_run_folder("out_dir")
@torch.no_grad()
def export_predictions(checkpoint, out_dir, *, dataset: str = "target_val", mode: str | None = None, limit: int = 0,
                       formats: Sequence[str] = FORMATS, device: str = "cpu") -> dict:
    """Write the predictions of ``checkpoint`` on ``cfg.data.<dataset>`` under ``out_dir``
    (``panoptic/`` + ``panoptic.json``, ``semantic/``, ``instance/``), then ``export.json``.

    The files appear in ``out_dir`` only once all are written (see the module doc); the
    process holds ``out_dir``'s lock meanwhile (:mod:`pst.train.runlock`).

    Returns:
        ``{"images": n, "out": str, "formats": [...]}``.
    """
    from pst.formats.cityscapes import PanopticExporter, export_instances, export_semantic
    from pst.train.checkpoint import load_checkpoint, net_from_checkpoint
    from pst.train.data import build_dataset
    from pst.train.evaluate import _panoptic_instances, predict
    from pst.train.infer import eval_batches

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"formats should be a non-empty subset of {FORMATS}, got {tuple(formats)}")
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir)
    partial = out_dir / PARTIAL
    if partial.exists():
        logger.info("%s: removing the files of an interrupted export; starting again", partial)
        shutil.rmtree(partial)
    state = load_checkpoint(checkpoint, map_location=device)
    net, cfg = net_from_checkpoint(state, device=device)
    space = cfg.space
    ds = build_dataset(getattr(cfg.data, dataset), space, cfg.data.size)
    n = min(len(ds), limit) if limit else len(ds)
    exporter = PanopticExporter(partial, space) if "panoptic" in formats else None
    for start, batch in eval_batches(ds, cfg, limit=n, desc="export"):
        p = predict(net, batch["image"].to(device), cfg, mode=mode, seed=start)
        for b, name in enumerate(batch["name"]):
            iid = image_id_for(name, start + b)
            masks, labels, scores = _panoptic_instances(p.panoptic[b], p.scores[b], space.thing_ids)
            if exporter is not None:
                ids = [int(p.panoptic[b][masks[k]][0]) for k in range(len(masks))]
                sc = {pid: float(s) for pid, s in zip(ids, scores.tolist())}
                exporter.add(iid, p.panoptic[b].cpu(), scores=sc)
            if "semantic" in formats:
                export_semantic(partial / "semantic", iid, p.semantic[b].cpu(), space)
            if "instance" in formats:
                export_instances(partial / "instance", iid, masks.cpu(), labels.cpu(), scores.cpu(), space)
    if exporter is not None:
        exporter.close()
    write_json(partial / MANIFEST, {"checkpoint": str(checkpoint), "dataset": dataset,
                                    "mode": mode or cfg.categories[0], "limit": limit, "images": n,
                                    "formats": list(formats)})
    _publish(partial, out_dir, [e for f in FORMATS if f in formats for e in _ENTRIES[f]] + [MANIFEST])
    shutil.rmtree(partial)
    logger.info("exported %d images to %s", n, out_dir)
    return {"images": n, "out": str(out_dir), "formats": list(formats)}


def _publish(partial: Path, out_dir: Path, entries: list[str]) -> None:
    """Move ``entries`` of the finished export in ``partial`` into ``out_dir``, each by a rename
    within the folder, in order (the manifest last); an earlier export's manifest goes first and
    its entries of those names are moved aside (into ``partial``, deleted with it)."""
    (out_dir / MANIFEST).unlink(missing_ok=True)
    aside = partial / ".replaced"
    aside.mkdir()
    for name in entries:
        src, dst = partial / name, out_dir / name
        try:
            if not src.exists():  # no image written (an empty dataset)
                src.mkdir()
            if dst.exists():
                os.replace(dst, aside / name)
            os.replace(src, dst)
        except OSError as exc:
            raise WriteError(exc, dst, "moving the finished export to") from exc
