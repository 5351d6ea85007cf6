#include <torch/library.h>

// Greedy merge of cluster centres, strongest first, within each segment.
//   centers [K, D] float32/float64, weights [K] float64, segment [K] int64, radius > 0.
// Centres are visited by segment, then weight (descending), then coordinates (descending,
// lexicographic: scikit-learn's tie-break). A centre within `radius` (distance <= radius) of an
// already kept centre of its segment is absorbed by the nearest such one; otherwise it is kept.
// Returns (keeper [K] int64: the kept centre that absorbs each centre, itself when kept;
//          order [K] int64: the visiting order).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.def("merge_modes(Tensor centers, Tensor weights, Tensor segment, float radius) -> (Tensor, Tensor)");
}
