"""The demo report: metrics tables (models, connected-component baselines, thing classes),
the PQ-over-iterations and pseudo-label-quality plots and panoptic overlays, as Markdown
(``report.md``) next to the PNGs it shows. Every file goes through pst.io."""

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

__all__ = ["gap_closed", "instance_colors", "colorize_panoptic", "save_overlays", "plot_curve",
           "plot_pseudo_quality", "resumed_note", "was_resumed", "write_report"]

logger = logging.getLogger(__name__)

STAGES = ("source_only", "self_trained", "oracle")
STAGE_TITLES = {"source_only": "source-only", "self_trained": "self-trained", "oracle": "oracle (target labels)",
                **{f"{s}_cc": f"{t}, CC instances" for s, t in (("source_only", "source-only"),
                                                                 ("self_trained", "self-trained"),
                                                                 ("oracle", "oracle"))}}


def gap_closed(source: float, selftrained: float, oracle: float) -> float | None:
    """``(self - source) / (oracle - source)``; None when the oracle is not better."""
    d = oracle - source
    if not (d > 1e-9) or any(math.isnan(v) for v in (source, selftrained, oracle)):
        return None
    return (selftrained - source) / d


def instance_colors(n: int) -> torch.Tensor:
    """[n, 3] float RGB in [0, 255], bright and distinct: hues step by the golden ratio
    (consecutive ones far apart on the colour wheel), saturation and value alternate."""
    i = torch.arange(n, dtype=torch.float64)
    h = (0.05 + 0.6180339887 * i) % 1.0
    s = torch.where(i % 2 == 0, 0.9, 0.55)
    v = torch.where(i % 3 == 1, 0.8, 1.0)
    k = (torch.tensor([5.0, 3.0, 1.0], dtype=torch.float64)[None] + 6.0 * h[:, None]) % 6.0
    f = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return 255.0 * (v[:, None] - v[:, None] * s[:, None] * f)


def colorize_panoptic(pan: torch.Tensor, space: LabelSpace) -> np.ndarray:
    """[H, W] panoptic ids -> [H, W, 3] uint8: stuff (and thing pixels without an
    instance) in class colours; each thing instance in its own colour
    (:func:`instance_colors`, in the order of the panoptic ids) with a dark outline one
    pixel wide inside its border, so that two touching instances of one class stay apart;
    void black."""
    pan = pan.cpu().long()
    lut = torch.from_numpy(space.palette()).float()
    cls = torch.div(pan, LABEL_DIVISOR, rounding_mode="floor").clamp(0, 255)
    rgb = lut[cls]
    has = (pan >= 0) & (pan % LABEL_DIVISOR > 0)
    if bool(has.any()):
        ids, rank = torch.unique(pan[has], return_inverse=True)
        rgb[has] = instance_colors(len(ids)).float()[rank]
    edge = torch.zeros_like(has)
    edge[:, 1:] |= pan[:, 1:] != pan[:, :-1]
    edge[:, :-1] |= pan[:, :-1] != pan[:, 1:]
    edge[1:, :] |= pan[1:, :] != pan[:-1, :]
    edge[:-1, :] |= pan[:-1, :] != pan[1:, :]
    rgb[edge & has] = 20.0
    rgb[pan < 0] = 0.0
    return rgb.clamp(0, 255).round().byte().numpy()


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


