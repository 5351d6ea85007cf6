#pragma once
#include <ATen/core/Tensor.h>

// Argument checks of sample_anchors that do not depend on the device: shapes, dtypes and scalars, one
// message each (schema and semantics in sample_anchors.cpp). The CPU kernel and the CUDA wrapper call
// them first and add only their own checks (device, values that need the data); the fake kernel in
// pst/_meta.py checks the same with torch._check.
namespace pst {
void check_sample_anchors_args(const at::Tensor& weights, const at::Tensor& coords, const at::Tensor& offsets,
                               int64_t k, double min_distance);
}  // namespace pst
