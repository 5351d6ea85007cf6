#include "checks.h"

#include <ATen/Dispatch.h>

#include <algorithm>

namespace pst {

void check_offsets_cpu(const at::Tensor& offsets, int64_t n, const char* name, const char* of) {
  check_offsets_shape(offsets, name);
  auto o = offsets.contiguous();
  const int64_t* p = o.data_ptr<int64_t>();
  const int64_t g = o.size(0) - 1;
  TORCH_CHECK(p[0] == 0, name, "[0] should be 0, got ", p[0]);
  TORCH_CHECK(p[g] == n, name, "[-1] should equal the number of ", of, " (", n, "), got ", p[g]);
  for (int64_t i = 0; i < g; ++i) {
    TORCH_CHECK(p[i + 1] >= p[i], name, " should be non-decreasing, got ", name, "[", i, "] = ", p[i],
                " > ", name, "[", i + 1, "] = ", p[i + 1]);
  }
}

namespace {

// Index of the first non-finite value of p[0..n), or -1. Blocks of branch-free tests (v - v is 0
// for finite v, NaN for NaN and Inf), then a scan of the first failing block.
template <typename T>
int64_t first_non_finite(const T* p, int64_t n) {
  constexpr int64_t kBlock = 1024;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    bool ok = true;
    for (int64_t i = b; i < e; ++i) ok &= (p[i] - p[i]) == T(0);
    if (!ok) {
      for (int64_t i = b; i < e; ++i)
        if (!std::isfinite(p[i])) return i;
    }
  }
  return -1;
}

}  // namespace

void check_finite_cpu(const at::Tensor& t, const char* name) {
  check_floating(t, name);
  auto c = t.contiguous();
  int64_t bad = -1;
  double value = 0;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "check_finite_cpu", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    bad = first_non_finite(p, c.numel());
    if (bad >= 0) value = static_cast<double>(p[bad]);
  });
  if (bad < 0) return;
  if (c.dim() == 2 && c.size(1) > 0) {
    TORCH_CHECK_VALUE(false, name, " should hold finite values (no NaN or Inf), got ", value, " at [", bad / c.size(1),
                      ", ", bad % c.size(1), "]");
  }
  TORCH_CHECK_VALUE(false, name, " should hold finite values (no NaN or Inf), got ", value, " at index ", bad);
}

}  // namespace pst
