#include <torch/library.h>

// Flat-kernel mean shift from given seeds, each seed within its own segment of the points.
//   points [N, D] float32/float64; offsets [G + 1] int64 (segment g = rows offsets[g]..offsets[g+1]);
//   seeds [S, D] same dtype; seed_segment [S] int64 in [0, G).
// Each seed moves to the mean of the points of its segment within `bandwidth` (distance <= bandwidth)
// until it moves by at most `tol` or after `max_iter` moves, as scikit-learn's MeanShift does per seed.
// Returns (modes [S, D], counts [S] int64: points within bandwidth of the last mean (0 = the seed saw
// no point), n_iter [S] int64).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.def("mean_shift(Tensor points, Tensor offsets, Tensor seeds, Tensor seed_segment, float bandwidth,"
        " int max_iter, float tol) -> (Tensor, Tensor, Tensor)");
}
