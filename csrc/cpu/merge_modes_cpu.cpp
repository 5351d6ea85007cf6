#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <vector>

#include "checks.h"
#include "merge_modes.h"
#include "cpu/parallel.h"
#include "interrupt.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor> merge_modes_cpu(const at::Tensor& centers, const at::Tensor& weights,
                                                   const at::Tensor& segment, double radius) {
  check_merge_modes_args(centers, weights, segment, radius);
  const int64_t k = centers.size(0), d = centers.size(1);
  check_finite_cpu(centers, "centers");
  check_finite_cpu(weights, "weights");
  auto c = centers.contiguous().to(at::kDouble);
  auto w = weights.contiguous();
  auto sg = segment.contiguous();
  const double* pc = c.data_ptr<double>();
  const double* pw = w.data_ptr<double>();
  const int64_t* ps = sg.data_ptr<int64_t>();

  std::vector<int64_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (ps[a] != ps[b]) return ps[a] < ps[b];
    if (pw[a] != pw[b]) return pw[a] > pw[b];
    for (int64_t j = 0; j < d; ++j) {
      if (pc[a * d + j] != pc[b * d + j]) return pc[a * d + j] > pc[b * d + j];
    }
    return a < b;
  });
  // segment runs in visiting order
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < k; ++i)
    if (i == 0 || ps[order[i]] != ps[order[i - 1]]) starts.push_back(i);
  starts.push_back(k);

  auto keeper = at::empty({k}, sg.options());
  auto order_t = at::empty({k}, sg.options());
  int64_t* pk = keeper.data_ptr<int64_t>();
  std::copy(order.begin(), order.end(), order_t.data_ptr<int64_t>());
  const double r2 = radius * radius;
  const Interrupt stop;
  const int64_t runs = static_cast<int64_t>(starts.size()) - 1;
  cpu::dynamic_for(runs, 1, [&](int64_t r) {
    std::vector<int64_t> kept;
    for (int64_t t = starts[r]; t < starts[r + 1]; ++t) {
      if ((t - starts[r]) % 256 == 0 && stop.requested()) return;
      const int64_t i = order[t];
      int64_t best = -1;
      double best_d = std::numeric_limits<double>::infinity();
      for (int64_t kk : kept) {
        double acc = 0;
        for (int64_t j = 0; j < d; ++j) {
          const double diff = pc[i * d + j] - pc[kk * d + j];
          acc += diff * diff;
        }
        if (acc <= r2 && acc < best_d) {
          best_d = acc;
          best = kk;
        }
      }
      if (best < 0) {
        kept.push_back(i);
        pk[i] = i;
      } else {
        pk[i] = best;
      }
    }
  }, &stop);
  return {keeper, order_t};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("merge_modes", &merge_modes_cpu); }

}  // namespace pst
