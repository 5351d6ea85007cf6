#include "mean_shift.h"

#include <torch/library.h>

#include "checks.h"

// Flat-kernel mean shift from given seeds, each seed within its own segment of the points.
//   points [N, D] float32/float64; offsets [G + 1] int64 (segment g = rows offsets[g]..offsets[g+1]);
//   seeds [S, D] same dtype; seed_segment [S] int64 in [0, G).
// Each seed moves to the mean of the points of its segment within `bandwidth` (distance <= bandwidth)
// until it moves by at most `tol` or after `max_iter` moves, as scikit-learn's MeanShift does per seed.
// Returns (modes [S, D], counts [S] int64: points within bandwidth of the last mean (0 = the seed saw
// no point), n_iter [S] int64).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("mean_shift(Tensor points, Tensor offsets, Tensor seeds, Tensor seed_segment, float bandwidth,"
        " int max_iter, float tol) -> (Tensor, Tensor, Tensor)");
}

namespace pst {

void check_mean_shift_args(const at::Tensor& points, const at::Tensor& offsets, const at::Tensor& seeds,
                           const at::Tensor& seed_segment, double bandwidth, int64_t max_iter, double tol) {
  check_dim(points, 2, "points", "[N, D]");
  check_floating(points, "points");
  check_dim(seeds, 2, "seeds", "[S, D]");
  check_dtype_like(seeds, points, "seeds", "points");
  check_columns_like(seeds, points, "seeds", "points");
  check_dim(seed_segment, 1, "seed_segment", "[S]");
  check_dtype(seed_segment, at::kLong, "seed_segment");
  check_rows(seed_segment, seeds.size(0), "seed_segment", "one entry per seed");
  check_offsets_shape(offsets, "offsets");
  check_positive_finite(bandwidth, "bandwidth");
  TORCH_CHECK(max_iter >= 0, "max_iter should be >= 0, got ", max_iter);
  check_nonnegative_finite(tol, "tol");
}

}  // namespace pst
