// CUDA launcher of knn_graph (semantics in csrc/knn_graph.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

// x [n, d] (device), 1 <= k <= n - 1; writes sqdist [n, k] (x's dtype) and index [n, k].
cudaError_t launch_knn_graph(const float* x, int64_t n, int64_t d, int64_t k, float* sqdist, int64_t* index,
                             Workspace& ws, cudaStream_t stream);
cudaError_t launch_knn_graph(const double* x, int64_t n, int64_t d, int64_t k, double* sqdist, int64_t* index,
                             Workspace& ws, cudaStream_t stream);

}  // namespace pst::gpu
