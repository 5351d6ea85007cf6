"""What the estimators of pst.cluster share besides the input checks (those are in
:mod:`pst._checks`): scikit-learn's feature names, result dtypes, segment offsets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:  # scikit-learn >= 1.6: a function of sklearn.utils.validation
    from sklearn.utils.validation import _check_feature_names
except ImportError:  # pragma: no cover - scikit-learn 1.4 and 1.5: a method of BaseEstimator
    def _check_feature_names(estimator, X, *, reset):
        estimator._check_feature_names(X, reset=reset)


def check_feature_names(estimator: Any, X: Any, *, reset: bool) -> None:
    """scikit-learn's own handling of column names: ``reset=True`` (fit) sets
    ``estimator.feature_names_in_`` from a DataFrame's string column names (and removes it for
    other input); ``reset=False`` (predict) raises when the names differ from those seen in fit
    and warns when only one of the two had names."""
    _check_feature_names(estimator, X, reset=reset)


def result_dtype(dtype: torch.dtype) -> np.dtype:
    """The dtype of scikit-learn's fitted float attributes (``cluster_centers_``) for input of
    ``dtype``: float16 and float32 stay, anything else (float64, integers, bool, bfloat16) gives
    float64. The computation itself runs in float32 or float64 (see :func:`pst._checks.check_points`)."""
    return {torch.float16: np.dtype(np.float16), torch.float32: np.dtype(np.float32)}.get(dtype, np.dtype(np.float64))


def offsets_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """[G] counts -> [G + 1] int64 offsets (0, c0, c0 + c1, ...)."""
    out = torch.zeros(counts.numel() + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts.to(torch.long), 0, out=out[1:])
    return out


def single_segment(n: int, device: torch.device | str) -> torch.Tensor:
    return torch.tensor([0, n], dtype=torch.long, device=device)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
