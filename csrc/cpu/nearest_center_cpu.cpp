#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>

#include "checks.h"
#include "cpu/parallel.h"
#include "nearest_center.h"
#include "interrupt.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor> nearest_center_cpu(const at::Tensor& points,
                                                      const at::Tensor& offsets,
                                                      const at::Tensor& centers,
                                                      const at::Tensor& center_offsets) {
  check_nearest_center_args(points, offsets, centers, center_offsets);
  check_offsets_cpu(offsets, points.size(0), "offsets", "points");
  check_offsets_cpu(center_offsets, centers.size(0), "center_offsets", "centers");

  auto x = points.contiguous();
  auto c = centers.contiguous();
  check_finite_cpu(x, "points");
  check_finite_cpu(c, "centers");
  const Interrupt stop;
  stop.check();
  auto off = offsets.contiguous();
  auto coff = center_offsets.contiguous();
  const int64_t n = x.size(0), d = x.size(1), g = off.size(0) - 1;
  auto index = at::empty({n}, x.options().dtype(at::kLong));
  auto dist = at::empty({n}, x.options());
  if (n == 0) return {index, dist};

  // segment of each point, from the offsets
  std::vector<int64_t> seg(n);
  const int64_t* po = off.data_ptr<int64_t>();
  const int64_t* pco = coff.data_ptr<int64_t>();
  for (int64_t s = 0; s < g; ++s)
    for (int64_t i = po[s]; i < po[s + 1]; ++i) seg[i] = s;

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "nearest_center_cpu", [&] {
    const scalar_t* px = x.data_ptr<scalar_t>();
    const scalar_t* pc = c.data_ptr<scalar_t>();
    int64_t* pi = index.data_ptr<int64_t>();
    scalar_t* pd = dist.data_ptr<scalar_t>();
    cpu::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if ((i - begin) % 256 == 0 && stop.requested()) return;
        const scalar_t* xi = px + i * d;
        int64_t best = -1;
        double best_d = std::numeric_limits<double>::infinity();
        for (int64_t k = pco[seg[i]]; k < pco[seg[i] + 1]; ++k) {
          const scalar_t* ck = pc + k * d;
          double acc = 0;
          for (int64_t j = 0; j < d; ++j) {
            const double diff = static_cast<double>(xi[j]) - static_cast<double>(ck[j]);
            acc += diff * diff;
          }
          if (acc < best_d) {
            best_d = acc;
            best = k;
          }
        }
        pi[i] = best;
        pd[i] = static_cast<scalar_t>(best_d);
      }
    });
  });
  stop.check();
  return {index, dist};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("nearest_center", &nearest_center_cpu); }

}  // namespace pst
