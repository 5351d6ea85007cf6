"""Self-training on the unlabelled target with momentum (EMA) teachers.

Each iteration (the method of arXiv 2311.10648; SAC, Araslanov & Roth 2021, for the
semantic branch):

1. a labelled source batch (augmented) and an unlabelled target batch (scale-crop and
   flip only: the teacher sees clean images);
2. semantic pseudo-labels from the teacher, fused over ``n_views`` zoomed/flipped
   views, class-wise thresholds (:func:`pst.train.pseudo.semantic_pseudo_labels`); with
   ``selftrain.thing_objectness`` > 0, thing pixels whose teacher objectness is below it
   are ignored (:func:`pst.train.pseudo.gate_things`);
3. instance pseudo-labels for every instance model, made *every iteration* by
   clustering the teacher's embeddings inside the pseudo-label's thing masks
   (:func:`pst.cluster.cluster_instances`) and cleaning them (:func:`pst.morph.refine`);
4. the student sees both batches (target with photometric noise) in one forward pass:
   supervised source terms + focal, confidence-weighted target cross-entropy (class
   weights ``(1 - chi_c)^3``, x ``target_weight``) + discriminative / objectness terms on
   the instance pseudo-labels + anchor embedding consistency with the teacher;
5. every ``ema_every`` steps ``teacher = m * teacher + (1 - m) * student``.

The wall time of each part is measured; ``timing["instance_pseudo_share"]`` is the
share of an iteration spent making instance pseudo-labels (clustering + refinement).

When the target has labels (``data.target.has_labels``), they never reach a loss: only
:class:`pst.train.pseudo_quality.PseudoLabelQuality` reads them, to score the
pseudo-labels of the batches between evaluation steps (``extra["pseudo_quality"]``).
"""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path

import torch

from pst.config import config_to_dict
from pst.io import remove_stale_temps
from pst.labels import IGNORE
from pst.train.checkpoint import check_config, load_checkpoint, save_checkpoint
from pst.train.data import StepSampler, build_dataset, load_batch, maybe_cache, photometric, step_generator
from pst.train.distributed import barrier
from pst.train.ema import ema_update, make_teacher, recalibrate_bn
from pst.train.evaluate import autocast_for, evaluate_net
from pst.train.model import build_optimizer, build_panoptic_net, set_lr
from pst.train.objectives import group_mask, instance_terms, supervised_losses
from pst.train.pseudo import ClassPrior, gate_things, instance_pseudo_labels, semantic_pseudo_labels
from pst.train.pseudo_quality import PseudoLabelQuality, mode_instance_maps
from pst.train.runlock import holds_run_folder
from pst.train.runtime import make_scaler, setup_runtime
from pst.train.source import _check_finite, _diverged, optimizer_step, wrap_ddp

__all__ = ["self_train", "TIMING_KEYS"]

logger = logging.getLogger(__name__)

TIMING_KEYS = ("data", "semantic_pseudo", "teacher_instance", "instance_pseudo", "student", "ema", "iteration")


def _split(out: dict, n: int) -> tuple[dict, dict]:
    """Split batched outputs at index n (source first, target after)."""
    a = {"logits": out["logits"][:n], "instance": {k: {kk: vv[:n] for kk, vv in v.items()}
                                                   for k, v in out["instance"].items()}}
    b = {"logits": out["logits"][n:], "instance": {k: {kk: vv[n:] for kk, vv in v.items()}
                                                   for k, v in out["instance"].items()}}
    return a, b


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _recalibrate_on_target(net, teacher, target, cfg, device: torch.device) -> int:
    """BatchNorm statistics of student and teacher from the first ``bn_recalibrate`` target
    images, resized, un-augmented (:func:`pst.train.ema.recalibrate_bn`). The same images on
    every process, so DDP replicas stay identical. Returns the number of images."""
    n = min(cfg.selftrain.bn_recalibrate, len(target))
    bs = cfg.eval.batch_size
    g = step_generator(cfg.seed, "bn-recalibrate", 0)

    def batches():
        for s in range(0, n, bs):
            b = load_batch(target, list(range(s, min(n, s + bs))), size=cfg.data.size, augment=cfg.augment,
                           generator=g, spatial=False, colour=False)
            yield b["image"].to(device)

    recalibrate_bn([net, teacher], batches())
    return n


