"""The training loop that every stage (source, oracle, self-training) runs in.

As in detectron2's ``SimpleTrainer``, the loop is generic and a stage supplies the step:
:class:`Stage` builds its data, networks and optimiser and computes one iteration in
:meth:`Stage.step`, which returns its loss terms; :class:`TrainLoop` does the rest:

* the run folder's lock (:func:`pst.train.runlock.hold_run_folder`) for the whole run;
* resume: a finished stage (``<out>/<stage>.pt``) is kept when it fits the config, else the
  loop continues ``<out>/<stage>/last.pt`` (weights, teacher, optimiser, scaler, history and
  what the stage adds) after checking its config; temporaries of interrupted writes go;
* the learning-rate schedule, the tqdm bar, ``max_steps`` (stop with a resumable checkpoint),
  the history record and log line every ``log_every`` steps, the evaluation hook every
  ``eval_every`` steps, checkpoints every ``checkpoint_every`` steps and at the end (written
  atomically by :func:`pst.train.checkpoint.save_checkpoint`, by rank 0 only);
* timing: :class:`Stopwatch` times every iteration; a stage times its parts with it.

The loop logs through the stage's module logger, so its lines read as the stage's own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from pst.config import config_to_dict
from pst.io import remove_stale_temps
from pst.train.checkpoint import check_config, load_checkpoint, save_checkpoint
from pst.train.distributed import barrier
from pst.train.model import build_optimizer, set_lr
from pst.train.runlock import hold_run_folder
from pst.train.runtime import Runtime, make_scaler, optimizer_step, setup_runtime, wrap_ddp

__all__ = ["Stopwatch", "Stage", "TrainLoop", "check_finite", "diverged", "stage_checkpoints"]


@contextlib.contextmanager
def diverged(stage: str, step: int) -> Iterator[None]:
    """Turn the losses' "NaN or infinity" input errors into one that says what to do."""
    try:
        yield
    except ValueError as exc:
        if "NaN" in str(exc) or "inf" in str(exc):
            raise ValueError(f"{stage} step {step}: the network diverged ({exc}); lower {stage}.lr "
                             f"or set {'selftrain' if stage == 'selftrain' else 'source'}.grad_clip") from exc
        raise


def check_finite(losses: dict, step: int) -> None:
    """FloatingPointError naming the loss terms of ``step`` that are NaN or infinite."""
    bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
    if bad:
        raise FloatingPointError(f"step {step}: non-finite loss terms {bad}")


class Stopwatch:
    """Wall time of the named parts of a training iteration, summed over the timed iterations.

    ``with watch("data"): ...`` adds the block's time to ``"data"``; on a GPU it first waits
    for the kernels the block queued, so that they count where they were launched.
    ``with watch.iteration(): ...`` times a whole iteration under ``"iteration"`` and counts it.
    A block that raises adds nothing.
    """

    def __init__(self, keys=("iteration",), device: torch.device | None = None):
        self.sums = {k: 0.0 for k in keys}
        self.steps = 0
        self.device = device

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        tic = time.perf_counter()
        yield
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.sums[key] += time.perf_counter() - tic

    @contextlib.contextmanager
    def iteration(self) -> Iterator[None]:
        with self("iteration"):
            yield
        self.steps += 1

    def means(self) -> dict[str, float]:
        """Seconds per timed iteration, part by part."""
        n = max(self.steps, 1)
        return {k: v / n for k, v in self.sums.items()}


