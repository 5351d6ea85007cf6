"""Input checks shared by pst's Python API (pst.cluster, pst.morph, pst.losses): one
vocabulary, so that the same mistake gets the same message everywhere.

Every check raises TypeError (wrong kind of object or dtype) or ValueError (wrong shape or
value) with a message that names the argument, says what was expected and what came; it
returns what it checked (possibly converted), so a call reads ``x = check_...(x, "x")``.

The scikit-learn-style estimators of pst.cluster take numpy arrays, torch tensors or
DLPack objects (:func:`as_tensor`, :func:`check_points`; messages in scikit-learn's
wording); the tensor functions take torch tensors only (:func:`tensor`).
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["FLOAT_DTYPES", "INT_DTYPES", "is_tensor_like", "as_tensor", "tensor", "check_tensor", "check_dims",
           "check_shape", "check_floating", "check_integer", "check_bool_tensor", "check_map", "check_all_finite",
           "check_points", "check_finite", "check_scalar", "check_bandwidth", "check_int", "check_bool", "check_choice"]

FLOAT_DTYPES = (torch.float32, torch.float64)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# ----------------------------------------------------------------------------- arrays and tensors


def is_tensor_like(x: Any) -> bool:
    """True for torch tensors and for non-numpy objects that export DLPack (cupy, jax)."""
    if isinstance(x, torch.Tensor):
        return True
    return not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")


def as_tensor(x: Any, name: str = "X") -> torch.Tensor:
    """torch view of ``x`` (torch, DLPack, numpy or array-like); never copies a torch tensor.
    Tensors stay on their device; numpy arrays are shared where their layout allows it."""
    if isinstance(x, torch.Tensor):
        return x
    if is_tensor_like(x):
        try:
            return torch.from_dlpack(x)
        except (RuntimeError, TypeError, BufferError) as exc:
            raise TypeError(f"{name}: could not import a {type(x).__name__} through DLPack ({exc})") from exc
    if hasattr(x, "toarray") or type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name}: sparse input is not supported, pass a dense array (got {type(x).__name__})")
    arr = np.asarray(x)
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} should be a numeric array, got an array of Python objects ({exc})") from exc
    if np.iscomplexobj(arr):
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}")
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


def tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` itself, which should be a torch tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} should be a torch.Tensor, got {type(x).__name__}")
    return x


def check_tensor(x: Any, name: str, *, dims: str | None = None, shape: Sequence[int] | None = None,
                 kind: str | None = None, convert: bool = False) -> torch.Tensor:
    """The usual checks of a tensor argument, in this order: a tensor (or, with ``convert``,
    anything :func:`as_tensor` takes), its shape (``shape``; or only as many dimensions as
    ``dims`` names, e.g. "B, H, W"), its dtype (``kind``: "floating", "integer",
    "integer or bool" or "bool"). Returns the tensor."""
    x = as_tensor(x, name) if convert else tensor(x, name)
    if shape is not None:
        check_shape(x, name, shape, dims)
    elif dims is not None:
        check_dims(x, name, dims)
    if kind == "floating":
        check_floating(x, name)
    elif kind in ("integer", "integer or bool"):
        check_integer(x, name, allow_bool=kind == "integer or bool")
    elif kind == "bool":
        check_bool_tensor(x, name)
    elif kind is not None:
        raise ValueError(f"kind should be 'floating', 'integer', 'integer or bool', 'bool' or None, got {kind!r}")
    return x


def check_dims(x: torch.Tensor, name: str, dims: str) -> torch.Tensor:
    """``x`` with as many dimensions as ``dims`` names (e.g. "B, C, H, W")."""
    if x.dim() != len(dims.split(",")):
        raise ValueError(f"{name} should have shape [{dims}], got {list(x.shape)}")
    return x


def check_shape(x: torch.Tensor, name: str, shape: Sequence[int], dims: str | None = None) -> torch.Tensor:
    """``x`` of exactly ``shape`` (``dims`` names its dimensions in the message)."""
    if tuple(x.shape) != tuple(shape):
        want = f"[{dims}] = {list(shape)}" if dims is not None else f"{list(shape)}"
        raise ValueError(f"{name} should have shape {want}, got {list(x.shape)}")
    return x


def check_floating(x: torch.Tensor, name: str) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"{name} should be a floating tensor, got {x.dtype}")
    return x


def check_integer(x: torch.Tensor, name: str, *, allow_bool: bool = False,
                  dtypes: Sequence[torch.dtype] | None = None) -> torch.Tensor:
    """``x`` of an integer dtype: any (not bool, unless ``allow_bool``), or one of ``dtypes``."""
    if dtypes is not None:
        if x.dtype not in dtypes:
            names = [str(d).replace("torch.", "") for d in dtypes]
            listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
            raise TypeError(f"{name} should be an integer tensor ({listed}), got {x.dtype}")
    elif x.is_floating_point() or x.is_complex() or (x.dtype == torch.bool and not allow_bool):
        raise TypeError(f"{name} should be an integer{' or bool' if allow_bool else ''} tensor, got {x.dtype}")
    return x


def check_bool_tensor(x: torch.Tensor, name: str, hint: str = "") -> torch.Tensor:
    """``x`` of dtype bool (``hint`` follows the message, e.g. how to make one)."""
    if x.dtype != torch.bool:
        raise TypeError(f"{name} should be a bool tensor, got {x.dtype}{hint}")
    return x


def check_map(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    """A [B, H, W] or [H, W] tensor; returns it as [B, H, W] and whether it was 2-D."""
    x = tensor(x, name)
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} should be a [B, H, W] or [H, W] tensor, got shape {tuple(x.shape)}")
    return (x.unsqueeze(0), True) if x.dim() == 2 else (x, False)


def check_all_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` without NaN or infinity."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinity")
    return x


# ----------------------------------------------------------------------------- scikit-learn-style data


def check_points(
    x: Any,
    name: str = "X",
    *,
    min_samples: int = 1,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A [N, D] floating tensor with finite values.

    Integer and boolean inputs become float64 (float32 stays float32); ``dtype`` forces one.
    Raises ValueError / TypeError with messages in scikit-learn's wording.
    """
    t = as_tensor(x, name)
    if device is not None:
        t = t.to(device)
    if t.dim() != 2:
        raise ValueError(
            f"Expected 2D array for {name} of shape [n_samples, n_features], got {t.dim()}D array "
            f"with shape {tuple(t.shape)}. Reshape your data either using array.reshape(-1, 1) if your "
            "data has a single feature or array.reshape(1, -1) if it contains a single sample."
        )
    if t.is_complex():
        raise ValueError(f"Complex data not supported: {name} has dtype {t.dtype}")
    if dtype is not None:
        t = t.to(dtype)
    elif t.dtype not in FLOAT_DTYPES:
        t = t.to(torch.float64)
    if t.shape[0] < min_samples:
        raise ValueError(
            f"Found array with {t.shape[0]} sample(s) (shape={tuple(t.shape)}) while a minimum of "
            f"{min_samples} is required."
        )
    if t.shape[1] < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is required."
        )
    check_finite(t, name)
    return t.contiguous()


