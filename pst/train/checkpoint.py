"""Checkpoints: written atomically (pst.io.torch_save), read back with a clear error.

A training checkpoint is a dict::

    {"format": "pst-checkpoint/1", "stage": "source" | "oracle" | "selftrain",
     "config": <nested config dict>, "step": int, "total_steps": int,
     "model": state_dict, "teacher": state_dict | None, "optimizer": state_dict | None,
     "scaler": state_dict | None, "extra": {...}}

``model`` holds the :class:`pst.train.model.PanopticNet` (semantic + instance models);
``teacher`` the EMA teacher during self-training. Final checkpoints of a run are
``<out>/<stage>.pt``; resumable ones ``<out>/<stage>/last.pt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pst.io import torch_save

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "find_checkpoints"]

FORMAT = "pst-checkpoint/1"
STAGES = ("source", "selftrain", "oracle")

logger = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (a checkpoint dict, see the module doc) atomically to ``path``."""
    state = {"format": FORMAT, **state}
    torch_save(path, state)
    logger.debug("checkpoint %s (step %s)", path, state.get("step"))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.  ValueError: not a pst checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated / foreign files
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pst checkpoint (expected format {FORMAT!r})")
    return state


def find_checkpoints(path: str | Path) -> dict[str, Path]:
    """Stage name -> final checkpoint for a file (its own stage) or a run folder."""
    path = Path(path)
    if path.is_file():
        return {path.stem: path}
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such checkpoint file or run folder")
    found = {s: path / f"{s}.pt" for s in STAGES if (path / f"{s}.pt").is_file()}
    if not found:
        found = {p.stem: p for p in sorted(path.glob("*.pt"))}
    if not found:
        raise FileNotFoundError(f"{path}: no checkpoints (*.pt) in this folder")
    return found
