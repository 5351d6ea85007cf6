#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "checks.h"
#include "sample_anchors.h"
#include "cpu/parallel.h"
#include "rng.h"

namespace pst {
namespace {

at::Tensor sample_anchors_cpu(const at::Tensor& weights, const at::Tensor& coords, const at::Tensor& offsets,
                              int64_t k, double min_distance, int64_t seed) {
  check_sample_anchors_args(weights, coords, offsets, k, min_distance);
  check_offsets_cpu(offsets, weights.size(0), "offsets", "weights");
  check_finite_cpu(coords, "coords");
  auto w = weights.contiguous().to(at::kDouble);
  auto xy = coords.contiguous().to(at::kDouble);
  auto off = offsets.contiguous();
  const int64_t g = off.size(0) - 1, c = xy.size(1);
  const double* pw = w.data_ptr<double>();
  const double* px = xy.data_ptr<double>();
  const int64_t* po = off.data_ptr<int64_t>();
  for (int64_t i = 0; i < w.size(0); ++i)
    TORCH_CHECK(finite_nonnegative(pw[i]), "weights should be finite and >= 0, got weights[", i, "] = ",
                pw[i]);

  auto out = at::full({g, k}, -1, off.options());
  int64_t* pout = out.data_ptr<int64_t>();
  const double md2 = min_distance * min_distance;
  const uint64_t useed = static_cast<uint64_t>(seed);
  cpu::dynamic_for(g, 1, [&](int64_t s) {
    const int64_t b = po[s], e = po[s + 1];
    std::vector<std::pair<double, int64_t>> keys;
    keys.reserve(e - b);
    for (int64_t i = b; i < e; ++i) {
      if (pw[i] <= 0) continue;
      const double u = uniform_open01(useed, static_cast<uint64_t>(i - b));  // counter local to the segment
      keys.push_back({std::log(pw[i]) - std::log(-std::log(u)), i});
    }
    auto by_key = [](const std::pair<double, int64_t>& a, const std::pair<double, int64_t>& b2) {
      return a.first > b2.first || (a.first == b2.first && a.second < b2.second);
    };
    // Most segments accept their first k candidates: sort lazily, a block at a time.
    int64_t taken = 0;
    size_t sorted = 0;
    int64_t* row = pout + s * k;
    for (size_t t = 0; t < keys.size() && taken < k; ++t) {
      if (t == sorted) {
        const size_t next = std::min(keys.size(), std::max<size_t>(2 * sorted, static_cast<size_t>(4 * k + 16)));
        std::partial_sort(keys.begin() + sorted, keys.begin() + next, keys.end(), by_key);
        sorted = next;
      }
      const int64_t i = keys[t].second;
      bool ok = true;
      for (int64_t a = 0; a < taken && ok; ++a) {
        const int64_t j = row[a];
        double acc = 0;
        for (int64_t q = 0; q < c; ++q) {
          const double diff = px[i * c + q] - px[j * c + q];
          acc += diff * diff;
        }
        ok = acc >= md2;
      }
      if (ok) row[taken++] = i;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("sample_anchors", &sample_anchors_cpu); }

}  // namespace pst
