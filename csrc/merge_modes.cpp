#include "merge_modes.h"

#include <torch/library.h>

#include "checks.h"

// Greedy merge of cluster centres, strongest first, within each segment.
//   centers [K, D] float32/float64, weights [K] float64, segment [K] int64, radius > 0.
// Centres are visited by segment, then weight (descending), then coordinates (descending,
// lexicographic: scikit-learn's tie-break). A centre within `radius` (distance <= radius) of an
// already kept centre of its segment is absorbed by the nearest such one; otherwise it is kept.
// Returns (keeper [K] int64: the kept centre that absorbs each centre, itself when kept;
//          order [K] int64: the visiting order).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("merge_modes(Tensor centers, Tensor weights, Tensor segment, float radius) -> (Tensor, Tensor)");
}

namespace pst {

void check_merge_modes_args(const at::Tensor& centers, const at::Tensor& weights, const at::Tensor& segment,
                            double radius) {
  check_dim(centers, 2, "centers", "[K, D]");
  check_floating(centers, "centers");
  check_dim(weights, 1, "weights", "[K]");
  check_dtype(weights, at::kDouble, "weights");
  check_dim(segment, 1, "segment", "[K]");
  check_dtype(segment, at::kLong, "segment");
  check_rows(weights, centers.size(0), "weights", "one entry per centre");
  check_rows(segment, centers.size(0), "segment", "one entry per centre");
  check_positive_finite(radius, "radius");
}

}  // namespace pst