@holds_run_folder("out_dir")
def self_train(cfg, out_dir: str | Path, *, init: str | Path, resume: bool = False, max_steps: int | None = None,
               device: str | torch.device | None = None, progress: bool = True,
               on_finish=None) -> Path | None:
    """Self-train from the source checkpoint ``init``; returns ``<out_dir>/selftrain.pt``
    (None when stopped early by ``max_steps``, with ``<out_dir>/selftrain/last.pt`` to resume).

    The checkpoint's ``extra`` holds ``history`` (losses), ``curve`` (target-val PQ /
    mIoU / AP per category mode every ``eval_every`` steps, step 0 = the source model)
    and ``timing``. ``on_finish(net, teacher)`` is called on every process at the end.
    The process holds ``out_dir``'s lock while it runs (:mod:`pst.train.runlock`).
    """
    from pst.cluster import sample_anchors
    from pst.losses import embedding_consistency, focal_ce

    out_dir = Path(out_dir)
    final = out_dir / "selftrain.pt"
    last = out_dir / "selftrain" / "last.pt"
    if resume and final.is_file():  # kept as it is, if it fits the config
        check_config(load_checkpoint(final), cfg, final, stage="selftrain")
        logger.info("selftrain: finished already (%s)", final)
        return final
    rt = setup_runtime(cfg, device)
    init_state = load_checkpoint(init, map_location=rt.device)
    check_config(init_state, cfg, init, init=True)
    state = None
    if resume and last.is_file():
        state = load_checkpoint(last, map_location=rt.device,
                                require=("config", "model", "teacher", "optimizer", "step", "extra"))
        check_config(state, cfg, last, stage="selftrain")
    if rt.is_main:  # temporaries of writes that a kill interrupted
        remove_stale_temps(out_dir, recursive=False)
        remove_stale_temps(last.parent)
    st = cfg.selftrain
    space = cfg.space
    source = maybe_cache(build_dataset(cfg.data.source, space, cfg.data.size), cfg.data.cache, "source data")
    target = maybe_cache(build_dataset(cfg.data.target, space, cfg.data.size), cfg.data.cache, "target data")
    val = None
    if st.eval_every and cfg.data.target_val.has_labels and rt.is_main:
        val = maybe_cache(build_dataset(cfg.data.target_val, space, cfg.data.size), cfg.data.cache, "target val")
    bs = cfg.data.batch_size
    s_sampler = StepSampler(len(source), bs, seed=cfg.seed + 11, rank=rt.dist.rank, world_size=rt.dist.world_size)
    t_sampler = StepSampler(len(target), bs, seed=cfg.seed + 13, rank=rt.dist.rank, world_size=rt.dist.world_size)

    net = build_panoptic_net(cfg).to(rt.device)
    net.load_state_dict(init_state["model"])
    teacher = make_teacher(net)
    prior = ClassPrior(space.num_classes, momentum=st.prior_momentum)
    optimizer = build_optimizer(net, st)
    scaler = make_scaler(rt)
    start, history, curve, pseudo_quality = 0, [], [], []
    # pseudo-labels against the target's hidden labels, accumulated between evaluation steps
    quality = PseudoLabelQuality(space, cfg.categories) if (
        st.eval_every and cfg.data.target.has_labels and rt.is_main) else None
    timing = {k: 0.0 for k in TIMING_KEYS}
    timed_steps = 0
    if state is not None:
        net.load_state_dict(state["model"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        extra = state.get("extra", {})
        prior.load_state_dict(extra["prior"])
        history, curve = list(extra.get("history", [])), list(extra.get("curve", []))
        pseudo_quality = list(extra.get("pseudo_quality", []))
        timing = dict(extra.get("timing_sum", timing))
        timed_steps = int(extra.get("timed_steps", 0))
        start = int(state["step"])
        logger.info("selftrain: resuming at step %d from %s", start, last)
    model = wrap_ddp(net, rt)
    total = st.steps
    icfg = st.instances

    def summary() -> dict:
        n = max(timed_steps, 1)
        per = {k: v / n for k, v in timing.items()}
        it = max(per["iteration"], 1e-12)
        return {"steps_timed": timed_steps, "seconds_per_iteration": per,
                "instance_pseudo_share": per["instance_pseudo"] / it,
                "instance_pseudo_share_with_teacher": (per["instance_pseudo"] + per["teacher_instance"]) / it,
                "semantic_pseudo_share": per["semantic_pseudo"] / it}

    def save(path: Path, step: int) -> None:
        if rt.is_main:
            save_checkpoint(path, {
                "stage": "selftrain", "config": config_to_dict(cfg), "step": step, "total_steps": total,
                "model": net.state_dict(), "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                "extra": {"prior": prior.state_dict(), "history": history, "curve": curve,
                          "pseudo_quality": pseudo_quality, "timing_sum": timing,
                          "timed_steps": timed_steps, "timing": summary(), "init": str(init)}})
        barrier()

    def record_quality(step: int) -> None:
        if quality is None or not quality.batches:
            return
        for r in quality.compute():
            pseudo_quality.append({"step": step, **r})
            logger.info("selftrain step %d (%s): pseudo-labels of %d target images vs their hidden labels: "
                        "mIoU %s kept %s PQ_things %s precision %s recall %s", step, r["mode"], r["images"],
                        *(("n/a" if r[k] is None else f"{r[k]:.3f}")
                          for k in ("mIoU", "kept", "PQ_things", "precision", "recall")))
        quality.reset()

    def run_eval(step: int) -> None:
        if val is None:
            return
        for mode in cfg.categories:
            r = evaluate_net(net, val, cfg, device=rt.device, amp=rt.amp, mode=mode)
            curve.append({"step": step, "mode": mode, **{k: r[k] for k in ("PQ", "PQ_dagger", "mIoU", "AP")}})
            logger.info("selftrain step %d (%s): target-val PQ %.3f mIoU %.3f AP %.3f", step, mode, r["PQ"],
                        r["mIoU"], r["AP"])
        net.train()

    if start == 0 and st.eval_every and rt.is_main:
        run_eval(0)
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc="selftrain", disable=not (progress and rt.is_main),
               mininterval=5.0, leave=False)
    t0 = time.perf_counter()
    net.train()
    step = start
    while step < total:
        if max_steps is not None and step >= max_steps:
            save(last, step)
            bar.close()
            logger.info("selftrain: stopped at step %d (max_steps)", step)
            return None
        tic = time.perf_counter()
        set_lr(optimizer, step, total, power=st.poly_power)
        g = step_generator(cfg.seed, "selftrain", step, rt.dist.rank)
        src = load_batch(source, s_sampler.indices(step), size=cfg.data.size, augment=cfg.augment, generator=g)
        tgt = load_batch(target, t_sampler.indices(step), size=cfg.data.size, augment=cfg.augment, generator=g,
                         colour=False)
        s_img = src["image"].to(rt.device)
        s_sem, s_inst = src["semantic"].to(rt.device), src["instances"].to(rt.device)
        t_img = tgt["image"].to(rt.device)  # target labels are never used here
        t_data = time.perf_counter()

        # --- teacher: semantic pseudo-labels (multi-view, class-wise thresholds)
        with autocast_for(rt.device, rt.amp):
            sp = semantic_pseudo_labels(teacher.semantic, t_img, prior, n_views=st.n_views, zoom=st.view_zoom,
                                        flip=st.view_flip, generator=g, minimum=st.threshold_min,
                                        scale=st.threshold_scale, beta=st.prior_beta)
            _sync(rt.device)
            t_sem = time.perf_counter()
            with torch.no_grad():
                tout = teacher(t_img, semantic=False)["instance"]
        _sync(rt.device)
        t_tinst = time.perf_counter()
        # --- instance pseudo-labels, every iteration
        cseed = zlib.crc32(repr((cfg.seed, step, rt.dist.rank)).encode()) & 0x7FFFFFFF
        t_emb, t_obj, pl_inst = {}, {}, {}
        for key in net.groups:
            t_emb[key] = tout[key]["embedding"].float()
            t_obj[key] = torch.sigmoid(tout[key]["objectness"].float())
        if st.thing_objectness:  # thing labels where the instance branch agrees
            sp = sp._replace(labels=gate_things(sp.labels, t_obj, net.groups, st.thing_objectness))
        for key, (_, ids) in net.groups.items():
            pl_inst[key] = instance_pseudo_labels(t_emb[key], t_obj[key], sp.labels, ids, icfg, seed=cseed)
        _sync(rt.device)
        t_inst = time.perf_counter()

        # --- student on source + noisy target, one forward pass
        t_noisy = photometric(t_img, jitter=cfg.augment.color_jitter, blur_p=cfg.augment.blur_p,
                              greyscale_p=cfg.augment.greyscale_p, generator=g)
        with autocast_for(rt.device, rt.amp):
            out = model(torch.cat([s_img, t_noisy]))
        out_s, out_t = _split(out, s_img.shape[0])
        with _diverged("selftrain", step):
            losses = {k: v * st.source_weight for k, v in
                      supervised_losses(out_s, s_sem, s_inst, net.groups, cfg.loss, prefix="src_").items()}
            losses["tgt_sem"] = st.target_weight * focal_ce(
                out_t["logits"].float(), sp.labels, class_prior=prior.chi, focal_power=cfg.loss.focal_power,
                pixel_weight=sp.confidence if st.confidence_weight else None, ignore_index=IGNORE)
            valid = sp.labels != IGNORE
            for key, (_, ids) in net.groups.items():
                terms = instance_terms(out_t["instance"][key], sp.labels, pl_inst[key], ids, cfg.loss)
                for name, v in terms.items():
                    losses[f"tgt_{name}/{key}"] = st.instance_target_weight * v
                if st.consistency_weight > 0:
                    gm = group_mask(sp.labels, ids)
                    anchors = sample_anchors(t_obj[key], gm, st.consistency_anchors, seed=cseed)
                    losses[f"tgt_cons/{key}"] = st.consistency_weight * embedding_consistency(
                        out_t["instance"][key]["embedding"].float(), t_emb[key], anchors,
                        delta_v=cfg.loss.delta_v, valid=valid)
        _check_finite(losses, step)
        loss = sum(losses.values())
        optimizer_step(loss, optimizer, scaler, net, grad_clip=st.grad_clip)
        _sync(rt.device)
        t_student = time.perf_counter()
        step += 1
        if step % st.ema_every == 0:
            ema_update(teacher, net, st.ema_momentum)
        t_end = time.perf_counter()
        for k, v in (("data", t_data - tic), ("semantic_pseudo", t_sem - t_data),
                     ("teacher_instance", t_tinst - t_sem), ("instance_pseudo", t_inst - t_tinst),
                     ("student", t_student - t_inst), ("ema", t_end - t_student), ("iteration", t_end - tic)):
            timing[k] += v
        timed_steps += 1
        bar.update(1)
        if quality is not None and "semantic" in tgt:  # the hidden labels: scored, never trained on
            quality.update(sp.labels, mode_instance_maps(net.groups, pl_inst, t_obj, sp.confidence, cfg.categories),
                           tgt["semantic"], tgt["instances"])
            if step % st.eval_every == 0 or step == total:
                record_quality(step)
        if step % st.log_every == 0 or step == total:
            kept = float(valid.float().mean())
            n_inst = sum(int(v.amax(dim=(1, 2)).sum()) for v in pl_inst.values()) / max(1, t_img.shape[0])
            rec = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                   "pseudo_kept": kept, "pseudo_instances_per_image": n_inst,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            sm = summary()
            logger.info("selftrain step %d/%d loss %.3f tgt_sem %.3f kept %.2f inst/img %.1f %.2fs/it "
                        "(instance pseudo-labels %.0f%%)", step, total, rec["loss"], rec["tgt_sem"], kept, n_inst,
                        sm["seconds_per_iteration"]["iteration"], 100 * sm["instance_pseudo_share"])
        if st.eval_every and step % st.eval_every == 0 and rt.is_main:
            run_eval(step)
        if step % st.checkpoint_every == 0 and step < total:
            save(last, step)
    bar.close()
    if st.bn_recalibrate:
        recalibrated = _recalibrate_on_target(net, teacher, target, cfg, rt.device)
        logger.info("selftrain: BatchNorm statistics recomputed on %d target images", recalibrated)
        if st.eval_every and rt.is_main:
            curve[:] = [c for c in curve if c["step"] != step]  # the last point: after recalibration
    if st.eval_every and rt.is_main and (not curve or curve[-1]["step"] != step):
        run_eval(step)
    save(final, step)
    if on_finish is not None:
        on_finish(net, teacher)
    logger.info("selftrain: done in %.0fs; instance pseudo-labels take %.0f%% of an iteration -> %s",
                time.perf_counter() - t0, 100 * summary()["instance_pseudo_share"], final)
    return final
