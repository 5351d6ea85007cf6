// A kd-tree over the rows of an [n, d] array, with per-node aggregates.
//
// Every node stores its bounding box, the number of rows under it, the sum of their
// weights and the sum of their payload vectors. Range queries (an L2 ball or an
// axis-aligned box) then add a whole node in O(d) when its box lies inside the range,
// and only look at single rows in the nodes that straddle the range's border. This is
// what makes a flat-kernel mean-shift step cost O(border) instead of O(neighbours).
//
// Payload: by default the row itself times its weight, so ball_sum returns the
// weighted sum of the points in the ball (a mean-shift step). The grid mean shift passes
// its own payload (the sum of the positions that fell into a cell) with integer cell
// coordinates as the tree's coordinates.
//
// Exactness: a node is taken whole only when its box distance test proves that every
// row in it passes the row test, and both tests use the same arithmetic in the same
// order, so the result equals a brute-force loop over all rows (see the comment at
// box_dist). Header-only; CPU only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/simd.h"

namespace pst::cpu {

template <typename T>
class KdTree {
 public:
  static constexpr int64_t kLeafSize = std::is_same_v<T, int32_t> ? 64 : 128;  // cell trees: vector box scans

  struct Node {
    int64_t begin, end;  // rows [begin, end) of the reordered arrays
    int64_t left, right;  // children, -1 for a leaf
  };

  KdTree() = default;

  // Builds over rows[0..m) of pts (row-major, d columns). payload: nullptr (use w * x) or
  // a row-major [n, d] double array indexed like pts; weights: nullptr (all 1) or [n].
  void build(const T* pts, int64_t d, const int64_t* rows, int64_t m, const double* payload = nullptr,
             const double* weights = nullptr) {
    d_ = d;
    m_ = m;
    plain_ = payload == nullptr && weights == nullptr;
    nodes_.clear();
    ids_.assign(rows, rows + m);
    pts_.resize(m * d);
    pay_.resize(m * d);
    w_.resize(m);
    if (m == 0) return;
    // Work on a copy in the original order, then reorder as the tree is built.
    std::vector<int64_t> order(m);
    std::iota(order.begin(), order.end(), 0);
    nodes_.reserve(2 * (m / kLeafSize + 1));
    lo_.clear();
    hi_.clear();
    // Build iteratively: (node index, begin, end) on a stack; children are appended.
    nodes_.push_back({0, m, -1, -1});
    std::vector<int64_t> stack = {0};
    std::vector<T> nlo(d), nhi(d);
    lo_.resize(d);
    hi_.resize(d);
    while (!stack.empty()) {
      const int64_t ni = stack.back();
      stack.pop_back();
      const int64_t b = nodes_[ni].begin, e = nodes_[ni].end;
      bbox(pts, rows, order.data() + b, e - b, nlo.data(), nhi.data());
      std::copy(nlo.begin(), nlo.end(), lo_.begin() + ni * d);
      std::copy(nhi.begin(), nhi.end(), hi_.begin() + ni * d);
      if (e - b <= kLeafSize) continue;
      int64_t split = 0;
      double spread = -1;
      for (int64_t j = 0; j < d; ++j) {
        const double s = static_cast<double>(nhi[j]) - static_cast<double>(nlo[j]);
        if (s > spread) {
          spread = s;
          split = j;
        }
      }
      if (spread <= 0) continue;  // all rows equal: keep as a (large) leaf
      const int64_t mid = b + (e - b) / 2;
      std::nth_element(order.begin() + b, order.begin() + mid, order.begin() + e,
                       [&](int64_t x, int64_t y) {
                         return pts[rows[x] * d + split] < pts[rows[y] * d + split];
                       });
      const int64_t left = static_cast<int64_t>(nodes_.size());
      nodes_.push_back({b, mid, -1, -1});
      nodes_.push_back({mid, e, -1, -1});
      nodes_[ni].left = left;
      nodes_[ni].right = left + 1;
      lo_.resize(nodes_.size() * d);
      hi_.resize(nodes_.size() * d);
      stack.push_back(left + 1);
      stack.push_back(left);
    }
    // Reorder rows into tree order.
    for (int64_t i = 0; i < m; ++i) {
      const int64_t r = rows[order[i]];
      ids_[i] = r;
      const double wi = weights ? weights[r] : 1.0;
      w_[i] = wi;
      for (int64_t j = 0; j < d; ++j) {
        const T x = pts[r * d + j];
        pts_[i * d + j] = x;
        pay_[i * d + j] = payload ? payload[r * d + j] : wi * static_cast<double>(x);
      }
    }
    // Floating-point and int32 (cell) trees also keep each leaf's rows in blocks of kBlock rows,
    // column-major within a block (simd.h), so that ball and box queries scan leaves with vector
    // loads. Padding rows hold the type's largest value, outside every query.
    const int64_t nn = static_cast<int64_t>(nodes_.size());
    if constexpr (kBlocked) {
      leaf_block_.assign(nn, -1);
      int64_t nblocks = 0;
      for (int64_t ni = 0; ni < nn; ++ni) {
        if (nodes_[ni].left >= 0) continue;
        leaf_block_[ni] = nblocks;
        nblocks += (nodes_[ni].end - nodes_[ni].begin + kBlock - 1) / kBlock;
      }
      blocks_.assign(nblocks * kBlock * d, std::numeric_limits<T>::max());
      for (int64_t ni = 0; ni < nn; ++ni) {
        const Node& nd = nodes_[ni];
        if (nd.left >= 0) continue;
        T* base = &blocks_[leaf_block_[ni] * kBlock * d];
        for (int64_t i = 0; i < nd.end - nd.begin; ++i)
          for (int64_t j = 0; j < d; ++j)
            base[(i / kBlock) * kBlock * d + j * kBlock + i % kBlock] = pts_[(nd.begin + i) * d + j];
      }
      // Integer (cell) trees answer box queries: their payload and weight go into blocks too,
      // as [d + 1][kBlock] per block (weight last), zero on padding rows.
      if constexpr (std::is_same_v<T, int32_t>) {
        payblocks_.assign(nblocks * kBlock * (d + 1), 0.0);
        for (int64_t ni = 0; ni < nn; ++ni) {
          const Node& nd = nodes_[ni];
          if (nd.left >= 0) continue;
          double* base = &payblocks_[leaf_block_[ni] * kBlock * (d + 1)];
          for (int64_t i = 0; i < nd.end - nd.begin; ++i) {
            double* blk = base + (i / kBlock) * kBlock * (d + 1) + i % kBlock;
            for (int64_t j = 0; j < d; ++j) blk[j * kBlock] = pay_[(nd.begin + i) * d + j];
            blk[d * kBlock] = w_[nd.begin + i];
          }
        }
      }
    }
    // Aggregates, children before parents (children always have larger indices).
    sum_.assign(nn * d, 0.0);
    wsum_.assign(nn, 0.0);
    for (int64_t ni = nn - 1; ni >= 0; --ni) {
      const Node& nd = nodes_[ni];
      double* s = &sum_[ni * d];
      if (nd.left < 0) {
        double ws = 0;
        for (int64_t i = nd.begin; i < nd.end; ++i) {
          ws += w_[i];
          for (int64_t j = 0; j < d; ++j) s[j] += pay_[i * d + j];
        }
        wsum_[ni] = ws;
      } else {
        for (int64_t j = 0; j < d; ++j) s[j] = sum_[nd.left * d + j] + sum_[nd.right * d + j];
        wsum_[ni] = wsum_[nd.left] + wsum_[nd.right];
      }
    }
  }

