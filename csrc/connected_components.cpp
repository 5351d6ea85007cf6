#include "connected_components.h"

#include <torch/library.h>

#include <limits>

#include "checks.h"

// Connected-component labelling of binary images.
// mask [B, H, W] bool; connectivity 4 or 8. Returns int32 [B, H, W]: 0 on background, and
// per image the components numbered 1..n in raster order of their first pixel (the numbering
// of scipy.ndimage.label).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("connected_components(Tensor mask, int connectivity) -> Tensor");
}

namespace pst {

void check_connected_components_args(const at::Tensor& mask, int64_t connectivity) {
  check_dim(mask, 3, "mask", "[B, H, W]");
  check_dtype(mask, at::kBool, "mask");
  TORCH_CHECK_VALUE(connectivity == 4 || connectivity == 8, "connectivity should be 4 or 8, got ", connectivity);
  TORCH_CHECK(mask.size(1) * mask.size(2) <= std::numeric_limits<int32_t>::max(),
              "mask images should have at most 2^31 - 1 pixels (int32 labels), got ", mask.size(1), " x ",
              mask.size(2));
}

}  // namespace pst
