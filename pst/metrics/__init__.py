"""Streaming evaluation metrics (``update`` per image or batch, ``compute`` at the end).

* :class:`PanopticQuality`: PQ, SQ, RQ (all / things / stuff, per class) and PQ-dagger,
  counted as cityscapesScripts' ``evalPanopticSemanticLabeling`` does.
* :class:`SemanticIoU`: per-class IoU and mIoU from a confusion matrix on the input's
  device, as ``evalPixelLevelSemanticLabeling``.
* :class:`InstanceAP`: AP@[.5:.95] and AP50 as ``evalInstanceLevelSemanticLabeling``.
"""

from pst.metrics.instance import InstanceAP, cityscapes_average_precision
from pst.metrics.panoptic import PanopticQuality, panoptic_image_stats
from pst.metrics.semantic import SemanticIoU

__all__ = ["PanopticQuality", "SemanticIoU", "InstanceAP", "panoptic_image_stats", "cityscapes_average_precision"]