def _plot_steps(path: Path, series: dict[str, list[dict]], key_of: dict[str, str], ylabel: str,
                refs: dict[str, float] | None = None, styles: dict[str, str] | None = None,
                ylim: tuple[float, float] | None = None) -> Path:
    """One line per ``series`` entry (label -> records with ``step`` and the value under
    ``key_of[label]``, a fraction; None is a gap) in %, over self-training iterations,
    with horizontal reference lines (``refs``: label -> value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, recs in series.items():
        if recs:
            ys = [float("nan") if r.get(key_of[name]) is None else 100 * r[key_of[name]] for r in recs]
            ax.plot([r["step"] for r in recs], ys, (styles or {}).get(name, "-"), marker="o", ms=3, label=name)
    for label, v in (refs or {}).items():
        ax.axhline(100 * v, ls="--", lw=1, color="grey")
        ax.text(ax.get_xlim()[0], 100 * v, f" {label}", va="bottom", fontsize=8, color="dimgrey")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("self-training iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path


def plot_curve(path: Path, curves: dict[str, list[dict]], refs: dict[str, float] | None = None,
               key: str = "PQ") -> Path:
    """PQ (``key``) over self-training iterations, one line per category mode, with
    horizontal reference lines (``refs``: label -> value, e.g. the oracle)."""
    return _plot_steps(path, curves, {name: key for name in curves}, f"{key} (%) on target val", refs)


PSEUDO_SERIES = {"semantic mIoU (kept pixels)": "mIoU", "pixels kept": "kept", "instance PQ_things": "PQ_things",
                 "instance precision": "precision", "instance recall": "recall",
                 "instance FP share (1 - precision)": "FP_share"}


def plot_pseudo_quality(path: Path, records: list[dict], mode: str) -> Path:
    """The quality of the training batches' pseudo-labels against their hidden labels
    (:mod:`pst.train.pseudo_quality`) over self-training iterations, for one category mode."""
    recs = [r for r in records if r.get("mode") == mode]
    styles = {"pixels kept": ":", "instance FP share (1 - precision)": "--"}
    return _plot_steps(path, {name: recs for name in PSEUDO_SERIES}, PSEUDO_SERIES,
                       f"pseudo-labels vs hidden labels (%), {mode.upper()}", styles=styles, ylim=(0, 100))


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{100 * v:.1f}"
    return str(v)


def was_resumed(resumed: dict | None) -> bool:
    """Whether a demo's ``resumed_stages`` names any stage an earlier run finished or started."""
    return bool(resumed and (resumed.get("reused") or resumed.get("continued")))


def resumed_note(resumed: dict | None) -> str:
    """``" (this process only: ...)"`` when an earlier run finished or started stages (the wall
    time then covers what was left), else ``""``."""
    if not was_resumed(resumed):
        return ""
    parts = []
    if resumed.get("reused"):
        parts.append(", ".join(resumed["reused"]) + " finished by an earlier run")
    if resumed.get("continued"):
        parts.append(", ".join(resumed["continued"]) + " continued from an earlier run's checkpoint")
    return f" (this process only: {'; '.join(parts)})"


