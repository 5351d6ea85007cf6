#include "sample_anchors.h"

#include <torch/library.h>

#include <limits>

#include "checks.h"

// Weighted sampling of anchor points without replacement, with a minimum spacing, per segment.
//   weights [N] float32/float64 (>= 0; 0 = never drawn), coords [N, C] same dtype (pixel positions),
//   offsets [G + 1] int64 (segment g = rows offsets[g]..offsets[g+1]), k >= 0, min_distance >= 0, seed.
// Draw order: the Gumbel-top-k keys log(w_i) - log(-log(u_i)) in descending order, with u_i from a
// counter-based generator of (seed, i - offsets[g]) (the
// row's index inside its segment, so a segment's draws do not depend on the other segments), which is sampling proportional to w without replacement.
// Candidates closer than min_distance (Euclidean, in coords) to an anchor already taken are skipped.
// Returns [G, k] int64 row indices into the points, -1 where a segment has fewer acceptable points.
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("sample_anchors(Tensor weights, Tensor coords, Tensor offsets, int k, float min_distance, int seed)"
        " -> Tensor");
}

namespace pst {

void check_sample_anchors_args(const at::Tensor& weights, const at::Tensor& coords, const at::Tensor& offsets,
                               int64_t k, double min_distance) {
  check_dim(weights, 1, "weights", "[N]");
  check_floating(weights, "weights");
  check_dim(coords, 2, "coords", "[N, C]");
  check_dtype_like(coords, weights, "coords", "weights");
  check_rows(coords, weights.size(0), "coords", "one row per weight");
  check_offsets_shape(offsets, "offsets");
  TORCH_CHECK(k >= 0, "k should be >= 0, got ", k);
  const int64_t n_seg = offsets.size(0) - 1;
  TORCH_CHECK(n_seg == 0 || k <= std::numeric_limits<int64_t>::max() / 8 / n_seg, "k should give an output [G, k] ",
              "of fewer than 2^63 bytes, got k = ", k, " for G = ", n_seg, " segments");
  check_nonnegative_finite(min_distance, "min_distance");
}

}  // namespace pst
