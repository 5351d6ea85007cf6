"""``pst demo``: the whole pipeline on one config (the toy scenes by default).

1. source training (semantic + instance models) -> ``source.pt``;
2. oracle training on the labelled target -> ``oracle.pt`` (when ``cfg.oracle``);
3. self-training from the source model -> ``selftrain.pt``;
4. evaluation of the three on the held-out target scenes (``data.target_val``) for
   every category mode of ``cfg.categories``, and of the baseline without embeddings
   (rows ``<model>_cc``: the connected components of the same predicted thing masks);
5. ``metrics.json`` and ``report.md`` (tables, PQ and pseudo-label quality curves, overlays).

Every stage is resumable (``resume=True`` skips finished stages and continues an
interrupted one from its last checkpoint).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from pathlib import Path

import torch

from pst.config import config_to_dict
from pst.io import write_json
from pst.train.checkpoint import load_checkpoint, net_from_checkpoint
from pst.train.data import build_dataset, maybe_cache
from pst.train.evaluate import evaluate_net
from pst.train.loop import stage_checkpoints
from pst.train.report import gap_closed, write_report
from pst.train.runlock import holds_run_folder, join_parent_hold
from pst.train.runtime import setup_runtime
from pst.train.selftrain import self_train
from pst.train.source import train_supervised

__all__ = ["run_demo", "METRIC_KEYS", "STAGES", "ROWS", "GAP_KEYS", "CC_TARGET"]

logger = logging.getLogger(__name__)

METRIC_KEYS = ("PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff", "mIoU", "AP", "AP50")
STAGES = ("source_only", "self_trained", "oracle")
# every model again with connected-component instances (no embeddings): the baseline rows
ROWS = STAGES + tuple(f"{s}_cc" for s in STAGES)
GAP_KEYS = ("PQ", "PQ_things", "mIoU", "AP")
CC_TARGET = 0.10  # issue 10: embedding instances should beat CC of the same masks by >= 10 PQ_things points


def _row(r: dict) -> dict:
    return {**{k: r[k] for k in METRIC_KEYS if k in r}, "per_class": r["per_class"]}


_default_threads = torch.get_num_threads()


def _side_by_side_threads(cfg, device) -> int:
    """Threads per process when the source and oracle stages can train at once, else 0: a
    CPU run without torchrun, on a machine with cores for both (``cfg.threads`` each, or
    half the cores when it is 0)."""
    import os

    from pst.train.distributed import resolve_device

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 0
    if resolve_device(device or cfg.device, 0).type != "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cfg.threads or cores // 2
    return threads if threads >= 1 and 2 * threads <= cores else 0


def _stage_main(cfg_dict: dict, out_dir: str, stage: str, resume: bool, device, threads: int, level: int) -> None:
    """Entry point of a supervised stage's own process (spawned: nothing inherited)."""
    from pst.config import config_from_dict

    logging.basicConfig(level=level, format=f"%(asctime)s {stage} %(levelname)s %(name)s: %(message)s")
    cfg = dataclasses.replace(config_from_dict(cfg_dict), threads=threads)
    with join_parent_hold(out_dir):  # the demo process holds out_dir for its whole run
        train_supervised(cfg, out_dir, stage=stage, resume=resume, progress=False, device=device)


def _start_stage_process(cfg, out_dir: Path, stage: str, *, resume: bool, device, threads: int):
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=_stage_main, name=f"pst-{stage}",
        args=(config_to_dict(cfg), str(out_dir), stage, resume, device, threads, logging.getLogger().getEffectiveLevel()))
    proc.start()
    return proc


