// CUDA launcher of nearest_center (semantics in csrc/nearest_center.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pst::gpu {

// points [n, d], offsets [g + 1], centers [k, d], center_offsets [g + 1] (device, validated);
// writes index [n] and sqdist [n]. Squared distances in float64 as on the CPU; ties to the
// lower centre index.
cudaError_t launch_nearest_center(const float* points, const int64_t* offsets, const float* centers,
                                  const int64_t* center_offsets, int64_t n, int64_t d, int64_t g, int64_t* index,
                                  float* sqdist, cudaStream_t stream);
cudaError_t launch_nearest_center(const double* points, const int64_t* offsets, const double* centers,
                                  const int64_t* center_offsets, int64_t n, int64_t d, int64_t g, int64_t* index,
                                  double* sqdist, cudaStream_t stream);

}  // namespace pst::gpu
