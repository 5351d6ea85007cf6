#include <torch/library.h>

// Exact k-nearest-neighbour graph of a point set: on CPU a kd-tree up to D = 16, blocked brute
// force above (the same distances and results either way); on CUDA brute force.
//   x [N, D] float32/float64, 1 <= k <= N - 1.
// For every row i, the k other rows j != i with the smallest squared Euclidean distance
// sum_d (x[i, d] - x[j, d])^2, accumulated in float64; ties go to the lower index j.
// Returns (sqdist [N, k] in x's dtype, ascending along each row; index [N, k] int64).
TORCH_LIBRARY_FRAGMENT(pst, m) { m.def("knn_graph(Tensor x, int k) -> (Tensor, Tensor)"); }