  int64_t size() const { return m_; }
  int64_t dim() const { return d_; }

  // Sum of payloads and weights, and the row count, over rows x with ||x - q||^2 <= r2.
  void ball_sum(const double* q, double r2, double* sum, double& wsum, int64_t& count) const {
    static_assert(std::is_floating_point_v<T>, "ball queries need a floating-point tree");
    std::fill(sum, sum + d_, 0.0);
    wsum = 0;
    count = 0;
    if (m_ == 0) return;
    std::vector<double> vsum(plain_ ? d_ * kBlock : 0, 0.0);  // lane-wise partial sums
    int64_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top > 0) {
      const int64_t ni = stack[--top];
      const Node& nd = nodes_[ni];
      double dmin, dmax;
      box_dist(ni, q, dmin, dmax);
      if (dmin > r2) continue;
      if (dmax <= r2) {
        add_node(ni, sum, wsum, count);
        continue;
      }
      if (nd.left < 0) {
        scan_leaf_ball(ni, q, r2, vsum.data(), sum, wsum, count);
        continue;
      }
      stack[top++] = nd.right;
      stack[top++] = nd.left;
    }
    if (plain_) reduce_lanes(vsum.data(), d_, sum);
  }

  // Same over rows with lo[j] <= x[j] <= hi[j] for every j.
  void box_sum(const T* qlo, const T* qhi, double* sum, double& wsum, int64_t& count) const {
    static_assert(std::is_same_v<T, int32_t>, "box queries need an int32 (cell) tree");
    std::fill(sum, sum + d_, 0.0);
    wsum = 0;
    count = 0;
    if (m_ == 0) return;
    std::vector<double> vsum((d_ + 1) * kBlock, 0.0);  // lane-wise partial sums, weight last
    int64_t stack[128];
    int top = 0;
    stack[top++] = 0;
    while (top > 0) {
      const int64_t ni = stack[--top];
      const Node& nd = nodes_[ni];
      const T* blo = &lo_[ni * d_];
      const T* bhi = &hi_[ni * d_];
      bool disjoint = false, inside = true;
      for (int64_t j = 0; j < d_; ++j) {
        if (bhi[j] < qlo[j] || blo[j] > qhi[j]) {
          disjoint = true;
          break;
        }
        inside = inside && blo[j] >= qlo[j] && bhi[j] <= qhi[j];
      }
      if (disjoint) continue;
      if (inside) {
        add_node(ni, sum, wsum, count);
        continue;
      }
      if (nd.left < 0) {
        const int64_t nblk = (nd.end - nd.begin + kBlock - 1) / kBlock;
        const int64_t b0 = leaf_block_[ni];
        count += box_blocks(&blocks_[b0 * kBlock * d_], &payblocks_[b0 * kBlock * (d_ + 1)], nblk, d_, qlo, qhi,
                            vsum.data());
        continue;
      }
      stack[top++] = nd.right;
      stack[top++] = nd.left;
    }
    reduce_lanes(vsum.data(), d_, sum);
    double wl[1] = {0.0};
    reduce_lanes(vsum.data() + d_ * kBlock, 1, wl);
    wsum += wl[0];
  }

