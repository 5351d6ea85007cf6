#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "checks.h"
#include "grid_mean_shift.h"
#include "cpu/kdtree.h"
#include "cpu/parallel.h"
#include "cpu/simd.h"
#include "interrupt.h"

namespace pst {
namespace {

constexpr int64_t kCopyGrain = int64_t{1} << 16;  // label copies per thread at the least: a region costs more

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The occupied cells of K positions: cell_of[k] in [0, C), and per cell its integer
// coordinates, segment, payload sum (sum of weight * position) and weight.
struct Cells {
  int64_t count = 0;
  std::vector<int64_t> cell_of;
  std::vector<int32_t> coords;  // [C, d]
  std::vector<int64_t> seg;     // [C]
  std::vector<double> sum;      // [C, d]
  std::vector<double> weight;   // [C]
};

// P: position type (the input dtype on the first pass, double afterwards).
template <typename P>
Cells bin_positions(const P* pos, const double* w, const int64_t* seg, int64_t k, int64_t d, double h) {
  Cells out;
  std::vector<int32_t> key(k * d);
  std::vector<uint64_t> hash(k);
  // Cell coordinates and hashes, in parallel. Coordinates must fit int32.
  std::atomic<bool> overflow{false};
  std::vector<uint64_t> mult(d);
  for (int64_t j = 0; j < d; ++j) mult[j] = mix64(static_cast<uint64_t>(j) + 1) | 1;
  cpu::parallel_for(0, k, 2048, [&](int64_t b, int64_t e) {
    if (!cpu::cell_coords(pos + b * d, (e - b) * d, h, &key[b * d])) {
      overflow = true;
      return;
    }
    // hash: a random linear form of (segment, cell coordinates), mixed once at the end
    for (int64_t i = b; i < e; ++i) {
      uint64_t hv = static_cast<uint64_t>(seg[i]) * 0x9e3779b97f4a7c15ULL;
      for (int64_t j = 0; j < d; ++j) hv += static_cast<uint64_t>(static_cast<uint32_t>(key[i * d + j])) * mult[j];
      hash[i] = mix64(hv);
    }
  });
  TORCH_CHECK(!overflow, "grid_mean_shift: points / cell_size gives grid coordinates beyond the int32 range "
              "(|x| / cell_size must stay below 2.1e9); rescale the data or use a larger bandwidth");
  // Open addressing: slot -> cell id (-1 empty). Each cell's hash, segment and key sit in
  // compact per-cell arrays, and the table grows with the number of cells (not points), so
  // that lookups stay in cache when many points share few cells.
  int64_t cap = 1024;
  std::vector<int64_t> slot(cap, -1);
  std::vector<uint64_t> chash;
  out.cell_of.resize(k);
  auto grow = [&]() {
    cap <<= 1;
    slot.assign(cap, -1);
    for (int64_t c = 0; c < static_cast<int64_t>(chash.size()); ++c) {
      uint64_t p = chash[c] & (cap - 1);
      while (slot[p] >= 0) p = (p + 1) & (cap - 1);
      slot[p] = c;
    }
  };
  for (int64_t i = 0; i < k; ++i) {
    const uint64_t hv = hash[i];
    const int32_t* ki = &key[i * d];
    uint64_t p = hv & (cap - 1);
    for (;;) {
      const int64_t c = slot[p];
      if (c < 0) {
        const int64_t nc = static_cast<int64_t>(chash.size());
        slot[p] = nc;
        out.cell_of[i] = nc;
        chash.push_back(hv);
        out.seg.push_back(seg[i]);
        out.coords.insert(out.coords.end(), ki, ki + d);
        if (2 * (nc + 1) > cap) grow();
        break;
      }
      if (chash[c] == hv && out.seg[c] == seg[i] && std::memcmp(&out.coords[c * d], ki, d * sizeof(int32_t)) == 0) {
        out.cell_of[i] = c;
        break;
      }
      p = (p + 1) & (cap - 1);
    }
  }
  const int64_t nc = static_cast<int64_t>(chash.size());
  out.count = nc;
  out.sum.assign(nc * d, 0.0);
  out.weight.assign(nc, 0.0);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t c = out.cell_of[i];
    const double wi = w ? w[i] : 1.0;
    out.weight[c] += wi;
    double* s = &out.sum[c * d];
    for (int64_t j = 0; j < d; ++j) s[j] += wi * static_cast<double>(pos[i * d + j]);
  }
  return out;
}

// One pass: the new position of every occupied cell (the mean over its 3^d block).
std::vector<double> block_means(const Cells& cells, int64_t d, int64_t nseg, const Interrupt& stop) {
  const int64_t nc = cells.count;
  // cells of each segment
  std::vector<int64_t> count(nseg + 1, 0);
  for (int64_t c = 0; c < nc; ++c) ++count[cells.seg[c] + 1];
  for (int64_t s = 0; s < nseg; ++s) count[s + 1] += count[s];
  std::vector<int64_t> rows(nc), fill(count.begin(), count.end() - 1);
  for (int64_t c = 0; c < nc; ++c) rows[fill[cells.seg[c]]++] = c;
  std::vector<cpu::KdTree<int32_t>> trees(nseg);
  cpu::dynamic_for(nseg, 1, [&](int64_t s) {
    trees[s].build(cells.coords.data(), d, rows.data() + count[s], count[s + 1] - count[s], cells.sum.data(),
                   cells.weight.data());
  }, &stop);
  std::vector<double> out(nc * d);
  cpu::dynamic_for(nc, 64, [&](int64_t c) {
    std::vector<int32_t> lo(d), hi(d);
    std::vector<double> sum(d);
    for (int64_t j = 0; j < d; ++j) {
      lo[j] = cells.coords[c * d + j] - 1;
      hi[j] = cells.coords[c * d + j] + 1;
    }
    double wsum = 0;
    int64_t cnt = 0;
    trees[cells.seg[c]].box_sum(lo.data(), hi.data(), sum.data(), wsum, cnt);
    for (int64_t j = 0; j < d; ++j) out[c * d + j] = sum[j] / wsum;  // wsum >= own weight > 0
  }, &stop);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> grid_mean_shift_cpu(
    const at::Tensor& points, const at::Tensor& offsets, double cell_size, int64_t max_iter, double tol) {
  check_grid_mean_shift_args(points, offsets, cell_size, max_iter, tol);
  check_offsets_cpu(offsets, points.size(0), "offsets", "points");
  const Interrupt stop;
  auto x = points.contiguous();
  check_finite_cpu(x, "points");
  auto off = offsets.contiguous();
  const int64_t n = x.size(0), d = x.size(1), g = off.size(0) - 1;
  const int64_t* po = off.data_ptr<int64_t>();

  auto labels = at::empty({n}, off.options());
  auto n_iter = at::zeros({}, off.options());
  if (n == 0) {
    return {at::empty({0, d}, x.options()), at::empty({0}, off.options()), at::empty({0}, off.options()), labels,
            n_iter};
  }
  std::vector<int64_t> seg0(n);
  for (int64_t s = 0; s < g; ++s)
    for (int64_t i = po[s]; i < po[s + 1]; ++i) seg0[i] = s;
  int64_t* pl = labels.data_ptr<int64_t>();

  std::vector<double> pos;  // current positions [K, d] (after the first pass)
  std::vector<double> wts;  // their weights
  std::vector<int64_t> seg;
  int64_t it = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_mean_shift_cpu", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    for (it = 1; it <= max_iter; ++it) {
      stop.check();  // between passes (block_means also stops inside one)
      const bool first = it == 1;
      const int64_t k = first ? n : static_cast<int64_t>(wts.size());
      Cells cells = first ? bin_positions<scalar_t>(px, nullptr, seg0.data(), n, d, cell_size)
                          : bin_positions<double>(pos.data(), wts.data(), seg.data(), k, d, cell_size);
      std::vector<double> next = block_means(cells, d, g, stop);
      // largest move of any position in this pass
      double shift2 = 0;
      for (int64_t i = 0; i < k; ++i) {
        const double* a = &next[cells.cell_of[i] * d];
        double acc = 0;
        for (int64_t j = 0; j < d; ++j) {
          const double p = first ? static_cast<double>(px[i * d + j]) : pos[i * d + j];
          acc += (a[j] - p) * (a[j] - p);
        }
        shift2 = std::max(shift2, acc);
      }
      if (first) {
        cpu::parallel_for(0, n, kCopyGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) pl[i] = cells.cell_of[i];
        });
      } else {
        cpu::parallel_for(0, n, kCopyGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) pl[i] = cells.cell_of[pl[i]];
        });
      }
      pos = std::move(next);
      wts = std::move(cells.weight);
      seg = std::move(cells.seg);
      if (std::sqrt(shift2) <= tol) break;
    }
  });
  it = std::min(it, max_iter);
  const int64_t m = static_cast<int64_t>(wts.size());
  auto modes = at::from_blob(pos.data(), {m, d}, at::TensorOptions().dtype(at::kDouble)).to(x.scalar_type());
  auto weights = at::empty({m}, off.options());
  auto mseg = at::empty({m}, off.options());
  for (int64_t c = 0; c < m; ++c) {
    weights.data_ptr<int64_t>()[c] = static_cast<int64_t>(std::llround(wts[c]));
    mseg.data_ptr<int64_t>()[c] = seg[c];
  }
  n_iter.fill_(it);
  if (x.scalar_type() == at::kDouble) modes = modes.clone();  // from_blob memory dies with `pos`
  return {modes, weights, mseg, labels, n_iter};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("grid_mean_shift", &grid_mean_shift_cpu); }

}  // namespace pst
