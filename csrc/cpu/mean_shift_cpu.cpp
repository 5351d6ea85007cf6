#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "checks.h"
#include "mean_shift.h"
#include "cpu/kdtree.h"
#include "cpu/parallel.h"
#include "interrupt.h"

namespace pst {
namespace {

template <typename T>
std::vector<cpu::KdTree<T>> build_forest(const T* pts, int64_t d, const int64_t* off, int64_t g,
                                         const Interrupt& stop) {
  std::vector<cpu::KdTree<T>> trees(g);
  std::vector<int64_t> rows(off[g]);
  for (int64_t i = 0; i < off[g]; ++i) rows[i] = i;
  cpu::dynamic_for(g, 1, [&](int64_t s) {
    trees[s].build(pts, d, rows.data() + off[s], off[s + 1] - off[s]);
  }, &stop);
  return trees;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mean_shift_cpu(const at::Tensor& points, const at::Tensor& offsets,
                                                              const at::Tensor& seeds,
                                                              const at::Tensor& seed_segment, double bandwidth,
                                                              int64_t max_iter, double tol) {
  check_mean_shift_args(points, offsets, seeds, seed_segment, bandwidth, max_iter, tol);
  check_offsets_cpu(offsets, points.size(0), "offsets", "points");

  const Interrupt stop;
  stop.check();
  auto x = points.contiguous();
  auto sd = seeds.contiguous();
  check_finite_cpu(x, "points");
  check_finite_cpu(sd, "seeds");
  auto off = offsets.contiguous();
  auto seg = seed_segment.contiguous();
  const int64_t d = x.size(1), s = sd.size(0), g = off.size(0) - 1;
  const int64_t* pseg = seg.data_ptr<int64_t>();
  for (int64_t i = 0; i < s; ++i)
    TORCH_CHECK(pseg[i] >= 0 && pseg[i] < g, "seed_segment[", i, "] = ", pseg[i], " is not a segment index in [0, ", g,
                ")");

  auto modes = at::empty_like(sd);
  auto counts = at::empty({s}, sd.options().dtype(at::kLong));
  auto iters = at::empty({s}, sd.options().dtype(at::kLong));
  if (s == 0) return {modes, counts, iters};
  const double r2 = bandwidth * bandwidth;

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mean_shift_cpu", [&] {
    const auto trees = build_forest<scalar_t>(x.data_ptr<scalar_t>(), d, off.data_ptr<int64_t>(), g, stop);
    const scalar_t* ps = sd.data_ptr<scalar_t>();
    scalar_t* pm = modes.data_ptr<scalar_t>();
    int64_t* pc = counts.data_ptr<int64_t>();
    int64_t* pi = iters.data_ptr<int64_t>();
    cpu::dynamic_for(s, 4, [&](int64_t i) {
      std::vector<double> mean(d), old(d), sum(d);
      for (int64_t j = 0; j < d; ++j) mean[j] = static_cast<double>(ps[i * d + j]);
      const auto& tree = trees[pseg[i]];
      int64_t it = 0, cnt = 0;
      double wsum = 0;
      // The loop of scikit-learn's _mean_shift_single_seed: query, move, test, count.
      for (;;) {
        tree.ball_sum(mean.data(), r2, sum.data(), wsum, cnt);
        if (cnt == 0) break;
        double shift = 0;
        for (int64_t j = 0; j < d; ++j) {
          old[j] = mean[j];
          mean[j] = sum[j] / static_cast<double>(cnt);
          const double diff = mean[j] - old[j];
          shift += diff * diff;
        }
        if (std::sqrt(shift) <= tol || it == max_iter || stop.requested()) break;
        ++it;
      }
      for (int64_t j = 0; j < d; ++j) pm[i * d + j] = static_cast<scalar_t>(mean[j]);
      pc[i] = cnt;
      pi[i] = it;
    }, &stop);
  });
  return {modes, counts, iters};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("mean_shift", &mean_shift_cpu); }

}  // namespace pst
