"""pst: self-trained panoptic segmentation.

Subpackages:
    pst.cluster   scikit-learn-style clustering on compiled ops (mean shift, MeanShift++,
                  agglomerative), anchor sampling and per-class instance clustering
    pst.morph     batched morphology, hole filling and connected components on instance maps
    pst.panoptic  semantic + instance fusion
    pst.metrics   PQ / PQ-dagger / mIoU / AP, streaming over a dataset
    pst.models, pst.losses, pst.data, pst.train   the self-training pipeline
"""

from pst._ops import cpu_isa, has_cuda

__version__ = "0.1.0"

__all__ = ["cpu_isa", "has_cuda", "__version__"]
