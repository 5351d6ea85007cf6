#pragma once
#include <ATen/core/Tensor.h>

// Argument checks of morph_refine that do not depend on the device: shapes, dtypes and scalars, one
// message each (schema and semantics in morph_refine.cpp). The CPU kernel and the CUDA wrapper call
// them first and add only their own checks (device, values that need the data); the fake kernel in
// pst/_meta.py checks the same with torch._check.
namespace pst {
void check_morph_refine_args(const at::Tensor& instances, int64_t open_radius, int64_t close_radius,
                             int64_t min_size, int64_t connectivity);
}  // namespace pst