@holds_run_folder("out_dir")
def run_demo(cfg, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
             device: str | None = None) -> dict:
    """Run the demo pipeline into ``out_dir``; returns the metrics dict (also in
    ``out_dir/metrics.json``): ``source_only``, ``self_trained``, ``oracle`` (fractions,
    primary category mode), ``gap_closed``, ``by_category``, ``timing``, ``wall_seconds``
    (this process's time: with ``resume``, ``resumed_stages`` lists the stages an earlier run
    finished, ``reused``, or started, ``continued``).

    The demo process holds ``out_dir``'s lock throughout; the oracle stage's side-by-side
    process works under it (:func:`pst.train.runlock.join_parent_hold`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    stage_s: dict[str, float] = {}
    ckpts: dict[str, Path] = {}

    oracle = cfg.oracle and cfg.data.target.has_labels
    if cfg.oracle and not oracle:
        logger.warning("no oracle: the target has no labels (data.target.has_labels is false)")
    # what an earlier run left: then wall_seconds times this process only, not the whole demo
    stages = ("source", "oracle", "selftrain") if oracle else ("source", "selftrain")
    resumed: dict[str, list[str]] = {"reused": [], "continued": []}
    for name in stages if resume else ():
        final, last = stage_checkpoints(out_dir, name)
        if final.is_file():
            resumed["reused"].append(name)
        elif last.is_file():
            resumed["continued"].append(name)
    side = _side_by_side_threads(cfg, device) if oracle else 0
    t = time.perf_counter()
    if side:
        # The two supervised stages are independent: on a CPU they run at once, one process
        # each with half the threads (tiny networks scale poorly past one thread, and two
        # processes never wait at each other's OpenMP barriers).
        logger.info("source and oracle training side by side, %d thread(s) each", side)
        child = _start_stage_process(cfg, out_dir, "oracle", resume=resume, device=device, threads=side)
        src_cfg = dataclasses.replace(cfg, threads=side)
        try:
            ckpts["source_only"] = train_supervised(src_cfg, out_dir, stage="source", resume=resume,
                                                    progress=progress, device=device)
            stage_s["source"] = time.perf_counter() - t
        except BaseException:
            child.terminate()  # no oracle without its source model; --resume continues both
            raise
        finally:
            child.join()
        stage_s["oracle"] = time.perf_counter() - t
        if child.exitcode != 0:
            raise RuntimeError(f"oracle training failed in its process (exit code {child.exitcode}); "
                               f"its log is above; rerun with --resume to continue")
        ckpts["oracle"] = out_dir / "oracle.pt"
        torch.set_num_threads(cfg.threads or _default_threads)
    else:
        ckpts["source_only"] = train_supervised(cfg, out_dir, stage="source", resume=resume, progress=progress,
                                                device=device)
        stage_s["source"] = time.perf_counter() - t
        if oracle:
            t = time.perf_counter()
            ckpts["oracle"] = train_supervised(cfg, out_dir, stage="oracle", resume=resume, progress=progress,
                                               device=device)
            stage_s["oracle"] = time.perf_counter() - t
    t = time.perf_counter()
    ckpts["self_trained"] = self_train(cfg, out_dir, init=ckpts["source_only"], resume=resume, progress=progress,
                                       device=device)
    stage_s["selftrain"] = time.perf_counter() - t

    t = time.perf_counter()
    rt = setup_runtime(cfg, device)
    val = maybe_cache(build_dataset(cfg.data.target_val, cfg.space, cfg.data.size), cfg.data.cache, "target val")
    by_cat: dict[str, dict] = {m: {} for m in cfg.categories}
    examples: dict[str, list] = {}
    st_state = None
    ap_min_region = None
    for stage, path in ckpts.items():
        state = load_checkpoint(path, map_location=rt.device)
        if stage == "self_trained":
            st_state = state
        net, _ = net_from_checkpoint(state, device=rt.device)
        for i, mode in enumerate(cfg.categories):
            keep = cfg.eval.n_overlays if (i == 0 and stage != "oracle") else 0
            r = evaluate_net(net, val, cfg, device=rt.device, mode=mode, amp=rt.amp, keep=keep, progress=progress)
            if keep:
                examples[stage] = r.pop("examples")
            by_cat[mode][stage] = _row(r)
            ap_min_region = r["ap_min_region_size"]
            logger.info("%s (%s): PQ %.3f PQ_things %.3f mIoU %.3f AP %.3f", stage, mode, r["PQ"], r["PQ_things"],
                        r["mIoU"], r["AP"])
        # the same predicted thing masks, split by connected components: no instance model runs,
        # so one evaluation serves every category mode
        r = evaluate_net(net, val, cfg, device=rt.device, amp=rt.amp, progress=progress, instances="cc")
        for mode in cfg.categories:
            by_cat[mode][f"{stage}_cc"] = _row(r)
        logger.info("%s_cc: PQ %.3f PQ_things %.3f AP %.3f", stage, r["PQ"], r["PQ_things"], r["AP"])
    stage_s["evaluate"] = time.perf_counter() - t
    for mode, res in by_cat.items():
        if "oracle" in res:
            res["gap_closed"] = {k: gap_closed(res["source_only"][k], res["self_trained"][k], res["oracle"][k])
                                 for k in GAP_KEYS}
        res["cc_gain"] = {s: res[s]["PQ_things"] - res[f"{s}_cc"]["PQ_things"] for s in STAGES if s in res}
    extra = st_state.get("extra", {}) if st_state else {}
    curve = extra.get("curve", [])
    curves = {m.upper(): [c for c in curve if c.get("mode", cfg.categories[0]) == m] for m in cfg.categories}
    primary = by_cat[cfg.categories[0]]
    metrics = {
        "config": cfg.name,
        "seed": cfg.seed,
        "primary_category": cfg.categories[0],
        **{k: primary[k] for k in ("source_only", "self_trained", "oracle", "gap_closed") if k in primary},
        "by_category": by_cat,
        "cc_baseline": {
            "instances": "connected components (8-connectivity) of each thing class's predicted mask, "
                         "fused as the embedding instances are; mode-independent",
            **{f"{s}_cc": primary[f"{s}_cc"] for s in STAGES if s in primary},
            "PQ_things_gain": primary["cc_gain"],
            "target_gain": CC_TARGET,
            "meets_target": {s: bool(v >= CC_TARGET) for s, v in primary["cc_gain"].items()},
        },
        "ap_min_region_size": ap_min_region,
        "curve": curve,
        "pseudo_quality": extra.get("pseudo_quality", []),
        "timing": extra.get("timing", {}),
        "n_val_images": len(val),
        "stage_seconds": stage_s,
        "resumed_stages": resumed,
        "checkpoints": {k: str(v) for k, v in ckpts.items()},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                        "device": str(rt.device)},
    }
    metrics["wall_seconds"] = time.perf_counter() - t0
    report = write_report(out_dir, metrics, space=cfg.space, curves=curves, examples=examples)
    metrics["report"] = str(report)
    metrics["wall_seconds"] = time.perf_counter() - t0
    metrics["cpu_seconds"] = time.process_time() - c0  # all threads of this process
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "config.json", config_to_dict(cfg))
    logger.info("demo done in %.0fs: metrics %s, report %s", metrics["wall_seconds"], out_dir / "metrics.json", report)
    return metrics
