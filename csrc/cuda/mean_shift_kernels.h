// CUDA launcher of mean_shift (semantics in csrc/mean_shift.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

// points [n, d] and seeds [s, d] on the device, and on the device too the grouping of the seeds
// (made by the caller with tensor ops, so that nothing waits for the device):
//   offsets [g + 1]      the points of segment k are offsets[k] .. offsets[k + 1] - 1;
//   order [s]            the seed indices sorted by segment, stably;
//   seg_start [g + 1]    the seeds of segment k are order[seg_start[k] .. seg_start[k + 1]);
//   group_start [g + 1]  segment k has group_start[k + 1] - group_start[k] =
//                        ceil((seg_start[k + 1] - seg_start[k]) / kMeanShiftSeedsPerBlock) groups,
//                        group_start[0] = 0;
// max_groups (host) >= group_start[g], e.g. ceil(s / kMeanShiftSeedsPerBlock) + min(g, s): the
// blocks launched. Writes modes [s, d], counts [s], n_iter [s] (device). d <= kMeanShiftMaxDim.
constexpr int64_t kMeanShiftMaxDim = 4096;
constexpr int64_t kMeanShiftSeedsPerBlock = 4;
cudaError_t launch_mean_shift(const float* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                              const float* seeds, const int64_t* order, const int64_t* seg_start,
                              const int64_t* group_start, int64_t max_groups, int64_t s, double bandwidth,
                              int64_t max_iter, double tol, float* modes, int64_t* counts, int64_t* n_iter,
                              Workspace& ws, cudaStream_t stream);
cudaError_t launch_mean_shift(const double* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                              const double* seeds, const int64_t* order, const int64_t* seg_start,
                              const int64_t* group_start, int64_t max_groups, int64_t s, double bandwidth,
                              int64_t max_iter, double tol, double* modes, int64_t* counts, int64_t* n_iter,
                              Workspace& ws, cudaStream_t stream);

}  // namespace pst::gpu
