#include "knn_graph.h"

#include <torch/library.h>

#include "checks.h"

// Exact k-nearest-neighbour graph of a point set: on CPU a kd-tree up to D = 16, blocked brute
// force above (the same distances and results either way); on CUDA brute force.
//   x [N, D] float32/float64, 1 <= k <= N - 1.
// For every row i, the k other rows j != i with the smallest squared Euclidean distance
// sum_d (x[i, d] - x[j, d])^2, accumulated in float64; ties go to the lower index j.
// Returns (sqdist [N, k] in x's dtype, ascending along each row; index [N, k] int64).
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("knn_graph(Tensor x, int k) -> (Tensor, Tensor)");
}

namespace pst {

void check_knn_graph_args(const at::Tensor& x, int64_t k) {
  check_dim(x, 2, "x", "[N, D]");
  check_floating(x, "x");
  const int64_t n = x.size(0);
  TORCH_CHECK(k >= 1, "k should be >= 1, got ", k);
  TORCH_CHECK(k <= n - 1, "k should be at most N - 1 = ", n - 1, " (a point is not its own neighbour), got k = ",
              k, " for N = ", n);
  TORCH_CHECK(x.size(1) >= 1, "x should have at least one column, got shape ", x.sizes());
}

}  // namespace pst