class Stage:
    """What a training stage supplies to :class:`TrainLoop`.

    A subclass builds its data and networks, sets ``net`` (and ``teacher`` when it has one)
    and calls :meth:`setup_optimizer`; it implements :meth:`step` and may override the hooks.

    Attributes:
        name: "source", "oracle" or "selftrain": the checkpoint names and the log prefix.
        section: the stage's config (``cfg.source`` / ``cfg.selftrain``): steps, logging and
            checkpoint frequency (:class:`pst.config.LoopConfig`), the optimiser
            (:class:`pst.config.OptimizerConfig`).
        model: ``net``, wrapped in DistributedDataParallel under torchrun (set by the loop
            after resuming); the forward passes of the step go through it.
        history: the records of the logged steps (checkpoint ``extra["history"]``).
        watch: the :class:`Stopwatch` of the iterations.
        eval_every: call :meth:`evaluate` every this many steps (0: never).
        warmup: linear learning-rate warm-up steps.
        require: the keys a resumable checkpoint of this stage must hold.
        log: the logger of the stage's module.
    """

    require: tuple[str, ...] = ("config", "model", "optimizer", "step")
    log = logging.getLogger(__name__)
    eval_every = 0
    warmup = 0

    def __init__(self, name: str, cfg, rt: Runtime, section, timing_keys=("iteration",)):
        self.name, self.cfg, self.rt, self.section = name, cfg, rt, section
        self.net: torch.nn.Module | None = None
        self.teacher: torch.nn.Module | None = None
        self.model = None
        self.optimizer = self.scaler = None
        self.history: list[dict] = []
        self.watch = Stopwatch(timing_keys, rt.device)

    def setup_optimizer(self) -> None:
        """The optimiser of ``section`` over ``net`` and the GradScaler of the runtime."""
        self.optimizer = build_optimizer(self.net, self.section)
        self.scaler = make_scaler(self.rt)

    def optimize(self, losses: dict, step: int) -> None:
        """Check that every loss term is finite, then backward and step their sum."""
        check_finite(losses, step)
        optimizer_step(sum(losses.values()), self.optimizer, self.scaler, self.net,
                       grad_clip=self.section.grad_clip)

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """Train one iteration (index ``step``, from 0) and return its loss terms."""
        raise NotImplementedError

    # ----------------------------------------------------------------- hooks (optional)

    def extra(self) -> dict:
        """The checkpoint's ``extra``: what the stage needs to resume, and its records."""
        return {"history": self.history}

    def load_extra(self, extra: dict) -> None:
        """Restore what :meth:`extra` saved (``history`` is restored by the loop)."""

    def record(self) -> dict:
        """Fields of the last step added to its history record (after the loss terms)."""
        return {}

    def log_step(self, rec: dict, seconds_per_step: float) -> None:
        """The log line of a logged step; ``seconds_per_step`` since the previous one."""

    def after_step(self, step: int) -> None:
        """Called after each step (``step`` = steps done), before its record and log line."""

    def evaluate(self, step: int) -> None:
        """Called on rank 0 at step 0 (unless resumed) and every ``eval_every`` steps."""

    def finish(self, step: int) -> None:
        """Called after the last step, before the final checkpoint is written."""

    def log_done(self, steps: int, seconds: float, final: Path) -> None:
        self.log.info("%s: done, %d steps in %.0fs -> %s", self.name, steps, seconds, final)


