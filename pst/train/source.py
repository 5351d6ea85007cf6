"""Supervised training of the panoptic network: on the labelled source (source-only
model) or on labelled target data (the oracle).

:class:`SupervisedStage` supplies the step to the training loop
(:class:`pst.train.loop.TrainLoop`, detectron2-style): the network returns its outputs,
the loss terms form a dict, their sum is back-propagated. Poly learning rate with warm-up,
SGD with momentum, new layers at ``head_lr_mult`` times the rate (pst.models.param_groups).
Under torchrun the network is wrapped in DistributedDataParallel; BatchNorm statistics are
averaged after every step so that every process ends with the same weights.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from pst.train.data import StepSampler, build_dataset, load_batch, maybe_cache, step_generator
from pst.train.distributed import broadcast_module
from pst.train.loop import Stage, TrainLoop, diverged
from pst.train.model import build_panoptic_net
from pst.train.objectives import supervised_losses
from pst.train.runtime import Runtime, autocast_for

__all__ = ["train_supervised", "SupervisedStage"]

logger = logging.getLogger(__name__)


class SupervisedStage(Stage):
    """Supervised training on ``cfg.data.source`` ("source") or the labelled
    ``cfg.data.target`` ("oracle"), with the settings of ``cfg.source``."""

    log = logger

    def __init__(self, cfg, rt: Runtime, stage: str):
        super().__init__(stage, cfg, rt, cfg.source)
        self.warmup = cfg.source.warmup
        spec = cfg.data.source if stage == "source" else cfg.data.target
        if stage == "oracle" and not spec.has_labels:
            raise ValueError("oracle training needs a labelled target (data.target.has_labels is false)")
        self.dataset = maybe_cache(build_dataset(spec, cfg.space, cfg.data.size), cfg.data.cache, f"{stage} data")
        # hue jitter teaches the source model not to trust synthetic colours; the oracle learns the
        # target's own colours, which carry its labels (augment.hue)
        self.augment = cfg.augment if stage == "source" else dataclasses.replace(cfg.augment, hue=0.0)
        self.sampler = StepSampler(len(self.dataset), cfg.data.batch_size,
                                   seed=cfg.seed + (0 if stage == "source" else 7),
                                   rank=rt.dist.rank, world_size=rt.dist.world_size)
        torch.manual_seed(cfg.seed)
        self.net = build_panoptic_net(cfg).to(rt.device)
        broadcast_module(self.net)
        self.setup_optimizer()

    def step(self, step: int) -> dict[str, torch.Tensor]:
        cfg, rt, net = self.cfg, self.rt, self.net
        g = step_generator(cfg.seed, self.name, step, rt.dist.rank)
        batch = load_batch(self.dataset, self.sampler.indices(step), size=cfg.data.size, augment=self.augment,
                           generator=g)
        images = batch["image"].to(rt.device, non_blocking=True)
        sem = batch["semantic"].to(rt.device)
        inst = batch["instances"].to(rt.device)
        with autocast_for(rt.device, rt.amp):
            out = self.model(images)
        with diverged(self.name, step):
            losses = supervised_losses(out, sem, inst, net.groups, cfg.loss)
        self.optimize(losses, step)
        return losses

    def log_step(self, rec: dict, seconds_per_step: float) -> None:
        self.log.info("%s step %d/%d loss %.3f (sem %.3f) %.2fs/step", self.name, rec["step"], self.section.steps,
                      rec["loss"], rec["sem"], seconds_per_step)


def train_supervised(cfg, out_dir: str | Path, *, stage: str = "source", resume: bool = False,
                     max_steps: int | None = None, device: str | torch.device | None = None,
                     progress: bool = True,
                     on_finish=None) -> Path | None:
    """Train the panoptic network with labels; returns the final checkpoint
    ``<out_dir>/<stage>.pt`` (None when stopped early by ``max_steps``).

    Args:
        cfg: :class:`pst.config.Config`.
        stage: "source" (trains on ``cfg.data.source``) or "oracle" (``cfg.data.target``, labelled).
        resume: continue from ``<out_dir>/<stage>/last.pt`` if it exists; a finished
            stage (``<stage>.pt`` present) is then not retrained.
        max_steps: stop (with a resumable checkpoint) once this many steps are done.
        on_finish: optional ``callable(net, teacher)`` called on every process at the end
            (teacher None here), e.g. to compare the processes' weights under DDP.

    The process holds ``out_dir``'s lock while it runs (rank 0 under torchrun;
    :mod:`pst.train.runlock`): a second process training into that folder is refused.
    """
    if stage not in ("source", "oracle"):
        raise ValueError(f"stage should be 'source' or 'oracle', got {stage!r}")
    return TrainLoop(cfg, out_dir, stage, logger).train(
        lambda rt: SupervisedStage(cfg, rt, stage), require=SupervisedStage.require, resume=resume,
        max_steps=max_steps, device=device, progress=progress, on_finish=on_finish)
