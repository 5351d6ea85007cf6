#pragma once
#include <ATen/core/Tensor.h>

// Argument checks of mean_shift that do not depend on the device: shapes, dtypes and scalars, one
// message each (schema and semantics in mean_shift.cpp). The CPU kernel and the CUDA wrapper call them
// first and add only their own checks (device, values that need the data); the fake kernel in
// pst/_meta.py checks the same with torch._check.
namespace pst {
void check_mean_shift_args(const at::Tensor& points, const at::Tensor& offsets, const at::Tensor& seeds,
                           const at::Tensor& seed_segment, double bandwidth, int64_t max_iter, double tol);
}  // namespace pst