  // Nearest row to q: returns its original row id (or -1 for an empty tree); sets best to
  // its squared distance. Ties go to the lower original row id.
  int64_t nearest(const double* q, double& best) const {
    best = std::numeric_limits<double>::infinity();
    int64_t best_id = -1;
    if (m_ == 0) return best_id;
    std::pair<double, int64_t> stack[128];
    int top = 0;
    stack[top++] = {0.0, 0};
    while (top > 0) {
      const auto [bound, ni] = stack[--top];
      if (bound > best) continue;
      const Node& nd = nodes_[ni];
      if (nd.left < 0) {
        for (int64_t i = nd.begin; i < nd.end; ++i) {
          const double dd = row_dist(i, q);
          if (dd < best || (dd == best && ids_[i] < best_id)) {
            best = dd;
            best_id = ids_[i];
          }
        }
        continue;
      }
      double l0, l1, r0, r1;
      box_dist(nd.left, q, l0, l1);
      box_dist(nd.right, q, r0, r1);
      // push the farther child first so the nearer one is searched first
      if (l0 <= r0) {
        if (r0 <= best) stack[top++] = {r0, nd.right};
        if (l0 <= best) stack[top++] = {l0, nd.left};
      } else {
        if (l0 <= best) stack[top++] = {l0, nd.left};
        if (r0 <= best) stack[top++] = {r0, nd.right};
      }
    }
    return best_id;
  }

