// CUDA launcher of mean_shift (semantics in csrc/mean_shift.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

// points [n, d] and seeds [s, d] on the device; offsets_host [g + 1] and seed_segment_host [s]
// on the host (validated: offsets non-decreasing from 0 to n, segments in [0, g)).
// Writes modes [s, d], counts [s], n_iter [s] (device). d must be <= kMeanShiftMaxDim.
constexpr int64_t kMeanShiftMaxDim = 4096;
cudaError_t launch_mean_shift(const float* points, const int64_t* offsets_host, int64_t n, int64_t d, int64_t g,
                              const float* seeds, const int64_t* seed_segment_host, int64_t s, double bandwidth,
                              int64_t max_iter, double tol, float* modes, int64_t* counts, int64_t* n_iter,
                              Workspace& ws, cudaStream_t stream);
cudaError_t launch_mean_shift(const double* points, const int64_t* offsets_host, int64_t n, int64_t d, int64_t g,
                              const double* seeds, const int64_t* seed_segment_host, int64_t s, double bandwidth,
                              int64_t max_iter, double tol, double* modes, int64_t* counts, int64_t* n_iter,
                              Workspace& ws, cudaStream_t stream);

}  // namespace pst::gpu