@contextlib.contextmanager
def _threads_restored() -> Iterator[None]:
    """torch's CPU thread count as it was before (a stage may set its own, ``<stage>.threads``)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def stage_checkpoints(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """A stage's checkpoints in its run folder: the finished one ``<out_dir>/<name>.pt`` and
    the resumable one ``<out_dir>/<name>/last.pt``."""
    out_dir = Path(out_dir)
    return out_dir / f"{name}.pt", out_dir / name / "last.pt"


class TrainLoop:
    """Runs a :class:`Stage` in the run folder ``out_dir`` (see the module docstring)."""

    def __init__(self, cfg, out_dir: str | Path, name: str, log: logging.Logger):
        self.cfg, self.name, self.log = cfg, name, log
        self.out_dir = Path(out_dir)
        self.final, self.last = stage_checkpoints(self.out_dir, name)

    def train(self, build: Callable[[Runtime], Stage], *, require: tuple[str, ...], resume: bool = False,
              max_steps: int | None = None, device: str | torch.device | None = None, progress: bool = True,
              on_finish=None) -> Path | None:
        """Train the stage that ``build(runtime)`` makes; returns ``<out_dir>/<name>.pt``, or
        None when stopped by ``max_steps`` (``<out_dir>/<name>/last.pt`` then resumes it).

        ``require``: the keys the stage's ``last.pt`` must hold to be resumed.
        ``on_finish(net, teacher)`` is called on every process at the end."""
        with hold_run_folder(self.out_dir), _threads_restored():
            if resume and self.final.is_file():  # kept as it is, if it fits the config
                check_config(load_checkpoint(self.final), self.cfg, self.final, stage=self.name)
                self.log.info("%s: finished already (%s)", self.name, self.final)
                return self.final
            loop_cfg = self.cfg.selftrain if self.name == "selftrain" else self.cfg.source
            rt = setup_runtime(self.cfg, device, threads=loop_cfg.threads)
            state = None
            if resume and self.last.is_file():
                state = load_checkpoint(self.last, map_location=rt.device, require=require)
                check_config(state, self.cfg, self.last, stage=self.name)
            if rt.is_main:  # temporaries of writes that a kill interrupted
                remove_stale_temps(self.out_dir, recursive=False)
                remove_stale_temps(self.last.parent)
            stage = build(rt)
            start = 0 if state is None else self._resume(stage, state)
            stage.model = wrap_ddp(stage.net, rt)
            return self._run(stage, start, max_steps=max_steps, progress=progress, on_finish=on_finish)

    def _resume(self, stage: Stage, state: dict) -> int:
        stage.net.load_state_dict(state["model"])
        if stage.teacher is not None:
            stage.teacher.load_state_dict(state["teacher"])
        stage.optimizer.load_state_dict(state["optimizer"])
        if stage.scaler is not None and state.get("scaler"):
            stage.scaler.load_state_dict(state["scaler"])
        extra = state.get("extra", {})
        stage.history = list(extra.get("history", []))
        stage.load_extra(extra)
        start = int(state["step"])
        self.log.info("%s: resuming at step %d from %s", self.name, start, self.last)
        return start

    def _save(self, stage: Stage, path: Path, step: int) -> None:
        if stage.rt.is_main:
            save_checkpoint(path, {
                "stage": self.name, "config": config_to_dict(self.cfg), "step": step,
                "total_steps": stage.section.steps, "model": stage.net.state_dict(),
                "teacher": stage.teacher.state_dict() if stage.teacher is not None else None,
                "optimizer": stage.optimizer.state_dict(),
                "scaler": stage.scaler.state_dict() if stage.scaler is not None else None,
                "extra": stage.extra()})
        barrier()

    def _run(self, stage: Stage, start: int, *, max_steps: int | None, progress: bool, on_finish) -> Path | None:
        from tqdm import tqdm

        rt, sec = stage.rt, stage.section
        total = sec.steps
        if start == 0 and stage.eval_every and rt.is_main:
            stage.evaluate(0)
        bar = tqdm(total=total, initial=start, desc=self.name, disable=not (progress and rt.is_main),
                   mininterval=5.0, leave=False)
        t0 = t_last = time.perf_counter()
        stage.net.train()
        step = start
        while step < total:
            if max_steps is not None and step >= max_steps:
                self._save(stage, self.last, step)
                bar.close()
                self.log.info("%s: stopped at step %d (max_steps)", self.name, step)
                return None
            with stage.watch.iteration():
                set_lr(stage.optimizer, step, total, power=sec.poly_power, warmup=stage.warmup)
                losses = stage.step(step)
            step += 1
            bar.update(1)
            stage.after_step(step)
            if step % sec.log_every == 0 or step == total:
                rec = {"step": step, "loss": sum(losses.values()).item(), **{k: v.item() for k, v in losses.items()},
                       **stage.record(), "seconds": time.perf_counter() - t0}
                stage.history.append(rec)
                dt = (time.perf_counter() - t_last) / sec.log_every
                t_last = time.perf_counter()
                stage.log_step(rec, dt)
            if stage.eval_every and step % stage.eval_every == 0 and rt.is_main:
                stage.evaluate(step)
            if step % sec.checkpoint_every == 0 and step < total:
                self._save(stage, self.last, step)
        bar.close()
        stage.finish(step)
        self._save(stage, self.final, step)
        if on_finish is not None:
            on_finish(stage.net, stage.teacher)
        stage.log_done(total - start, time.perf_counter() - t0, self.final)
        return self.final
