"""Input conversion and checks shared by pst.cluster.

Arrays come in as numpy arrays (or anything ``np.asarray`` takes), torch tensors, or
objects that speak DLPack (cupy, jax, ...). They are turned into torch tensors without
a copy where the layout allows it, and stay on their device.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float64)

try:  # scikit-learn >= 1.6: a function of sklearn.utils.validation
    from sklearn.utils.validation import _check_feature_names
except ImportError:  # pragma: no cover - scikit-learn 1.4 and 1.5: a method of BaseEstimator
    def _check_feature_names(estimator, X, *, reset):
        estimator._check_feature_names(X, reset=reset)


def is_tensor_like(x: Any) -> bool:
    """True for torch tensors and for non-numpy objects that export DLPack (cupy, jax)."""
    if isinstance(x, torch.Tensor):
        return True
    return not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")


def as_tensor(x: Any, name: str = "X") -> torch.Tensor:
    """torch view of ``x`` (torch, DLPack, numpy or array-like); never copies a torch tensor."""
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


def check_feature_names(estimator: Any, X: Any, *, reset: bool) -> None:
    """scikit-learn's own handling of column names: ``reset=True`` (fit) sets
    ``estimator.feature_names_in_`` from a DataFrame's string column names (and removes it for
    other input); ``reset=False`` (predict) raises when the names differ from those seen in fit
    and warns when only one of the two had names."""
    _check_feature_names(estimator, X, reset=reset)


def result_dtype(dtype: torch.dtype) -> np.dtype:
    """The dtype of scikit-learn's fitted float attributes (``cluster_centers_``) for input of
    ``dtype``: float16 and float32 stay, anything else (float64, integers, bool, bfloat16) gives
    float64. The computation itself runs in float32 or float64 (see :func:`check_points`)."""
    return {torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32)}.get(dtype, np.dtype(np.float64))


def check_finite(t: torch.Tensor, name: str) -> None:
    if not t.numel():
        return
    # numpy on the CPU: single-threaded, so no OpenMP start-up cost on small inputs
    ok = bool(np.isfinite(t.detach().numpy()).all()) if t.device.type == "cpu" else bool(torch.isfinite(t).all())
    if not ok:
        what = "NaN" if bool(torch.isnan(t).any()) else "infinity"
        raise ValueError(f"Input {name} contains {what} or a value too large for dtype('{_np_name(t.dtype)}').")


def _np_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


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
    """Type and range check of a hyper-parameter; returns it unchanged."""
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


def offsets_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """[G] counts -> [G + 1] int64 offsets (0, c0, c0 + c1, ...)."""
    out = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts.to(torch.long), 0, out=out[1:])
    return out


def single_segment(n: int, device: torch.device | str) -> torch.Tensor:
    return torch.tensor([0, n], dtype=torch.long, device=device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
