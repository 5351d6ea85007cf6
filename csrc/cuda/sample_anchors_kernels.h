// CUDA launcher of sample_anchors (semantics in csrc/sample_anchors.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

// weights [n] (finite, >= 0), coords [n, c], offsets [g + 1] (device, validated); out [g, k]
// pre-filled with -1. n must fit int32.
cudaError_t launch_sample_anchors(const float* weights, const float* coords, const int64_t* offsets, int64_t n,
                                  int64_t c, int64_t g, int64_t k, double min_distance, uint64_t seed, int64_t* out,
                                  Workspace& ws, cudaStream_t stream);
cudaError_t launch_sample_anchors(const double* weights, const double* coords, const int64_t* offsets, int64_t n,
                                  int64_t c, int64_t g, int64_t k, double min_distance, uint64_t seed, int64_t* out,
                                  Workspace& ws, cudaStream_t stream);

}  // namespace pst::gpu
