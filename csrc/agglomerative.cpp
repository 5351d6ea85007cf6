#include "agglomerative.h"

#include <torch/library.h>

#include <algorithm>

#include "checks.h"

// Agglomerative clustering restricted to the edges of a sparse graph (scikit-learn's
// "structured" hierarchical clustering, AgglomerativeClustering(connectivity=...)).
//
// agglomerative_tree(x, rowptr, col, linkage, n_clusters) -> (children, distances)
//   x [N, D] float32/float64 points (distances are computed in float64);
//   rowptr [N + 1] int64, col [E] int64: a graph in CSR form, read as undirected (edge {i, j}
//   when j is in row i or i in row j; self-loops and repeats ignored);
//   linkage: "ward" | "average" | "complete" | "single"; n_clusters >= 1: stop after N - n_clusters
//   merges (1 = the full tree), or earlier when no two clusters are joined by an edge.
// Only clusters joined by an edge can merge; the pair with the smallest linkage value merges first
// (ties: the pair with the larger cluster ids, compared newer id first, last). Cluster ids as in
// scikit-learn: points 0..N-1, the m-th merge creates cluster N + m. The linkage values follow
// scikit-learn's structured trees exactly:
//   ward: n_a n_b / (n_a + n_b) * |mean_a - mean_b|^2 between adjacent clusters (reported as
//     sqrt(2 * that), scikit-learn's distances_);
//   average / complete: edge values start at the Euclidean distance; the merged cluster's value
//     towards a neighbour c is the size-weighted mean (average) or the max (complete) of its two
//     parts' values when both touch c, else the value of the one part that does;
//   single: Kruskal over the edges sorted by Euclidean distance.
// Returns children [M, 2] int64 (the two merged cluster ids, smaller first) and distances [M]
// float64, M <= N - n_clusters.
//
// On CUDA tensors both ops are a host step: the merge is sequential, so the CUDA registration
// (csrc/cuda/agglomerative_cuda.cpp) copies the inputs to the host, runs the CPU kernel and copies
// the results back to the inputs' device (this waits for the device).
//
// agglomerative_labels(children, n_samples, n_merges) -> labels [n_samples] int64
//   the flat clustering after the first n_merges merges of `children` (as made by
//   agglomerative_tree); clusters numbered 0, 1, ... in the order of their first point.
TORCH_LIBRARY_FRAGMENT(pst, m) {
  m.set_python_module("pst._meta");  // the fake kernels
  m.def("agglomerative_tree(Tensor x, Tensor rowptr, Tensor col, str linkage, int n_clusters)"
        " -> (Tensor, Tensor)");
  m.def("agglomerative_labels(Tensor children, int n_samples, int n_merges) -> Tensor");
}

namespace pst {

Linkage check_agglomerative_tree_args(const at::Tensor& x, const at::Tensor& rowptr, const at::Tensor& col,
                                      c10::string_view linkage, int64_t n_clusters) {
  check_dim(x, 2, "x", "[N, D]");
  check_floating(x, "x");
  check_dim(rowptr, 1, "rowptr", "[N + 1]");
  check_dtype(rowptr, at::kLong, "rowptr");
  check_dim(col, 1, "col", "[E]");
  check_dtype(col, at::kLong, "col");
  const int64_t n = x.size(0);
  TORCH_CHECK(rowptr.size(0) == n + 1, "rowptr should have N + 1 = ", n + 1, " elements, got ", rowptr.size(0));
  TORCH_CHECK(n_clusters >= 1 && n_clusters <= std::max<int64_t>(n, 1), "n_clusters should be in [1, N = ", n,
              "], got ", n_clusters);
  if (linkage == "ward") return Linkage::kWard;
  if (linkage == "average") return Linkage::kAverage;
  if (linkage == "complete") return Linkage::kComplete;
  if (linkage == "single") return Linkage::kSingle;
  TORCH_CHECK(false, "linkage should be one of 'ward', 'average', 'complete', 'single', got '", linkage, "'");
}

void check_agglomerative_labels_args(const at::Tensor& children, int64_t n_samples, int64_t n_merges) {
  check_dim(children, 2, "children", "[M, 2]");
  check_dtype(children, at::kLong, "children");
  TORCH_CHECK(children.size(1) == 2, "children should have 2 columns, got shape ", children.sizes());
  TORCH_CHECK(n_samples >= 0, "n_samples should be >= 0, got ", n_samples);
  TORCH_CHECK(n_merges >= 0 && n_merges <= children.size(0), "n_merges should be in [0, M = ", children.size(0),
              "], got ", n_merges);
  TORCH_CHECK(n_merges <= std::max<int64_t>(n_samples - 1, 0), "n_merges should be at most n_samples - 1 = ",
              n_samples - 1, " (each merge joins two of the n_samples points' clusters), got ", n_merges);
}

}  // namespace pst
