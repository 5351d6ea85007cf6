#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
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

// Sorted top-k list of one query: dist ascending, ties in index order (candidates come in
// ascending j, so a strict comparison keeps the lower index first). idx < 0 = empty slot.
inline void push_candidate(double* dist, int64_t* idx, int64_t k, double dd, int64_t j) {
  if (!(dd < dist[k - 1]) && idx[k - 1] >= 0) return;
  int64_t p = k - 1;
  while (p > 0 && (dist[p - 1] > dd || idx[p - 1] < 0)) {
    dist[p] = dist[p - 1];
    idx[p] = idx[p - 1];
    --p;
  }
  dist[p] = dd;
  idx[p] = j;
}

template <typename scalar_t>
void knn_graph_impl(const scalar_t* px, int64_t n, int64_t d, int64_t k, scalar_t* out_dist, int64_t* out_idx,
                    const Interrupt& stop) {
  using cpu::kBlock;
  // rows packed in blocks of kBlock rows, each block column-major [d][kBlock] (padding rows = 0,
  // skipped by index)
  const int64_t nblk = (n + kBlock - 1) / kBlock;
  std::vector<scalar_t> blocks(nblk * d * kBlock, scalar_t(0));
  at::parallel_for(0, nblk, 256, [&](int64_t b0, int64_t b1) {
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
          if ((dd < bd[k - 1] || bi[k - 1] < 0) && j != self) push_candidate(bd, bi, k, dd, j);
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
    knn_graph_impl<scalar_t>(xc.data_ptr<scalar_t>(), n, d, k, dist.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), stop);
  });
  return {dist, idx};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("knn_graph", &knn_graph_cpu); }

}  // namespace pst
