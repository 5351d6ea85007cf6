#include "checks.h"

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

}  // namespace pst
