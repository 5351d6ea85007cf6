#pragma once
#include <ATen/core/Tensor.h>

// Argument checks of merge_modes that do not depend on the device: shapes, dtypes and scalars, one
// message each (schema and semantics in merge_modes.cpp). The CPU kernel and the CUDA wrapper call
// them first and add only their own checks (device, values that need the data); the fake kernel in
// pst/_meta.py checks the same with torch._check.
namespace pst {
void check_merge_modes_args(const at::Tensor& centers, const at::Tensor& weights, const at::Tensor& segment,
                            double radius);
}  // namespace pst
