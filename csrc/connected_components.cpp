#include <torch/library.h>

// Connected-component labelling of binary images.
// mask [B, H, W] bool; connectivity 4 or 8. Returns int32 [B, H, W]: 0 on background, and
// per image the components numbered 1..n in raster order of their first pixel (the numbering
// of scipy.ndimage.label).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.def("connected_components(Tensor mask, int connectivity) -> Tensor");
}
