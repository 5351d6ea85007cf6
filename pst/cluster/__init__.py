"""scikit-learn-style clustering on pst's compiled ops: CPU or GPU, numpy, torch or cupy in.

Estimators (``fit`` / ``fit_predict`` / ``predict``, ``labels_``, ``cluster_centers_``,
``n_iter_``) and their functional twins, which take and return torch tensors on the
caller's device:

- :class:`MeanShift` / :func:`mean_shift`: exact flat-kernel mean shift, scikit-learn's
  results, plus the optional "mean-shift+" merge (``merge_distance``).
- :class:`MeanShiftPP` / :func:`grid_mean_shift`: grid mean shift (MeanShift++) for 2 to
  64 dimensions.
- :class:`AgglomerativeClustering`: on a sparse k-nearest-neighbour graph.
- :func:`estimate_bandwidth`, :func:`sample_anchors`, and :func:`cluster_instances`, the
  per-iteration instance pseudo-labelling of self-training.
"""

from pst.cluster._knn import knn_graph
from pst.cluster.agglomerative import AgglomerativeClustering, agglomerative
from pst.cluster.instances import METHODS, cluster_instances, sample_anchors
from pst.cluster.mean_shift import (
    MeanShift,
    MeanShiftPP,
    estimate_bandwidth,
    get_bin_seeds,
    grid_mean_shift,
    mean_shift,
)

__all__ = [
    "AgglomerativeClustering",
    "agglomerative",
    "knn_graph",
    "METHODS",
    "cluster_instances",
    "sample_anchors",
    "MeanShift",
    "MeanShiftPP",
    "estimate_bandwidth",
    "get_bin_seeds",
    "grid_mean_shift",
    "mean_shift",
]
