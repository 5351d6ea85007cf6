"""The demo report: metrics table, PQ-over-iterations plot and panoptic overlays, as
Markdown (``report.md``) next to the PNGs it shows. Every file goes through pst.io."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pst.io import save_png, write_bytes, write_text
from pst.labels import LABEL_DIVISOR, LabelSpace

__all__ = ["gap_closed", "colorize_panoptic", "save_overlays", "plot_curve", "write_report"]

logger = logging.getLogger(__name__)

STAGE_TITLES = {"source_only": "source-only", "self_trained": "self-trained", "oracle": "oracle (target labels)"}


def gap_closed(source: float, selftrained: float, oracle: float) -> float | None:
    """``(self - source) / (oracle - source)``; None when the oracle is not better."""
    d = oracle - source
    if not (d > 1e-9) or any(math.isnan(v) for v in (source, selftrained, oracle)):
        return None
    return (selftrained - source) / d


def colorize_panoptic(pan: torch.Tensor, space: LabelSpace) -> np.ndarray:
    """[H, W] panoptic ids -> [H, W, 3] uint8: class colours, thing instances shaded by
    id with dark boundaries, void black."""
    pan = pan.cpu().long()
    lut = torch.from_numpy(space.palette()).long()
    cls = torch.div(pan, LABEL_DIVISOR, rounding_mode="floor").clamp(0, 255)
    rgb = lut[cls].float()
    inst = pan % LABEL_DIVISOR
    has = (pan >= 0) & (inst > 0)
    shade = 0.55 + 0.45 * ((inst * 2654435761) % 997).float() / 996.0
    rgb = torch.where(has[..., None], rgb * shade[..., None] + (1 - shade[..., None]) * 255 * 0.5, rgb)
    edge = torch.zeros_like(has)
    edge[:, 1:] |= pan[:, 1:] != pan[:, :-1]
    edge[1:, :] |= pan[1:, :] != pan[:-1, :]
    rgb[edge & has] = 20.0
    rgb[pan < 0] = 0.0
    return rgb.clamp(0, 255).byte().numpy()


def save_overlays(out_dir: Path, examples: dict[str, list[dict]], space: LabelSpace,
                  stages: Sequence[str] = ("source_only", "self_trained")) -> list[Path]:
    """One PNG per image: input | ground truth | each stage's panoptic output, side by side.

    Args:
        examples: stage -> list of {"name", "image" [3,H,W] float, "gt" [H,W], "pred" [H,W]}
            (the same images, in the same order, for every stage).
    """
    paths = []
    first = examples[stages[0]]
    for i, ex in enumerate(first):
        img = (ex["image"].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        H = img.shape[0]
        sep = np.full((H, 4, 3), 255, dtype=np.uint8)
        panels = [img, sep, colorize_panoptic(ex["gt"], space)]
        for s in stages:
            panels += [sep, colorize_panoptic(examples[s][i]["pred"], space)]
        p = out_dir / f"overlay_{i:02d}.png"
        save_png(p, np.concatenate(panels, axis=1))
        paths.append(p)
    return paths


def plot_curve(path: Path, curves: dict[str, list[dict]], refs: dict[str, float] | None = None,
               key: str = "PQ") -> Path:
    """PQ (``key``) over self-training iterations, one line per category mode, with
    horizontal reference lines (``refs``: label -> value, e.g. the oracle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, curve in curves.items():
        if curve:
            ax.plot([c["step"] for c in curve], [100 * c[key] for c in curve], marker="o", ms=3, label=name)
    for label, v in (refs or {}).items():
        ax.axhline(100 * v, ls="--", lw=1, color="grey")
        ax.text(ax.get_xlim()[0], 100 * v, f" {label}", va="bottom", fontsize=8, color="dimgrey")
    ax.set_xlabel("self-training iteration")
    ax.set_ylabel(f"{key} (%) on target val")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{100 * v:.1f}"
    return str(v)


def write_report(out_dir: str | Path, metrics: dict, *, space: LabelSpace, curves: dict[str, list[dict]],
                 examples: dict[str, list[dict]] | None = None) -> Path:
    """Write ``report.md`` (and its PNGs) into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    lines = [f"# pst demo: {metrics.get('config', '')}", ""]
    lines += [f"Self-trained panoptic segmentation on the {space.name} label space. Models trained on the "
              "labelled source; self-trained on the unlabelled target; evaluated on held-out target scenes "
              f"({metrics.get('n_val_images', '?')} images). Values in %.", ""]
    cols = ["PQ", "PQ_dagger", "SQ", "RQ", "mIoU", "AP", "AP50"]
    by_cat = metrics.get("by_category", {})
    for mode, res in by_cat.items():
        lines += [f"## Category mode {mode.upper()}", "", "| model | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for stage in ("source_only", "self_trained", "oracle"):
            if stage in res:
                lines.append(f"| {STAGE_TITLES[stage]} | " + " | ".join(_fmt(res[stage].get(c)) for c in cols) + " |")
        gc = res.get("gap_closed", {})
        lines += ["", "Gap closed by self-training, (self - source) / (oracle - source): "
                  + ", ".join(f"{k} {('n/a' if v is None else f'{v:.2f}')}" for k, v in gc.items()), ""]
    t = metrics.get("timing", {})
    if t:
        per = t.get("seconds_per_iteration", {})
        lines += ["## Time", "",
                  f"- wall time of the demo: {metrics.get('wall_seconds', float('nan')):.0f} s "
                  f"(stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in metrics.get("stage_seconds", {}).items()) + ")",
                  f"- one self-training iteration: {per.get('iteration', float('nan')):.2f} s; making the instance "
                  f"pseudo-labels (clustering + morphology) takes {100 * t.get('instance_pseudo_share', float('nan')):.1f}% "
                  f"of it ({100 * t.get('instance_pseudo_share_with_teacher', float('nan')):.1f}% with the teacher's "
                  f"instance forward pass); semantic pseudo-labels (multi-view teacher) "
                  f"{100 * t.get('semantic_pseudo_share', float('nan')):.1f}%", "",
                  "| part | s / iteration |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in per.items()]
        lines.append("")
    if curves:
        refs = {}
        main = by_cat.get(next(iter(by_cat), ""), {})
        if "oracle" in main:
            refs["oracle"] = main["oracle"]["PQ"]
        plot_curve(out_dir / "pq_curve.png", curves, refs)
        lines += ["## PQ over self-training iterations", "", "![PQ over iterations](pq_curve.png)", ""]
    if examples:
        paths = save_overlays(out_dir, examples, space)
        lines += ["## Examples", "", "input | ground truth | source-only | self-trained", ""]
        lines += [f"![{p.stem}]({p.name})" for p in paths]
        lines.append("")
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines))
    return path
