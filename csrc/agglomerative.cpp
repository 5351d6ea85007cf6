#include <torch/library.h>

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
  m.def("agglomerative_tree(Tensor x, Tensor rowptr, Tensor col, str linkage, int n_clusters)"
        " -> (Tensor, Tensor)");
  m.def("agglomerative_labels(Tensor children, int n_samples, int n_merges) -> Tensor");
}
