#include "nearest_center.h"

#include <torch/library.h>

#include "checks.h"

// For every point, the nearest centre of its own segment (squared Euclidean distance).
// points [N, D] float, offsets [G + 1] int64 (points of segment g are rows offsets[g]..offsets[g+1]),
// centers [K, D] same dtype, center_offsets [G + 1] int64 likewise for the centres.
// Returns (index [N] int64 into centers, -1 when the segment has no centre; sqdist [N] in the
// points' dtype, +inf when there is none). Ties go to the lower index.
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("nearest_center(Tensor points, Tensor offsets, Tensor centers, Tensor center_offsets)"
        " -> (Tensor, Tensor)");
}

namespace pst {

void check_nearest_center_args(const at::Tensor& points, const at::Tensor& offsets, const at::Tensor& centers,
                               const at::Tensor& center_offsets) {
  check_dim(points, 2, "points", "[N, D]");
  check_dim(centers, 2, "centers", "[K, D]");
  check_floating(points, "points");
  check_dtype_like(centers, points, "centers", "points");
  check_columns_like(centers, points, "centers", "points");
  check_offsets_shape(offsets, "offsets");
  check_offsets_shape(center_offsets, "center_offsets");
  TORCH_CHECK(offsets.size(0) == center_offsets.size(0), "offsets and center_offsets should describe the same ",
              "number of segments, got ", offsets.size(0) - 1, " and ", center_offsets.size(0) - 1);
}

}  // namespace pst
