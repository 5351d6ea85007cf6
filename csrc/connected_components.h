#pragma once
#include <ATen/core/Tensor.h>

// Argument checks of connected_components that do not depend on the device: shapes, dtypes and
// scalars, one message each (schema and semantics in connected_components.cpp). The CPU kernel and the
// CUDA wrapper call them first and add only their own checks (device, values that need the data); the
// fake kernel in pst/_meta.py checks the same with torch._check.
namespace pst {
void check_connected_components_args(const at::Tensor& mask, int64_t connectivity);
}  // namespace pst
