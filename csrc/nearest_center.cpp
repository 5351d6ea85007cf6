#include <torch/library.h>

// For every point, the nearest centre of its own segment (squared Euclidean distance).
// points [N, D] float, offsets [G + 1] int64 (points of segment g are rows offsets[g]..offsets[g+1]),
// centers [K, D] same dtype, center_offsets [G + 1] int64 likewise for the centres.
// Returns (index [N] int64 into centers, -1 when the segment has no centre; sqdist [N] in the
// points' dtype, +inf when there is none). Ties go to the lower index.
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.def("nearest_center(Tensor points, Tensor offsets, Tensor centers, Tensor center_offsets)"
        " -> (Tensor, Tensor)");
}
