// CUDA launcher of grid_mean_shift (semantics in csrc/grid_mean_shift.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"
#include "interrupt.h"

namespace pst::gpu {

constexpr int64_t kGridMeanShiftMaxDim = 64;

// Outputs that depend on the data: device pointers into the workspace (valid while it lives).
struct GridMeanShiftResult {
  int64_t m = 0;                      // number of modes
  int64_t n_iter = 0;
  bool overflow = false;              // a grid coordinate left the int32 range: nothing else is set
  const double* modes = nullptr;      // [m, d] float64, numbered like the CPU kernel's
  const int64_t* weights = nullptr;   // [m]
  const int64_t* segment = nullptr;   // [m]
};

// points [n, d] (device), offsets [g + 1] (device, validated), 1 <= n < 2^31, g < 2^31,
// d <= kGridMeanShiftMaxDim; writes labels [n] (device). Synchronises with the stream once per pass
// (the number of occupied cells and the largest move are needed on the host). With `stop`, no
// further pass starts once an interrupt is requested: the caller then throws (stop->check()).
cudaError_t launch_grid_mean_shift(const float* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                                   double cell_size, int64_t max_iter, double tol, int64_t* labels,
                                   GridMeanShiftResult& result, Workspace& ws, cudaStream_t stream,
                                   const Interrupt* stop = nullptr);
cudaError_t launch_grid_mean_shift(const double* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                                   double cell_size, int64_t max_iter, double tol, int64_t* labels,
                                   GridMeanShiftResult& result, Workspace& ws, cudaStream_t stream,
                                   const Interrupt* stop = nullptr);

}  // namespace pst::gpu
