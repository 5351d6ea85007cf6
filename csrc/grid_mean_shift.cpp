#include "grid_mean_shift.h"

#include <torch/library.h>

#include "checks.h"

// Grid mean shift (MeanShift++, Jang & Jiang 2021) on occupied cells only, per segment.
//   points [N, D] float32/float64; offsets [G + 1] int64 (segment g = rows offsets[g]..offsets[g+1]);
//   cell_size > 0 (the grid's side h); max_iter >= 1; tol >= 0.
// Each pass bins the current positions into cells of side h, and every position moves to the
// mean of all positions (with their multiplicities) whose cell differs from its own by at most
// one in every coordinate: the 3^D block around its cell. Positions in one cell move together,
// so after the first pass the work is per occupied cell, not per point, and the 3^D neighbour
// cells are never enumerated: a kd-tree over the occupied cells answers the block query.
// Stops when no position moves by more than tol, or after max_iter passes.
// Returns (modes [M, D] points' dtype, weights [M] int64 (points per mode), mode_segment [M] int64,
//          labels [N] int64 (the mode each point ended in), n_iter [] int64).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("grid_mean_shift(Tensor points, Tensor offsets, float cell_size, int max_iter, float tol)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

namespace pst {

void check_grid_mean_shift_args(const at::Tensor& points, const at::Tensor& offsets, double cell_size,
                                int64_t max_iter, double tol) {
  check_dim(points, 2, "points", "[N, D]");
  check_floating(points, "points");
  check_offsets_shape(offsets, "offsets");
  check_positive_finite(cell_size, "cell_size");
  TORCH_CHECK(max_iter >= 1, "max_iter should be >= 1, got ", max_iter);
  check_nonnegative_finite(tol, "tol");
}

}  // namespace pst