def check_finite(t: torch.Tensor, name: str) -> None:
    """No NaN or infinity in ``t`` (scikit-learn's message)."""
    if not t.numel():
        return
    # numpy on the CPU: single-threaded, so no OpenMP start-up cost on small inputs
    ok = bool(np.isfinite(t.detach().numpy()).all()) if t.device.type == "cpu" else bool(torch.isfinite(t).all())
    if not ok:
        what = "NaN" if bool(torch.isnan(t).any()) else "infinity"
        raise ValueError(f"Input {name} contains {what} or a value too large for dtype('{_np_name(t.dtype)}').")


def _np_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ----------------------------------------------------------------------------- scalars


def check_scalar(
    value: Any,
    name: str,
    *,
    kind: type | tuple[type, ...] = numbers.Real,
    min_val: float | None = None,
    max_val: float | None = None,
    include_min: bool = True,
    include_max: bool = True,
    allow_none: bool = False,
):
    """Type and range check of a hyper-parameter (scikit-learn's wording); returns it unchanged."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise TypeError(f"{name} should be {expected}{' or None' if allow_none else ''}, got {value!r} "
                        f"of type {type(value).__name__}")
    if isinstance(value, numbers.Real) and not np.isfinite(float(value)):
        raise ValueError(f"{name} should be finite, got {value!r}")
    if min_val is not None and (value < min_val or (value == min_val and not include_min)):
        op = ">=" if include_min else ">"
        raise ValueError(f"{name} should be {op} {min_val}, got {value!r}")
    if max_val is not None and (value > max_val or (value == max_val and not include_max)):
        op = "<=" if include_max else "<"
        raise ValueError(f"{name} should be {op} {max_val}, got {value!r}")
    return value


def check_bandwidth(bandwidth: Any, name: str = "bandwidth") -> float:
    check_scalar(bandwidth, name, min_val=0.0, include_min=False)
    return float(bandwidth)


def check_int(value: Any, name: str, *, min_val: int = 0) -> int:
    """An int (not a bool) >= ``min_val``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} should be an int, got {type(value).__name__} {value!r}")
    if value < min_val:
        raise ValueError(f"{name} should be >= {min_val}, got {value}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be a bool, got {type(value).__name__} {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[Any]):
    """``value``, which should be one of ``choices`` (a tuple, shown as such)."""
    if value not in choices:
        raise ValueError(f"{name} should be one of {choices}, got {value!r}")
    return value
