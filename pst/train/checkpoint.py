"""Checkpoints: written atomically (pst.io.torch_save), read back with a clear error.

A training checkpoint is a dict::

    {"format": "pst-checkpoint/1", "stage": "source" | "oracle" | "selftrain",
     "config": <nested config dict>, "step": int, "total_steps": int,
     "model": state_dict, "teacher": state_dict | None, "optimizer": state_dict | None,
     "scaler": state_dict | None, "extra": {...}}

``model`` holds the :class:`pst.train.model.PanopticNet` (semantic + instance models);
``teacher`` the EMA teacher during self-training. Final checkpoints of a run are
``<out>/<stage>.pt``; resumable ones ``<out>/<stage>/last.pt``.

A checkpoint holds only tensors and plain data (dict, list, tuple, str, int, float, bool,
None): :func:`save_checkpoint` turns numpy scalars and arrays into Python numbers and tensors,
and :func:`load_checkpoint` reads with ``torch.load(weights_only=True)``, so loading a file never
runs code from it. The only non-plain objects allowed are numpy scalars (which checkpoints
written before this rule may hold in ``extra``); they are allowed for that one load, not
process-wide.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pst.io import torch_save

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "net_from_checkpoint", "find_checkpoints", "check_config"]

FORMAT = "pst-checkpoint/1"
STAGES = ("source", "selftrain", "oracle")

logger = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (a checkpoint dict, see the module doc) atomically to ``path``."""
    state = _plain({"format": FORMAT, **state})
    torch_save(path, state)
    logger.debug("checkpoint %s (step %s)", path, state.get("step"))


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


def _plain(obj: Any, where: str = "state") -> Any:
    """``obj`` with numpy scalars turned into Python numbers, numpy arrays into tensors and paths
    into strings, through dicts, lists and tuples: what ``torch.load(weights_only=True)`` reads.
    Anything else is a TypeError naming where it sits, so a checkpoint that could not be read
    back is never written."""
    if isinstance(obj, dict):
        return type(obj)((k, _plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, Path):
        return str(obj)
    if not isinstance(obj, _PLAIN):
        raise TypeError(f"checkpoint {where} should be a tensor or plain data (dict, list, tuple, str, number, "
                        f"bool, None), got {type(obj).__module__}.{type(obj).__qualname__}")
    return obj


def _numpy_scalar_globals() -> list:
    """The globals a pickled numpy scalar needs (its reconstructor and dtype classes): safe,
    they only rebuild numbers from bytes."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                          np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)]
    return [core.multiarray.scalar, np.dtype, *dtypes]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    require: Iterable[str] = ("config", "model")) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Args:
        require: keys the checkpoint must hold (the caller's needs).

    Raises:
        FileNotFoundError: no such file.  ValueError: not a pst checkpoint, a file that holds
        Python objects other than tensors and plain data (it is not unpickled), or one without
        a required key; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - not even a pickle: a truncated or foreign file
            raise ValueError(f"{path}: not a readable checkpoint ({exc})") from None
        unsafe = [g for g in unsafe if g not in {"numpy.dtype", "numpy.core.multiarray.scalar",
                                                 "numpy._core.multiarray.scalar"}]
        if not unsafe:
            raise ValueError(f"{path}: not a readable checkpoint ({exc})") from None
        raise ValueError(
            f"{path}: refused: a pst checkpoint holds only tensors and plain data (dict, list, str, "
            f"numbers), this file also pickles {', '.join(unsafe) or 'other Python objects'}, which "
            f"could run code when loaded. If it comes from a source you trust, convert it once "
            f"(load it with torch.load(path, weights_only=False), replace those objects by tensors "
            f"or plain values, and write it again with pst.train.checkpoint.save_checkpoint)"
        ) from None
    except Exception as exc:  # truncated / foreign files
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: not a pst checkpoint (expected format {FORMAT!r}, got {got!r})")
    missing = [k for k in require if k not in state]
    if missing:
        raise ValueError(f"{path}: incomplete pst checkpoint: missing key(s) {', '.join(map(repr, missing))} "
                         f"(it holds {', '.join(sorted(map(str, state)))})")
    if "model" in require and not isinstance(state["model"], dict):
        raise ValueError(f"{path}: 'model' should be a state dict (name -> tensor), got {type(state['model']).__name__}")
    return state


def net_from_checkpoint(state: dict[str, Any], *, which: str = "model", device: str | torch.device = "cpu"):
    """(net, cfg) rebuilt from a checkpoint dict read by :func:`load_checkpoint`: the
    :class:`pst.train.model.PanopticNet` of its config with the weights of ``which``
    ("model", or "teacher" where the checkpoint holds one), on ``device``, in eval mode."""
    from pst.config import config_from_dict
    from pst.train.model import build_panoptic_net

    cfg = config_from_dict(state["config"])
    net = build_panoptic_net(cfg)
    sd = state.get(which) or state["model"]
    net.load_state_dict(sd)
    return net.to(device).eval(), cfg


def _show(value: Any) -> str:
    return value if isinstance(value, str) and value.startswith("(") else repr(value)


def check_config(state: dict[str, Any], cfg, path: str | Path, *, stage: str | None = None,
                 init: bool = False) -> None:
    """Refuse to continue checkpoint ``state`` (read from ``path``) under a config that does
    not fit it; log the settings that changed but may.

    ``init=False`` (``--resume``): every key, classified by :data:`pst.config.RESUME_RULES`
    for ``stage``. ``init=True`` (self-training from a source checkpoint): only the keys its
    weights depend on, :data:`pst.config.INIT_KEYS`.

    Raises:
        ValueError: listing each refused key with the checkpoint's value and the requested one.
    """
    from pst.config import INIT_KEYS, config_changes

    refused, allowed = config_changes(state["config"], cfg, stage=stage, only=INIT_KEYS if init else None)
    what = "initialise from" if init else "resume"
    if allowed:
        logger.info("%s: settings changed since the checkpoint (allowed): %s", path,
                    "; ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b, _ in allowed))
    if refused:
        lines = "\n".join(f"  {k}: {_show(a)} in the checkpoint, {_show(b)} now ({why})" for k, a, b, why in refused)
        raise ValueError(f"{path}: cannot {what} this checkpoint with a different config; these settings differ "
                         f"from the checkpoint's:\n{lines}\nuse the checkpoint's values"
                         + ("" if init else ", or start the run again in another folder"))


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
