#pragma once
#include <ATen/core/Tensor.h>

// Argument checks of nearest_center that do not depend on the device: shapes, dtypes and scalars, one
// message each (schema and semantics in nearest_center.cpp). The CPU kernel and the CUDA wrapper call
// them first and add only their own checks (device, values that need the data); the fake kernel in
// pst/_meta.py checks the same with torch._check.
namespace pst {
void check_nearest_center_args(const at::Tensor& points, const at::Tensor& offsets, const at::Tensor& centers,
                               const at::Tensor& center_offsets);
}  // namespace pst