def _class_table(res: dict, space: LabelSpace) -> list[str]:
    """Per thing class: PQ, SQ, RQ, counts, IoU and AP of each model (cells "source / self / oracle"),
    and PQ of the connected-component baselines."""
    stages = [s for s in STAGES if s in res and "per_class" in res[s]]
    if not stages:
        return []
    ccs = [f"{s}_cc" for s in stages if f"{s}_cc" in res and "per_class" in res[f"{s}_cc"]]
    names = " / ".join(STAGE_TITLES[s].split(" (")[0] for s in stages)
    cols = ["PQ", "SQ", "RQ", "TP / FP / FN", "IoU", "AP"] + (["PQ, CC instances"] if ccs else [])
    lines = [f"Cells: {names}.", "", "| class | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for c in space.thing_ids:
        name = space.classes[c]
        rows = [res[s]["per_class"].get(name, {}) for s in stages]
        cells = [" / ".join(_fmt(r.get(k)) for r in rows) for k in ("PQ", "SQ", "RQ")]
        cells.append(" · ".join("/".join(str(r.get(k, "?")) for k in ("TP", "FP", "FN")) for r in rows))
        cells += [" / ".join(_fmt(r.get(k)) for r in rows) for k in ("IoU", "AP")]
        if ccs:
            cells.append(" / ".join(_fmt(res[s]["per_class"].get(name, {}).get("PQ")) for s in ccs))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _pseudo_quality_lines(out_dir: Path, records: list[dict], mode: str) -> list[str]:
    recs = [r for r in records if r.get("mode") == mode]
    if not recs:
        return []
    plot_pseudo_quality(out_dir / "pseudo_quality.png", records, mode)
    first, last = recs[0], recs[-1]
    lines = ["Pseudo-label quality: the pseudo-labels of the self-training batches scored against the target's "
             "labels, which training never reads (accumulated over the batches between two evaluation steps; "
             "semantic mIoU over the pixels the thresholds keep; instance PQ_things, precision and recall at IoU "
             "0.5).", "",
             "| step | images | semantic mIoU | kept | PQ_things | precision | recall | FP share |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['images']} | " + " | ".join(_fmt(r.get(k)) for k in
              ("mIoU", "kept", "PQ_things", "precision", "recall", "FP_share")) + " |" for r in recs]
    a, b = first.get("FP_share"), last.get("FP_share")
    trend = "n/a" if a is None or b is None else ("rose" if b > a + 1e-9 else "did not rise")
    lines += ["", f"The false-positive share of the instance pseudo-labels (1 - precision) went from {_fmt(a)}% "
              f"(step {first['step']}) to {_fmt(b)}% (step {last['step']}): it {trend}. A rising false-positive "
              "share is the known failure signature of instance self-training: the student learns the teacher's "
              "spurious instances, which then reappear in the next pseudo-labels.", ""]
    return lines


def write_report(out_dir: str | Path, metrics: dict, *, space: LabelSpace, curves: dict[str, list[dict]],
                 examples: dict[str, list[dict]] | None = None) -> Path:
    """Write ``report.md`` (and its PNGs) into ``out_dir``; returns the report's path."""
    out_dir = Path(out_dir)
    lines = [f"# pst demo: {metrics.get('config', '')}", ""]
    lines += [f"Self-trained panoptic segmentation on the {space.name} label space. Models trained on the "
              "labelled source; self-trained on the unlabelled target; evaluated on held-out target scenes "
              f"({metrics.get('n_val_images', '?')} images). Values in %.", ""]
    if metrics.get("ap_min_region_size") is not None:
        lines += [f"AP counts ground-truth objects of at least {metrics['ap_min_region_size']} pixels "
                  "(Cityscapes: 100 at 1024x2048; scaled to the evaluation size with a floor of "
                  f"{space.ap_min_region_floor} pixels where the label space says so).", ""]
    cols = ["PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff", "mIoU", "AP", "AP50"]
    by_cat = metrics.get("by_category", {})
    for mode, res in by_cat.items():
        lines += [f"## Category mode {mode.upper()}", "", "| model | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for stage in STAGE_TITLES:
            if stage in res:
                lines.append(f"| {STAGE_TITLES[stage]} | " + " | ".join(_fmt(res[stage].get(c)) for c in cols) + " |")
        gc = res.get("gap_closed", {})
        lines += ["", "Gap closed by self-training, (self - source) / (oracle - source): "
                  + ", ".join(f"{k} {('n/a' if v is None else f'{v:.2f}')}" for k, v in gc.items()), ""]
        gain = res.get("cc_gain", {})
        if gain:
            lines += ["Instances from embeddings against connected components (CC) of the same predicted thing "
                      "masks, PQ_things difference in points (issue 10's target: at least +10): "
                      + ", ".join(f"{STAGE_TITLES[s].split(' (')[0]} {100 * v:+.1f}" for s, v in gain.items()), ""]
        table = _class_table(res, space)
        if table:
            lines += [f"### Thing classes ({mode.upper()})", ""] + table
    t = metrics.get("timing", {})
    if t:
        per = t.get("seconds_per_iteration", {})
        lines += ["## Time", "",
                  f"- wall time of the demo: {metrics.get('wall_seconds', float('nan')):.0f} s "
                  f"(stages: " + ", ".join(f"{k} {v:.0f} s" for k, v in metrics.get("stage_seconds", {}).items()) + ")"
                  + resumed_note(metrics.get("resumed_stages")),
                  f"- one self-training iteration: {per.get('iteration', float('nan')):.2f} s; making the instance "
                  f"pseudo-labels (clustering + morphology) takes {100 * t.get('instance_pseudo_share', float('nan')):.1f}% "
                  f"of it ({100 * t.get('instance_pseudo_share_with_teacher', float('nan')):.1f}% with the teacher's "
                  f"instance forward pass); semantic pseudo-labels (multi-view teacher) "
                  f"{100 * t.get('semantic_pseudo_share', float('nan')):.1f}%", "",
                  "| part | s / iteration |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in per.items()]
        lines.append("")
    pq_lines = _pseudo_quality_lines(out_dir, metrics.get("pseudo_quality", []),
                                     metrics.get("primary_category", next(iter(by_cat), "base")))
    if curves:
        refs = {}
        main = by_cat.get(next(iter(by_cat), ""), {})
        if "oracle" in main:
            refs["oracle"] = main["oracle"]["PQ"]
        plot_curve(out_dir / "pq_curve.png", curves, refs)
        lines += ["## PQ and pseudo-label quality over self-training iterations", "",
                  "![PQ over iterations](pq_curve.png)"
                  + (" ![pseudo-label quality over iterations](pseudo_quality.png)" if pq_lines else ""), ""]
        lines += pq_lines
    elif pq_lines:
        lines += ["## Pseudo-label quality over self-training iterations", "",
                  "![pseudo-label quality over iterations](pseudo_quality.png)", ""] + pq_lines
    if examples:
        paths = save_overlays(out_dir, examples, space)
        lines += ["## Examples", "", "input | ground truth | source-only | self-trained (each thing instance in its "
                  "own colour, outlined)", ""]
        lines += [f"![{p.stem}]({p.name})" for p in paths]
        lines.append("")
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines))
    return path
