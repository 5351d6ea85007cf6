"""Dataset and result file formats. :mod:`pst.formats.cityscapes`: the cityscapesScripts formats."""

from pst.formats import cityscapes

__all__ = ["cityscapes"]
