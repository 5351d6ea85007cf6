#include <torch/library.h>

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
  m.def("morph_refine(Tensor instances, int open_radius, int close_radius, bool disk, bool fill_holes,"
        " int min_size, bool largest_component, int connectivity) -> Tensor");
}
