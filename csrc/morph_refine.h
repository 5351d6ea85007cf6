#pragma once
#include <ATen/ATen.h>

// The device-independent argument checks of morph_refine (schema in morph_refine.cpp), shared by the
// CPU and CUDA kernels.
namespace pst {
void check_morph_refine_args(const at::Tensor& instances, int64_t open_radius, int64_t close_radius,
                             int64_t min_size, int64_t connectivity);
}  // namespace pst
