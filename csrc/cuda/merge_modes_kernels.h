// CUDA launcher of merge_modes (semantics in csrc/merge_modes.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

// centers [k, d], weights [k] float64, segment [k] int64 (device); writes keeper [k] and order [k].
// k must fit int32.
cudaError_t launch_merge_modes(const float* centers, const double* weights, const int64_t* segment, int64_t k,
                               int64_t d, double radius, int64_t* keeper, int64_t* order, Workspace& ws,
                               cudaStream_t stream);
cudaError_t launch_merge_modes(const double* centers, const double* weights, const int64_t* segment, int64_t k,
                               int64_t d, double radius, int64_t* keeper, int64_t* order, Workspace& ws,
                               cudaStream_t stream);

}  // namespace pst::gpu
