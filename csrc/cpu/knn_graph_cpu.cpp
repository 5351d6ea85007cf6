#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "checks.h"
#include "knn_graph.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"
#include "interrupt.h"

namespace pst {
namespace {

constexpr int64_t kQueryTile = 16;     // queries that share one pass over a chunk of the data
constexpr int64_t kChunkBlocks = 128;  // data blocks (of cpu::kBlock rows) per chunk: ~1k rows
constexpr int64_t kTreeMaxDim = 16;    // up to this many columns, a kd-tree (past it, kd-trees prune little)
constexpr int64_t kTreeLeavesPerChunk = 16;     // leaves of queries per chunk of the parallel loop
constexpr int64_t kTreeMinLeavesPerThread = 32;  // leaves (64-128 queries each) a thread must get, else fewer threads

// Sorted top-k list of one query: by (dist, index) ascending. idx < 0 = empty slot.
inline bool better_than_last(const double* dist, const int64_t* idx, int64_t k, double dd, int64_t j) {
  return idx[k - 1] < 0 || dd < dist[k - 1] || (dd == dist[k - 1] && j < idx[k - 1]);
}

inline void push_candidate(double* dist, int64_t* idx, int64_t k, double dd, int64_t j) {
  if (!better_than_last(dist, idx, k, dd, j)) return;
  int64_t p = k - 1;
  while (p > 0 && (idx[p - 1] < 0 || dist[p - 1] > dd || (dist[p - 1] == dd && idx[p - 1] > j))) {
    dist[p] = dist[p - 1];
    idx[p] = idx[p - 1];
    --p;
  }
  dist[p] = dd;
  idx[p] = j;
}

// Exact kNN by a kd-tree, for few dimensions: median splits on the widest axis down to
// leaves of at most kLeafRows rows (rows all equal, which no split separates, make one leaf of
// any size), each leaf's rows packed in blocks of kBlock rows as the brute force packs them,
// so that a leaf scan is the same sqdist_blocks call: distances, and
// with them ties and results, are the brute force's bit for bit. A subtree is skipped only
// when the squared distance from the query to its box exceeds the current k-th distance
// (box_dist rounds monotonically below every row's distance, see kdtree.h, and the build has
// no FMA contraction), so nothing the brute force would return is missed.
template <typename scalar_t>
class KnnTree {
 public:
  // larger leaves scan more rows, but with vector loads; smaller ones cost more traversal (in 8 dims,
  // 128 rows was the fastest of 8..256)
  static constexpr int64_t kLeafRows = 16 * cpu::kBlock;

  KnnTree(const scalar_t* px, int64_t n, int64_t d) : d_(d), perm_(n) {
    std::iota(perm_.begin(), perm_.end(), 0);
    nodes_.reserve(2 * (n / kLeafRows + 1) * 2);
    nodes_.push_back({0, n, -1, -1, -1});
    int64_t nblocks = 0;
    for (size_t ni = 0; ni < nodes_.size(); ++ni) {  // breadth first: children appended
      const int64_t b = nodes_[ni].begin, e = nodes_[ni].end;
      std::vector<double> lo(d, std::numeric_limits<double>::infinity()), hi(d, -lo[0]);
      for (int64_t i = b; i < e; ++i)
        for (int64_t j = 0; j < d; ++j) {
          const double v = static_cast<double>(px[perm_[i] * d + j]);
          lo[j] = std::min(lo[j], v);
          hi[j] = std::max(hi[j], v);
        }
      lo_.insert(lo_.end(), lo.begin(), lo.end());
      hi_.insert(hi_.end(), hi.begin(), hi.end());
      int64_t axis = 0;
      for (int64_t j = 1; j < d; ++j)
        if (hi[j] - lo[j] > hi[axis] - lo[axis]) axis = j;
      if (e - b <= kLeafRows || !(hi[axis] > lo[axis])) {  // leaf (or all rows equal: any size)
        nodes_[ni].block = nblocks;
        max_leaf_ = std::max(max_leaf_, e - b);
        nblocks += (e - b + cpu::kBlock - 1) / cpu::kBlock;
        continue;
      }
      const int64_t mid = b + (e - b) / 2;
      std::nth_element(perm_.begin() + b, perm_.begin() + mid, perm_.begin() + e,
                       [&](int64_t u, int64_t v) { return px[u * d + axis] < px[v * d + axis]; });
      nodes_[ni].left = static_cast<int64_t>(nodes_.size());
      nodes_[ni].right = nodes_[ni].left + 1;
      nodes_.push_back({b, mid, -1, -1, -1});
      nodes_.push_back({mid, e, -1, -1, -1});
    }
    blocks_.assign(nblocks * d * cpu::kBlock, std::numeric_limits<scalar_t>::max());
    for (const Node& nd : nodes_) {
      if (nd.left >= 0) continue;
      scalar_t* base = blocks_.data() + nd.block * d * cpu::kBlock;
      for (int64_t i = 0; i < nd.end - nd.begin; ++i)
        for (int64_t j = 0; j < d; ++j)
          base[((i / cpu::kBlock) * d + j) * cpu::kBlock + i % cpu::kBlock] = px[perm_[nd.begin + i] * d + j];
    }
  }

