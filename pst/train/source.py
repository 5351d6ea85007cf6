"""Supervised training of the panoptic network: on the labelled source (source-only
model) or on labelled target data (the oracle).

One loop, detectron2-style: the network returns its outputs, the loss terms form a
dict, their sum is back-propagated. Poly learning rate with warm-up, SGD with momentum,
new layers at ``head_lr_mult`` times the rate (pst.models.param_groups). Under torchrun
the network is wrapped in DistributedDataParallel; BatchNorm statistics are averaged
after every step so that every process ends with the same weights.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from pst.config import config_to_dict
from pst.io import remove_stale_temps
from pst.train.checkpoint import check_config, load_checkpoint, save_checkpoint
from pst.train.data import StepSampler, build_dataset, load_batch, maybe_cache, step_generator
from pst.train.distributed import barrier, broadcast_module, sync_buffers
from pst.train.evaluate import autocast_for
from pst.train.model import build_optimizer, build_panoptic_net, set_lr
from pst.train.objectives import supervised_losses
from pst.train.runlock import holds_run_folder
from pst.train.runtime import Runtime, make_scaler, setup_runtime

__all__ = ["train_supervised", "wrap_ddp", "optimizer_step"]

logger = logging.getLogger(__name__)


def wrap_ddp(net: torch.nn.Module, rt: Runtime):
    """``net`` in DistributedDataParallel when more than one process runs, else itself."""
    if rt.dist.world_size <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    import inspect

    # buffers are averaged after every step (sync_buffers), not broadcast before each forward
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(net, device_ids=[rt.device] if rt.device.type == "cuda" else None, **sync)


def optimizer_step(loss: torch.Tensor, optimizer, scaler, net, *, grad_clip: float = 0.0) -> None:
    """Backward, optional global gradient-norm clipping, step; then average BN buffers
    over processes."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
    sync_buffers(net)


@contextlib.contextmanager
def _diverged(stage: str, step: int):
    """Turn the losses' "NaN or infinity" input errors into one that says what to do."""
    try:
        yield
    except ValueError as exc:
        if "NaN" in str(exc) or "inf" in str(exc):
            raise ValueError(f"{stage} step {step}: the network diverged ({exc}); lower {stage}.lr "
                             f"or set {'selftrain' if stage == 'selftrain' else 'source'}.grad_clip") from exc
        raise


def _check_finite(losses: dict, step: int) -> None:
    bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
    if bad:
        raise FloatingPointError(f"step {step}: non-finite loss terms {bad}")


@holds_run_folder("out_dir")
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
    out_dir = Path(out_dir)
    final = out_dir / f"{stage}.pt"
    last = out_dir / stage / "last.pt"
    if resume and final.is_file():  # kept as it is, if it fits the config
        check_config(load_checkpoint(final), cfg, final, stage=stage)
        logger.info("%s: finished already (%s)", stage, final)
        return final
    rt = setup_runtime(cfg, device)
    state = None
    if resume and last.is_file():
        state = load_checkpoint(last, map_location=rt.device, require=("config", "model", "optimizer", "step"))
        check_config(state, cfg, last, stage=stage)
    if rt.is_main:  # temporaries of writes that a kill interrupted
        remove_stale_temps(out_dir, recursive=False)
        remove_stale_temps(out_dir / stage)
    scfg = cfg.source
    spec = cfg.data.source if stage == "source" else cfg.data.target
    if stage == "oracle" and not spec.has_labels:
        raise ValueError("oracle training needs a labelled target (data.target.has_labels is false)")
    dataset = maybe_cache(build_dataset(spec, cfg.space, cfg.data.size), cfg.data.cache, f"{stage} data")
    sampler = StepSampler(len(dataset), cfg.data.batch_size, seed=cfg.seed + (0 if stage == "source" else 7),
                          rank=rt.dist.rank, world_size=rt.dist.world_size)

    torch.manual_seed(cfg.seed)
    net = build_panoptic_net(cfg).to(rt.device)
    broadcast_module(net)
    optimizer = build_optimizer(net, scfg)
    scaler = make_scaler(rt)
    start, history = 0, []
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, history = int(state["step"]), list(state.get("extra", {}).get("history", []))
        logger.info("%s: resuming at step %d from %s", stage, start, last)
    model = wrap_ddp(net, rt)
    total = scfg.steps

    def save(path: Path, step: int) -> None:
        if rt.is_main:
            save_checkpoint(path, {"stage": stage, "config": config_to_dict(cfg), "step": step,
                                   "total_steps": total, "model": net.state_dict(),
                                   "teacher": None, "optimizer": optimizer.state_dict(),
                                   "scaler": scaler.state_dict() if scaler is not None else None,
                                   "extra": {"history": history}})
        barrier()

    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, desc=stage, disable=not (progress and rt.is_main),
               mininterval=5.0, leave=False)
    t0, t_last = time.perf_counter(), time.perf_counter()
    net.train()
    step = start
    while step < total:
        if max_steps is not None and step >= max_steps:
            save(last, step)
            bar.close()
            logger.info("%s: stopped at step %d (max_steps)", stage, step)
            return None
        set_lr(optimizer, step, total, power=scfg.poly_power, warmup=scfg.warmup)
        g = step_generator(cfg.seed, stage, step, rt.dist.rank)
        batch = load_batch(dataset, sampler.indices(step), size=cfg.data.size, augment=cfg.augment, generator=g)
        images = batch["image"].to(rt.device, non_blocking=True)
        sem = batch["semantic"].to(rt.device)
        inst = batch["instances"].to(rt.device)
        with autocast_for(rt.device, rt.amp):
            out = model(images)
        with _diverged(stage, step):
            losses = supervised_losses(out, sem, inst, net.groups, cfg.loss)
        _check_finite(losses, step)
        loss = sum(losses.values())
        optimizer_step(loss, optimizer, scaler, net, grad_clip=scfg.grad_clip)
        step += 1
        bar.update(1)
        if step % scfg.log_every == 0 or step == total:
            rec = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            dt = (time.perf_counter() - t_last) / scfg.log_every
            t_last = time.perf_counter()
            logger.info("%s step %d/%d loss %.3f (sem %.3f) %.2fs/step", stage, step, total, rec["loss"],
                        rec["sem"], dt)
        if step % scfg.checkpoint_every == 0 and step < total:
            save(last, step)
    bar.close()
    save(final, step)
    if on_finish is not None:
        on_finish(net, None)
    logger.info("%s: done, %d steps in %.0fs -> %s", stage, total - start, time.perf_counter() - t0, final)
    return final
