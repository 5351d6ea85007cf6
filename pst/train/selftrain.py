"""Self-training on the unlabelled target with momentum (EMA) teachers.

Each iteration (the method of arXiv 2311.10648; SAC, Araslanov & Roth 2021, for the
semantic branch):

1. a labelled source batch (augmented) and an unlabelled target batch (scale-crop and
   flip only: the teacher sees clean images);
2. semantic pseudo-labels from the teacher, fused over ``n_views`` zoomed/flipped
   views, class-wise thresholds (:func:`pst.train.pseudo.semantic_pseudo_labels`); with
   ``selftrain.thing_objectness`` > 0, thing pixels whose teacher objectness is below it
   are ignored (:func:`pst.train.pseudo.gate_things`); with ``selftrain.mix``, classes of each
   source image are pasted on its target image with their true labels and instances
   (:func:`pst.train.mixing.cross_domain_mix`, DACS), and the student's target terms read the mix;
3. instance pseudo-labels for every instance model, made *every iteration* by
   clustering the teacher's embeddings inside the pseudo-label's thing masks
   (:func:`pst.cluster.cluster_instances`) and cleaning them (:func:`pst.morph.refine`);
4. the student sees both batches (target with photometric noise) in one forward pass:
   supervised source terms + focal, confidence-weighted target cross-entropy (class
   weights ``(1 - chi_c)^3``, x ``target_weight``) + discriminative / objectness terms on
   the instance pseudo-labels + anchor embedding consistency with the teacher;
5. every ``ema_every`` steps ``teacher = m * teacher + (1 - m) * student``.

:class:`SelfTrainStage` supplies this iteration as the step of the training loop
(:class:`pst.train.loop.TrainLoop`). The wall time of each part is measured
(:class:`pst.train.loop.Stopwatch`); ``timing["instance_pseudo_share"]`` is the share of an
iteration spent making instance pseudo-labels (clustering + refinement).

When the target has labels (``data.target.has_labels``), they never reach a loss: only
:class:`pst.train.pseudo_quality.PseudoLabelQuality` reads them, to score the
pseudo-labels of the batches between evaluation steps (``extra["pseudo_quality"]``).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import torch

from pst.labels import IGNORE
from pst.train.checkpoint import check_config, load_checkpoint
from pst.train.data import StepSampler, build_dataset, load_batch, maybe_cache, photometric, step_generator
from pst.train.ema import ema_update, make_teacher, recalibrate_bn
from pst.train.evaluate import evaluate_net
from pst.train.loop import Stage, TrainLoop, diverged
from pst.train.mixing import cross_domain_mix
from pst.train.model import build_panoptic_net
from pst.train.objectives import group_mask, instance_terms, supervised_losses
from pst.train.pseudo import (ClassPrior, SemanticPseudoSettings, gate_things, instance_pseudo_labels,
                              semantic_pseudo_labels)
from pst.train.pseudo_quality import PseudoLabelQuality, mode_instance_maps
from pst.train.runtime import Runtime, autocast_for

__all__ = ["self_train", "SelfTrainStage", "TIMING_KEYS"]

logger = logging.getLogger(__name__)

TIMING_KEYS = ("data", "semantic_pseudo", "teacher_instance", "instance_pseudo", "student", "ema", "iteration")


def _split(out: dict, n: int) -> tuple[dict, dict]:
    """Split batched outputs at index n (source first, target after)."""
    a = {"logits": out["logits"][:n], "instance": {k: {kk: vv[:n] for kk, vv in v.items()}
                                                   for k, v in out["instance"].items()}}
    b = {"logits": out["logits"][n:], "instance": {k: {kk: vv[n:] for kk, vv in v.items()}
                                                   for k, v in out["instance"].items()}}
    return a, b


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


class SelfTrainStage(Stage):
    """Self-training from the source checkpoint ``init`` with the settings of ``cfg.selftrain``
    (the iteration of the module docstring is :meth:`step`)."""

    require = ("config", "model", "teacher", "optimizer", "step", "extra")
    log = logger

    def __init__(self, cfg, rt: Runtime, init: str | Path):
        super().__init__("selftrain", cfg, rt, cfg.selftrain, timing_keys=TIMING_KEYS)
        init_state = load_checkpoint(init, map_location=rt.device)
        check_config(init_state, cfg, init, init=True)
        st = self.st = cfg.selftrain
        self.init = init
        self.eval_every = st.eval_every
        space = cfg.space
        self.source = maybe_cache(build_dataset(cfg.data.source, space, cfg.data.size), cfg.data.cache, "source data")
        self.target = maybe_cache(build_dataset(cfg.data.target, space, cfg.data.size), cfg.data.cache, "target data")
        self.val = None
        if st.eval_every and cfg.data.target_val.has_labels and rt.is_main:
            self.val = maybe_cache(build_dataset(cfg.data.target_val, space, cfg.data.size), cfg.data.cache,
                                   "target val")
        bs, rank, world = cfg.data.batch_size, rt.dist.rank, rt.dist.world_size
        self.s_sampler = StepSampler(len(self.source), bs, seed=cfg.seed + 11, rank=rank, world_size=world)
        self.t_sampler = StepSampler(len(self.target), bs, seed=cfg.seed + 13, rank=rank, world_size=world)

        self.net = build_panoptic_net(cfg).to(rt.device)
        self.net.load_state_dict(init_state["model"])
        self.teacher = make_teacher(self.net)
        self.prior = ClassPrior(space.num_classes, momentum=st.prior_momentum)
        # the source labels' class frequencies, which the teacher's are aligned to (selftrain.align)
        self.source_prior = ClassPrior(space.num_classes, momentum=st.prior_momentum) if st.align == "source" else None
        self.semantic_settings = SemanticPseudoSettings.from_config(st)
        self.thing_ids = [c for _, ids in self.net.groups.values() for c in ids]
        self.setup_optimizer()
        self.curve: list[dict] = []
        self.pseudo_quality: list[dict] = []
        # pseudo-labels against the target's hidden labels, accumulated between evaluation steps
        self.quality = PseudoLabelQuality(space, cfg.categories) if (
            st.eval_every and cfg.data.target.has_labels and rt.is_main) else None
        self._last = None  # what the records and the quality scores read of the last step

    def step(self, step: int) -> dict[str, torch.Tensor]:
        from pst.cluster import sample_anchors
        from pst.losses import embedding_consistency, focal_ce

        cfg, st, rt, net, teacher, prior, w = self.cfg, self.st, self.rt, self.net, self.teacher, self.prior, self.watch
        with w("data"):
            g = step_generator(cfg.seed, "selftrain", step, rt.dist.rank)
            src = load_batch(self.source, self.s_sampler.indices(step), size=cfg.data.size, augment=cfg.augment,
                             generator=g)
            tgt = load_batch(self.target, self.t_sampler.indices(step), size=cfg.data.size, augment=cfg.augment,
                             generator=g, colour=False)
            s_img = src["image"].to(rt.device)
            s_sem, s_inst = src["semantic"].to(rt.device), src["instances"].to(rt.device)
            t_img = tgt["image"].to(rt.device)  # target labels are never used here

        # --- teacher: semantic pseudo-labels (multi-view, class-wise thresholds)
        with autocast_for(rt.device, rt.amp):
            with w("semantic_pseudo"):
                align_to = None if self.source_prior is None else self.source_prior.update_labels(s_sem)
                sp = semantic_pseudo_labels(teacher.semantic, t_img, prior, self.semantic_settings, generator=g,
                                            align_to=align_to)
            with w("teacher_instance"), torch.no_grad():
                tout = teacher(t_img, semantic=False)["instance"]
        # --- instance pseudo-labels, every iteration
        with w("instance_pseudo"):
            cseed = zlib.crc32(repr((cfg.seed, step, rt.dist.rank)).encode()) & 0x7FFFFFFF
            t_emb, t_obj, pl_inst = {}, {}, {}
            for key in net.groups:
                t_emb[key] = tout[key]["embedding"].float()
                t_obj[key] = torch.sigmoid(tout[key]["objectness"].float())
            if st.thing_objectness:  # thing labels where the instance branch agrees
                sp = sp._replace(labels=gate_things(sp.labels, t_obj, net.groups, st.thing_objectness))
            for key, (_, ids) in net.groups.items():
                pl_inst[key] = instance_pseudo_labels(t_emb[key], t_obj[key], sp.labels, ids, st.instances,
                                                      seed=cseed)

        # --- student on source + noisy target, one forward pass
        with w("student"):
            t_noisy = photometric(t_img, jitter=cfg.augment.color_jitter, blur_p=cfg.augment.blur_p,
                                  greyscale_p=cfg.augment.greyscale_p, hue=cfg.augment.hue, generator=g)
            t_lab, t_conf, t_ids, own = sp.labels, sp.confidence, pl_inst, None
            if st.mix != "off":  # source classes pasted on the target with their true labels (DACS)
                mixed = cross_domain_mix(s_img, s_sem, s_inst, t_noisy, t_lab, t_conf, t_ids, policy=st.mix,
                                         thing_ids=self.thing_ids, generator=g)
                t_noisy, t_lab, t_conf, t_ids, own = (mixed.image, mixed.semantic, mixed.confidence,
                                                      mixed.instances, ~mixed.pasted)
            with autocast_for(rt.device, rt.amp):
                out = self.model(torch.cat([s_img, t_noisy]))
            out_s, out_t = _split(out, s_img.shape[0])
            with diverged("selftrain", step):
                losses = {k: v * st.source_weight for k, v in
                          supervised_losses(out_s, s_sem, s_inst, net.groups, cfg.loss, prefix="src_").items()}
                losses["tgt_sem"] = st.target_weight * focal_ce(
                    out_t["logits"].float(), t_lab, class_prior=prior.chi, focal_power=cfg.loss.focal_power,
                    pixel_weight=t_conf if st.confidence_weight else None, ignore_index=IGNORE)
                valid = sp.labels != IGNORE
                for key, (_, ids) in net.groups.items():
                    terms = instance_terms(out_t["instance"][key], t_lab, t_ids[key], ids, cfg.loss)
                    for name, v in terms.items():
                        losses[f"tgt_{name}/{key}"] = st.instance_target_weight * v
                    if st.consistency_weight > 0:  # the teacher saw the target only: anchors off pasted pixels
                        gm = group_mask(sp.labels, ids)
                        anchors = sample_anchors(t_obj[key], gm if own is None else gm & own,
                                                 st.consistency_anchors, seed=cseed)
                        losses[f"tgt_cons/{key}"] = st.consistency_weight * embedding_consistency(
                            out_t["instance"][key]["embedding"].float(), t_emb[key], anchors,
                            delta_v=cfg.loss.delta_v, valid=valid if own is None else valid & own)
            self.optimize(losses, step)
        with w("ema"):
            if (step + 1) % st.ema_every == 0:
                ema_update(teacher, net, st.ema_momentum)
        self._last = (tgt, sp, pl_inst, t_obj, valid, t_img.shape[0])
        return losses

    def after_step(self, step: int) -> None:
        tgt, sp, pl_inst, t_obj, _, _ = self._last
        if self.quality is not None and "semantic" in tgt:  # the hidden labels: scored, never trained on
            self.quality.update(sp.labels, mode_instance_maps(self.net.groups, pl_inst, t_obj, sp.confidence,
                                                              self.cfg.categories),
                                tgt["semantic"], tgt["instances"])
            if step % self.st.eval_every == 0 or step == self.st.steps:
                self._record_quality(step)

    def record(self) -> dict:
        _, _, pl_inst, _, valid, n_images = self._last
        kept = float(valid.float().mean())
        n_inst = sum(int(v.amax(dim=(1, 2)).sum()) for v in pl_inst.values()) / max(1, n_images)
        return {"pseudo_kept": kept, "pseudo_instances_per_image": n_inst}

    def log_step(self, rec: dict, seconds_per_step: float) -> None:
        sm = self.summary()
        self.log.info("selftrain step %d/%d loss %.3f tgt_sem %.3f kept %.2f inst/img %.1f %.2fs/it "
                      "(instance pseudo-labels %.0f%%)", rec["step"], self.st.steps, rec["loss"], rec["tgt_sem"],
                      rec["pseudo_kept"], rec["pseudo_instances_per_image"],
                      sm["seconds_per_iteration"]["iteration"], 100 * sm["instance_pseudo_share"])

    def summary(self) -> dict:
        """Seconds per iteration part by part, and the shares of the pseudo-labels."""
        per = self.watch.means()
        it = max(per["iteration"], 1e-12)
        return {"steps_timed": self.watch.steps, "seconds_per_iteration": per,
                "instance_pseudo_share": per["instance_pseudo"] / it,
                "instance_pseudo_share_with_teacher": (per["instance_pseudo"] + per["teacher_instance"]) / it,
                "semantic_pseudo_share": per["semantic_pseudo"] / it}

    def extra(self) -> dict:
        return {"prior": self.prior.state_dict(),
                "source_prior": None if self.source_prior is None else self.source_prior.state_dict(),
                "history": self.history, "curve": self.curve,
                "pseudo_quality": self.pseudo_quality, "timing_sum": self.watch.sums,
                "timed_steps": self.watch.steps, "timing": self.summary(), "init": str(self.init)}

    def load_extra(self, extra: dict) -> None:
        self.prior.load_state_dict(extra["prior"])
        if self.source_prior is not None and extra.get("source_prior") is not None:
            self.source_prior.load_state_dict(extra["source_prior"])
        self.curve = list(extra.get("curve", []))
        self.pseudo_quality = list(extra.get("pseudo_quality", []))
        self.watch.sums = dict(extra.get("timing_sum", self.watch.sums))
        self.watch.steps = int(extra.get("timed_steps", 0))

    def _record_quality(self, step: int) -> None:
        quality = self.quality
        if quality is None or not quality.batches:
            return
        for r in quality.compute():
            self.pseudo_quality.append({"step": step, **r})
            self.log.info("selftrain step %d (%s): pseudo-labels of %d target images vs their hidden labels: "
                          "mIoU %s kept %s PQ_things %s precision %s recall %s", step, r["mode"], r["images"],
                          *(("n/a" if r[k] is None else f"{r[k]:.3f}")
                            for k in ("mIoU", "kept", "PQ_things", "precision", "recall")))
        quality.reset()

    def evaluate(self, step: int) -> None:
        """Target-val PQ / mIoU / AP per category mode (``extra["curve"]``)."""
        if self.val is None:
            return
        for mode in self.cfg.categories:
            r = evaluate_net(self.net, self.val, self.cfg, device=self.rt.device, amp=self.rt.amp, mode=mode)
            self.curve.append({"step": step, "mode": mode, **{k: r[k] for k in ("PQ", "PQ_dagger", "mIoU", "AP")}})
            self.log.info("selftrain step %d (%s): target-val PQ %.3f mIoU %.3f AP %.3f", step, mode, r["PQ"],
                          r["mIoU"], r["AP"])
        self.net.train()

    def finish(self, step: int) -> None:
        """BatchNorm recalibration (``bn_recalibrate``), then the last point of the curve."""
        st, is_main = self.st, self.rt.is_main
        if st.bn_recalibrate:
            recalibrated = _recalibrate_on_target(self.net, self.teacher, self.target, self.cfg, self.rt.device)
            self.log.info("selftrain: BatchNorm statistics recomputed on %d target images", recalibrated)
            if st.eval_every and is_main:
                self.curve[:] = [c for c in self.curve if c["step"] != step]  # the last point: after recalibration
        if st.eval_every and is_main and (not self.curve or self.curve[-1]["step"] != step):
            self.evaluate(step)

    def log_done(self, steps: int, seconds: float, final: Path) -> None:
        self.log.info("selftrain: done in %.0fs; instance pseudo-labels take %.0f%% of an iteration -> %s",
                      seconds, 100 * self.summary()["instance_pseudo_share"], final)


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
    return TrainLoop(cfg, out_dir, "selftrain", logger).train(
        lambda rt: SelfTrainStage(cfg, rt, init), require=SelfTrainStage.require, resume=resume,
        max_steps=max_steps, device=device, progress=progress, on_finish=on_finish)
