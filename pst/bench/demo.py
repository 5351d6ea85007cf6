"""``pst bench demo``: the demo once per seed, and the spread of its metrics.

    pst bench demo --seeds 0 1 2 [--config toy] [--out runs/demo_seeds] [--device cpu] [KEY=VALUE ...]

**What a seed varies.** Only the training seed (``seed=N``: weight initialisation, the
order of the batches, augmentations, pseudo-label views and cluster anchors). The scenes
stay those of the config (``data.source.seed``, ``data.target.seed``,
``data.target_val.seed``), so every seed trains on the same data and is evaluated on the
same held-out target set: the spread is that of training, not of the data. Override a
data seed like any other key to change it for every run.

Each seed runs into ``OUT/seed_N/`` (the demo's ``metrics.json``, ``report.md`` and
checkpoints). A seed whose ``metrics.json`` exists is not run again, and an interrupted
one continues from its checkpoints, so a killed run resumes where it stopped. Then
``OUT/demo_seeds.json`` and ``OUT/demo_seeds.md`` (written atomically): mean, min, max and
standard deviation over the seeds of every metric (:data:`pst.train.demo.METRIC_KEYS`) of
every row (``source_only``, ``self_trained``, ``oracle`` and their connected-component
baselines ``*_cc``) of every category mode, of every ``gap_closed`` entry, of the
embedding-over-CC gain in PQ_things, and of the last pseudo-label quality record; the
per-seed values; wall times, commit, torch version, CPU and threads.

Overrides follow the seeds (``--seeds 0 1 source.steps=100``) or come after ``--``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from pst.bench._common import machine
from pst.io import write_json, write_text

log = logging.getLogger(__name__)

__all__ = ["run_seeds", "summarize", "main"]

SEED_VARIES = ("the training seed only (config key seed); the data seeds data.source.seed, data.target.seed and "
               "data.target_val.seed stay fixed, so every seed is evaluated on the same held-out target scenes")


def _stats(values: Sequence[Any]) -> dict[str, Any]:
    """mean, min, max, std (sample; 0 for one value) and n of the values that are numbers."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not vals:
        return {"mean": None, "min": None, "max": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def _seed_values(m: dict) -> dict[str, Any]:
    """The scalar metrics of one demo run: rows, gap_closed, cc_gain and the last
    pseudo-label quality record, per category mode."""
    from pst.train.demo import METRIC_KEYS, ROWS
    from pst.train.pseudo_quality import QUALITY_KEYS

    rows, gaps, gains, pq = {}, {}, {}, {}
    for mode, res in m.get("by_category", {}).items():
        rows[mode] = {r: {k: res[r].get(k) for k in METRIC_KEYS} for r in ROWS if r in res}
        gaps[mode] = dict(res.get("gap_closed", {}))
        gains[mode] = dict(res.get("cc_gain", {}))
        last = [q for q in m.get("pseudo_quality", []) if q.get("mode") == mode]
        if last:
            pq[mode] = {k: last[-1].get(k) for k in QUALITY_KEYS}
    return {"rows": rows, "gap_closed": gaps, "cc_gain": gains, "pseudo_quality_last": pq,
            "wall_seconds": m.get("wall_seconds"), "resumed_stages": m.get("resumed_stages") or {},
            "n_val_images": m.get("n_val_images"),
            "ap_min_region_size": m.get("ap_min_region_size")}


def summarize(per_seed: dict[int, dict], *, config: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The ``demo_seeds.json`` content from each seed's metrics.json (seed -> dict)."""
    import torch

    from pst.train.report import was_resumed

    vals = {str(s): _seed_values(m) for s, m in per_seed.items()}
    runs = list(vals.values())

    def over(section: str) -> dict:
        """mode -> name -> stats over the seeds (rows: mode -> row -> metric -> stats)."""
        out: dict = {}
        for v in runs:
            for mode, entries in v[section].items():
                for name, value in entries.items():
                    out.setdefault(mode, {})[name] = dict.fromkeys(value) if isinstance(value, dict) else None
        for mode, entries in out.items():
            for name, keys in entries.items():
                got = [v[section].get(mode, {}).get(name) for v in runs]
                entries[name] = _stats(got) if keys is None else \
                    {k: _stats([(g or {}).get(k) for g in got]) for k in keys}
        return out

    first = next(iter(per_seed.values()), {})
    return {
        "config": config,
        "overrides": list(overrides),
        "seeds": [int(s) for s in per_seed],
        "seed_varies": SEED_VARIES,
        "categories": list(first.get("by_category", {})),
        "primary_category": first.get("primary_category"),
        "n_val_images": first.get("n_val_images"),
        "ap_min_region_size": first.get("ap_min_region_size"),
        "metrics": over("rows"),
        "gap_closed": over("gap_closed"),
        "cc_gain": over("cc_gain"),
        "pseudo_quality_last": over("pseudo_quality_last"),
        # the mean and spread cover whole runs only: a resumed seed timed only what it had left
        "wall_seconds": {"per_seed": {s: v["wall_seconds"] for s, v in vals.items()},
                         "resumed": {s: v["resumed_stages"] for s, v in vals.items() if was_resumed(v["resumed_stages"])},
                         **_stats([v["wall_seconds"] for v in runs if not was_resumed(v["resumed_stages"])])},
        "per_seed": vals,
        "environment": machine(threads=torch.get_num_threads(), machine=platform.machine()),
    }


def _cell(st: dict | None) -> str:
    if not st or st.get("mean") is None:
        return "n/a"
    return f"{100 * st['mean']:.1f} ({100 * st['min']:.1f}–{100 * st['max']:.1f})"


def _wall_line(w: dict) -> str:
    """The wall-time sentence: the mean over whole runs, then every seed (a resumed seed says
    which stages an earlier run did)."""
    from pst.train.report import resumed_note

    resumed = w.get("resumed", {})
    per = [f"seed {k}: {v:.0f} s{resumed_note(resumed.get(k))}" for k, v in w["per_seed"].items() if v]
    if w.get("mean") is None:
        head = "no seed ran whole in one process, so no wall time per seed"
    else:
        head = f"wall time per seed {w['mean']:.0f} s on average over {w['n']} whole run(s)"
    return f"{head} ({'; '.join(per)})."


def to_markdown(s: dict) -> str:
    """``demo_seeds.md``: mean (min–max) tables per category mode, then per-seed values."""
    from pst.train.demo import METRIC_KEYS

    env = s["environment"]
    lines = [f"# pst demo over seeds: {s['config']}", "",
             f"Seeds {', '.join(map(str, s['seeds']))}; varied: {s['seed_varies']}. "
             f"Held-out target images: {s['n_val_images']}; AP minimum region: {s['ap_min_region_size']} px. "
             "Values in %, as mean (min–max) over the seeds.", "",
             f"Commit {env['commit'] or '?'}, torch {env['torch']}, {env['cpu']}, {env['threads']} threads; "
             f"{_wall_line(s['wall_seconds'])}", ""]
    if s["overrides"]:
        lines += ["Overrides: `" + " ".join(s["overrides"]) + "`", ""]
    for mode, rows in s["metrics"].items():
        lines += [f"## Category mode {mode.upper()}", "", "| row | " + " | ".join(METRIC_KEYS) + " |",
                  "|---|" + "---|" * len(METRIC_KEYS)]
        lines += [f"| {row} | " + " | ".join(_cell(st.get(k)) for k in METRIC_KEYS) + " |" for row, st in rows.items()]
        extra = [(f"gap closed, {k}", st, False) for k, st in s["gap_closed"].get(mode, {}).items()]
        extra += [(f"PQ_things gain of embeddings over CC, {k}", st, True)
                  for k, st in s["cc_gain"].get(mode, {}).items()]
        extra += [(f"last pseudo-labels, {k}", st, True) for k, st in s["pseudo_quality_last"].get(mode, {}).items()]
        if extra:
            lines += ["", "| quantity | mean | min | max | n |", "|---|---|---|---|---|"]
            for name, st, pct in extra:
                f = (lambda v: "n/a" if v is None else f"{100 * v:.1f}") if pct else \
                    (lambda v: "n/a" if v is None else f"{v:.2f}")
                lines.append(f"| {name}{' (points)' if pct and 'gain' in name else ''} | {f(st['mean'])} | "
                             f"{f(st['min'])} | {f(st['max'])} | {st['n']} |")
        lines += ["", f"Per seed ({mode.upper()}):", "", "| seed | row | " + " | ".join(METRIC_KEYS) + " |",
                  "|---|---|" + "---|" * len(METRIC_KEYS)]
        for seed, v in s["per_seed"].items():
            for row, vals in v["rows"].get(mode, {}).items():
                lines.append(f"| {seed} | {row} | " + " | ".join(
                    "n/a" if vals.get(k) is None or math.isnan(vals[k]) else f"{100 * vals[k]:.1f}"
                    for k in METRIC_KEYS) + " |")
        lines.append("")
    return "\n".join(lines)


def run_seeds(config: str, seeds: Sequence[int], out: str | Path, *, overrides: Sequence[str] = (),
              device: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Run (or reuse) the demo for every seed into ``out/seed_N`` and write
    ``out/demo_seeds.json`` and ``out/demo_seeds.md``; returns the summary."""
    from pst.config import load_config
    from pst.train.demo import run_demo

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds should name distinct seeds, got {seeds}")
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        raise ValueError("pass the seeds with --seeds, not as a seed=N override")
    load_config(config, [*overrides, f"seed={seeds[0]}"])  # a bad key fails before any training
    out = Path(out)
    per_seed: dict[int, dict] = {}
    t0 = time.perf_counter()
    for seed in seeds:
        run_dir = out / f"seed_{seed}"
        done = run_dir / "metrics.json"
        if done.is_file():
            log.info("seed %d: finished already (%s)", seed, done)
            per_seed[seed] = json.loads(done.read_text())
            continue
        log.info("seed %d: running the demo into %s", seed, run_dir)
        cfg = load_config(config, [*overrides, f"seed={seed}"])
        per_seed[seed] = run_demo(cfg, run_dir, resume=True, progress=progress, device=device)
    summary = summarize(per_seed, config=config, overrides=overrides)
    write_json(out / "demo_seeds.json", summary)
    write_text(out / "demo_seeds.md", to_markdown(summary))
    log.info("%d seeds in %.0f s: %s", len(seeds), time.perf_counter() - t0, out / "demo_seeds.md")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pst bench demo", description=__doc__.split("\n\n")[0],
                                epilog="Overrides (KEY=VALUE) may follow the seeds.")
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"], help="training seeds (default: 0 1 2)")
    p.add_argument("--config", default="toy", help="config name or path (default: toy; toy_ccm, toy_icm, ...)")
    p.add_argument("--out", default="runs/demo_seeds", help="output folder (default: runs/demo_seeds)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's device)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every seed")
    args = p.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # --seeds takes the integers; anything after them is an override
    seeds, rest = [], []
    for item in args.seeds:
        if not rest and item.lstrip("-").isdigit():
            seeds.append(int(item))
        else:
            rest.append(item)
    if not seeds:
        p.error(f"--seeds should start with integers, got {args.seeds}")
    summary = run_seeds(args.config, seeds, args.out, overrides=[*rest, *args.overrides], device=args.device,
                        progress=args.progress)
    primary = summary["primary_category"]
    log.info("PQ of the self-trained model (%s): %s", primary,
             _cell(summary["metrics"].get(primary, {}).get("self_trained", {}).get("PQ")))
    return 0