  // Leaves in tree order (their rows are neighbours in space: queries taken leaf by leaf reuse the cache).
  std::vector<int64_t> leaves() const {
    std::vector<int64_t> out;
    std::vector<int64_t> stack = {0};
    while (!stack.empty()) {
      const int64_t ni = stack.back();
      stack.pop_back();
      if (nodes_[ni].left < 0) {
        out.push_back(ni);
      } else {
        stack.push_back(nodes_[ni].right);
        stack.push_back(nodes_[ni].left);
      }
    }
    return out;
  }

  int64_t begin(int64_t leaf) const { return nodes_[leaf].begin; }
  // rows of the largest leaf, rounded up to whole blocks: the size of query()'s buffer
  int64_t buffer_size() const { return (max_leaf_ + cpu::kBlock - 1) / cpu::kBlock * cpu::kBlock; }
  int64_t end(int64_t leaf) const { return nodes_[leaf].end; }
  int64_t row(int64_t pos) const { return perm_[pos]; }

  // The k nearest rows other than `self` into the sorted lists (dist, idx), which may hold
  // candidates already. buf: buffer_size() doubles.
  void query(const double* q, int64_t self, int64_t k, double* dist, int64_t* idx, double* buf) const {
    std::pair<double, int64_t> stack[128];
    int top = 0;
    stack[top++] = {0.0, 0};
    while (top > 0) {
      const auto [bound, ni] = stack[--top];
      if (idx[k - 1] >= 0 && bound > dist[k - 1]) continue;
      const Node& nd = nodes_[ni];
      if (nd.left < 0) {
        const int64_t len = nd.end - nd.begin;
        cpu::sqdist_blocks(blocks_.data() + nd.block * d_ * cpu::kBlock, (len + cpu::kBlock - 1) / cpu::kBlock, d_,
                           q, buf);
        // rows at or below the k-th distance (ties: push_candidate orders by index)
        double limit = idx[k - 1] < 0 ? std::numeric_limits<double>::infinity() : dist[k - 1];
        for (int64_t i = 0; i < len; ++i) {
          if (!(buf[i] <= limit)) continue;
          const int64_t j = perm_[nd.begin + i];
          if (j == self) continue;
          push_candidate(dist, idx, k, buf[i], j);
          if (idx[k - 1] >= 0) limit = dist[k - 1];
        }
        continue;
      }
      const double l = box_dist(nd.left, q), r = box_dist(nd.right, q);
      if (l <= r) {  // nearer child on top of the stack
        stack[top++] = {r, nd.right};
        stack[top++] = {l, nd.left};
      } else {
        stack[top++] = {l, nd.left};
        stack[top++] = {r, nd.right};
      }
    }
  }

 private:
  struct Node {
    int64_t begin, end, left, right, block;  // rows [begin, end) of perm_; children; leaf's first block
  };

  double box_dist(int64_t ni, const double* q) const {
    const double* lo = lo_.data() + ni * d_;
    const double* hi = hi_.data() + ni * d_;
    double s = 0;
    for (int64_t j = 0; j < d_; ++j) {
      const double a = lo[j] - q[j], b = q[j] - hi[j];
      const double g = a > 0 ? a : (b > 0 ? b : 0.0);
      s += g * g;
    }
    return s;
  }

