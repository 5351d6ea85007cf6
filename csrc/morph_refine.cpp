#include "morph_refine.h"

#include <torch/library.h>

#include "checks.h"

// Refinement of instance maps, every instance's binary mask processed on its own.
// instances [B, H, W] integer (uint8, int8, int16, int32 or int64), 0 = no instance, ids >= 1
// (any values, not necessarily consecutive). For each instance k with mask M = (instances == k),
// in this order:
//   open_radius > 0   M = dilate(erode(M, S), S)        (opening)
//   close_radius > 0  M = erode(dilate(M, S), S)        (closing)
//   fill_holes        M |= background components (4-connected when connectivity = 8, else
//                     8-connected) that do not touch the image border
//   min_size > 0      drop connected components (connectivity) with fewer than min_size pixels
//   largest_component keep only the largest component (ties: the one whose first pixel comes
//                     first in raster order)
// S is the square [-r, r]^2 (disk = false) or the disk dx^2 + dy^2 <= r^2 (disk = true). Pixels
// outside the image never take part (OpenCV's default border: erosion ignores them, dilation
// too). The refined masks R_k are pasted back into one map: a pixel whose original instance
// k keeps it (in R_k) stays k; any other pixel goes to the lowest id j with the pixel in R_j,
// else 0. Returns a tensor of the input's shape and dtype.
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("morph_refine(Tensor instances, int open_radius, int close_radius, bool disk, bool fill_holes,"
        " int min_size, bool largest_component, int connectivity) -> Tensor");
}

namespace pst {

void check_morph_refine_args(const at::Tensor& instances, int64_t open_radius, int64_t close_radius,
                             int64_t min_size, int64_t connectivity) {
  check_dim(instances, 3, "instances", "[B, H, W]");
  TORCH_CHECK_TYPE(at::isIntegralType(instances.scalar_type(), /*includeBool=*/false),
                   "instances should be an integer tensor (uint8, int8, int16, int32 or int64), got ",
                   instances.scalar_type());
  TORCH_CHECK_VALUE(open_radius >= 0, "open_radius should be >= 0, got ", open_radius);
  TORCH_CHECK_VALUE(close_radius >= 0, "close_radius should be >= 0, got ", close_radius);
  TORCH_CHECK_VALUE(min_size >= 0, "min_size should be >= 0, got ", min_size);
  TORCH_CHECK_VALUE(connectivity == 4 || connectivity == 8, "connectivity should be 4 or 8, got ", connectivity);
}

}  // namespace pst