  // The k nearest rows to q other than row `self` (pass -1 to keep all), sorted by
  // (distance, row id). Writes up to k (id, sqdist) pairs, returns how many.
  int64_t knn(const double* q, int64_t k, int64_t self, int64_t* out_id, double* out_d) const {
    if (m_ == 0 || k <= 0) return 0;
    // max-heap on (dist, id) of the current best k
    std::vector<std::pair<double, int64_t>> heap;
    heap.reserve(k + 1);
    auto worse = [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& b) {
      return a.first < b.first || (a.first == b.first && a.second < b.second);
    };
    auto bound = [&]() {
      return static_cast<int64_t>(heap.size()) < k ? std::numeric_limits<double>::infinity()
                                                    : heap.front().first;
    };
    std::pair<double, int64_t> stack[128];
    int top = 0;
    stack[top++] = {0.0, 0};
    while (top > 0) {
      const auto [bd, ni] = stack[--top];
      if (bd > bound()) continue;
      const Node& nd = nodes_[ni];
      if (nd.left < 0) {
        for (int64_t i = nd.begin; i < nd.end; ++i) {
          if (ids_[i] == self) continue;
          const std::pair<double, int64_t> cand{row_dist(i, q), ids_[i]};
          if (static_cast<int64_t>(heap.size()) < k) {
            heap.push_back(cand);
            std::push_heap(heap.begin(), heap.end(), worse);
          } else if (worse(cand, heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), worse);
            heap.back() = cand;
            std::push_heap(heap.begin(), heap.end(), worse);
          }
        }
        continue;
      }
      double l0, l1, r0, r1;
      box_dist(nd.left, q, l0, l1);
      box_dist(nd.right, q, r0, r1);
      if (l0 <= r0) {
        stack[top++] = {r0, nd.right};
        stack[top++] = {l0, nd.left};
      } else {
        stack[top++] = {l0, nd.left};
        stack[top++] = {r0, nd.right};
      }
    }
    std::sort_heap(heap.begin(), heap.end(), worse);
    for (size_t i = 0; i < heap.size(); ++i) {
      out_d[i] = heap[i].first;
      out_id[i] = heap[i].second;
    }
    return static_cast<int64_t>(heap.size());
  }

 private:
  static void bbox_init(T* lo, T* hi, int64_t d) {
    for (int64_t j = 0; j < d; ++j) {
      lo[j] = std::numeric_limits<T>::max();
      hi[j] = std::numeric_limits<T>::lowest();
    }
  }

  void bbox(const T* pts, const int64_t* rows, const int64_t* idx, int64_t cnt, T* lo, T* hi) const {
    bbox_init(lo, hi, d_);
    for (int64_t i = 0; i < cnt; ++i) {
      const T* x = pts + rows[idx[i]] * d_;
      for (int64_t j = 0; j < d_; ++j) {
        lo[j] = std::min(lo[j], x[j]);
        hi[j] = std::max(hi[j], x[j]);
      }
    }
  }

  // Squared distance from q to the nearest and farthest point of a node's box. For every
  // row x inside the box, |fl(x_j - q_j)| lies between the per-axis terms used here,
  // because rounding is monotone; squaring and summing in the same order keeps the
  // inequality, so dmin <= row_dist(x) <= dmax holds exactly in floating point.
  void box_dist(int64_t ni, const double* q, double& dmin, double& dmax) const {
    const T* lo = &lo_[ni * d_];
    const T* hi = &hi_[ni * d_];
    dmin = 0;
    dmax = 0;
    for (int64_t j = 0; j < d_; ++j) {
      const double a = static_cast<double>(lo[j]) - q[j];  // <= 0 when q is above lo
      const double b = static_cast<double>(hi[j]) - q[j];
      const double near = a > 0 ? a : (b < 0 ? b : 0.0);
      const double far = std::max(-a, b);
      dmin += near * near;
      dmax += far * far;
    }
  }

  // The rows of a leaf within the ball; same arithmetic order as row_dist. Plain trees (unit
  // weights, payload = the row) sum on the blocks directly, lane-wise into vsum.
  void scan_leaf_ball(int64_t ni, const double* q, double r2, double* vsum, double* sum, double& wsum,
                      int64_t& count) const {
    const Node& nd = nodes_[ni];
    const int64_t len = nd.end - nd.begin;
    const int64_t nblk = (len + kBlock - 1) / kBlock;
    const T* base = &blocks_[leaf_block_[ni] * kBlock * d_];
    if (plain_) {
      const int64_t n = ball_blocks(base, nblk, d_, q, r2, vsum);
      wsum += static_cast<double>(n);
      count += n;
      return;
    }
    std::vector<double> acc(nblk * kBlock);
    sqdist_blocks(base, nblk, d_, q, acc.data());
    for (int64_t i = 0; i < len; ++i)
      if (acc[i] <= r2) add_row(nd.begin + i, sum, wsum, count);
  }

  double row_dist(int64_t i, const double* q) const {
    const T* x = &pts_[i * d_];
    double acc = 0;
    for (int64_t j = 0; j < d_; ++j) {
      const double diff = static_cast<double>(x[j]) - q[j];
      acc += diff * diff;
    }
    return acc;
  }

  void add_node(int64_t ni, double* sum, double& wsum, int64_t& count) const {
    const double* s = &sum_[ni * d_];
    for (int64_t j = 0; j < d_; ++j) sum[j] += s[j];
    wsum += wsum_[ni];
    count += nodes_[ni].end - nodes_[ni].begin;
  }

  void add_row(int64_t i, double* sum, double& wsum, int64_t& count) const {
    const double* p = &pay_[i * d_];
    for (int64_t j = 0; j < d_; ++j) sum[j] += p[j];
    wsum += w_[i];
    count += 1;
  }

  int64_t d_ = 0, m_ = 0;
  bool plain_ = false;  // unit weights, payload = the row
  std::vector<Node> nodes_;
  std::vector<T> lo_, hi_;       // [nodes, d] boxes
  std::vector<double> sum_;      // [nodes, d] payload sums
  std::vector<double> wsum_;     // [nodes]
  std::vector<T> pts_;           // [m, d] rows in tree order
  static constexpr bool kBlocked = std::is_floating_point_v<T> || std::is_same_v<T, int32_t>;
  std::vector<T> blocks_;        // leaves' rows in blocks of kBlock (simd.h), floating or int32 T
  std::vector<double> payblocks_;  // int32 trees: payload and weight per block, [d + 1][kBlock]
  std::vector<int64_t> leaf_block_;  // [nodes] first block of each leaf
  std::vector<double> pay_;      // [m, d] payload in tree order
  std::vector<double> w_;        // [m]
  std::vector<int64_t> ids_;     // [m] original row ids
};

}  // namespace pst::cpu