  int64_t d_;
  int64_t max_leaf_ = 0;
  std::vector<int64_t> perm_;
  std::vector<Node> nodes_;
  std::vector<double> lo_, hi_;  // [nodes, d] boxes
  std::vector<scalar_t> blocks_;
};

template <typename scalar_t>
void knn_tree_impl(const scalar_t* px, int64_t n, int64_t d, int64_t k, scalar_t* out_dist, int64_t* out_idx,
                   const Interrupt& stop) {
  const KnnTree<scalar_t> tree(px, n, d);
  const std::vector<int64_t> leaves = tree.leaves();
  const int64_t nl = static_cast<int64_t>(leaves.size());
  cpu::dynamic_for(nl, kTreeLeavesPerChunk, [&](int64_t t) {
    const int64_t leaf = leaves[t];
    std::vector<double> q(d), best(k), buf(tree.buffer_size());
    std::vector<int64_t> bidx(k);
    for (int64_t pos = tree.begin(leaf); pos < tree.end(leaf); ++pos) {
      const int64_t i = tree.row(pos);
      for (int64_t j = 0; j < d; ++j) q[j] = static_cast<double>(px[i * d + j]);
      std::fill(best.begin(), best.end(), std::numeric_limits<double>::infinity());
      std::fill(bidx.begin(), bidx.end(), -1);
      tree.query(q.data(), i, k, best.data(), bidx.data(), buf.data());
      for (int64_t r = 0; r < k; ++r) {
        out_dist[i * k + r] = static_cast<scalar_t>(best[r]);
        out_idx[i * k + r] = bidx[r];
      }
    }
  }, &stop, kTreeMinLeavesPerThread);
}

template <typename scalar_t>
void knn_graph_impl(const scalar_t* px, int64_t n, int64_t d, int64_t k, scalar_t* out_dist, int64_t* out_idx,
                    const Interrupt& stop) {
  using cpu::kBlock;
  // rows packed in blocks of kBlock rows, each block column-major [d][kBlock] (padding rows = 0,
  // skipped by index)
  const int64_t nblk = (n + kBlock - 1) / kBlock;
  std::vector<scalar_t> blocks(nblk * d * kBlock, scalar_t(0));
  cpu::parallel_for(0, nblk, 256, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t r = 0; r < kBlock && b * kBlock + r < n; ++r)
        for (int64_t j = 0; j < d; ++j) blocks[(b * d + j) * kBlock + r] = px[(b * kBlock + r) * d + j];
  });

  const int64_t ntiles = (n + kQueryTile - 1) / kQueryTile;
  cpu::dynamic_for(ntiles, 1, [&](int64_t t) {
    const int64_t q0 = t * kQueryTile, q1 = std::min(n, q0 + kQueryTile), nq = q1 - q0;
    std::vector<double> q(nq * d);
    for (int64_t a = 0; a < nq; ++a)
      for (int64_t j = 0; j < d; ++j) q[a * d + j] = static_cast<double>(px[(q0 + a) * d + j]);
    std::vector<double> best(nq * k, std::numeric_limits<double>::infinity());
    std::vector<int64_t> bidx(nq * k, -1);
    std::vector<double> buf(kChunkBlocks * kBlock);
    for (int64_t c0 = 0; c0 < nblk; c0 += kChunkBlocks) {
      const int64_t nb = std::min(kChunkBlocks, nblk - c0);
      const int64_t row0 = c0 * kBlock, row1 = std::min(n, row0 + nb * kBlock);
      for (int64_t a = 0; a < nq; ++a) {
        cpu::sqdist_blocks(blocks.data() + c0 * d * kBlock, nb, d, q.data() + a * d, buf.data());
        double* bd = best.data() + a * k;
        int64_t* bi = bidx.data() + a * k;
        const int64_t self = q0 + a;
        for (int64_t j = row0; j < row1; ++j) {
          const double dd = buf[j - row0];
          if (j != self && better_than_last(bd, bi, k, dd, j)) push_candidate(bd, bi, k, dd, j);
        }
      }
    }
    for (int64_t a = 0; a < nq; ++a)
      for (int64_t r = 0; r < k; ++r) {
        out_dist[(q0 + a) * k + r] = static_cast<scalar_t>(best[a * k + r]);
        out_idx[(q0 + a) * k + r] = bidx[a * k + r];
      }
  }, &stop);
}

std::tuple<at::Tensor, at::Tensor> knn_graph_cpu(const at::Tensor& x, int64_t k) {
  check_knn_graph_args(x, k);
  const int64_t n = x.size(0), d = x.size(1);
  auto xc = x.contiguous();
  check_finite_cpu(xc, "x");
  const Interrupt stop;
  stop.check();
  auto dist = at::empty({n, k}, xc.options());
  auto idx = at::empty({n, k}, xc.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "knn_graph_cpu", [&] {
    if (d <= kTreeMaxDim)
      knn_tree_impl<scalar_t>(xc.data_ptr<scalar_t>(), n, d, k, dist.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), stop);
    else
      knn_graph_impl<scalar_t>(xc.data_ptr<scalar_t>(), n, d, k, dist.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), stop);
  });
  return {dist, idx};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("knn_graph", &knn_graph_cpu); }

}  // namespace pst
