#include <torch/library.h>

// Weighted sampling of anchor points without replacement, with a minimum spacing, per segment.
//   weights [N] float32/float64 (>= 0; 0 = never drawn), coords [N, C] same dtype (pixel positions),
//   offsets [G + 1] int64 (segment g = rows offsets[g]..offsets[g+1]), k >= 0, min_distance >= 0, seed.
// Draw order: the Gumbel-top-k keys log(w_i) - log(-log(u_i)) in descending order, with u_i from a
// counter-based generator of (seed, i - offsets[g]) (the
// row's index inside its segment, so a segment's draws do not depend on the other segments), which is sampling proportional to w without replacement.
// Candidates closer than min_distance (Euclidean, in coords) to an anchor already taken are skipped.
// Returns [G, k] int64 row indices into the points, -1 where a segment has fewer acceptable points.
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.def("sample_anchors(Tensor weights, Tensor coords, Tensor offsets, int k, float min_distance, int seed)"
        " -> Tensor");
}
