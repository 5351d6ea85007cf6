// CUDA launcher of connected_components (semantics in csrc/connected_components.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

// mask [b, h, w] (device, bytes 0/1), h * w < 2^31; connectivity 4 or 8; writes labels [b, h, w]
// int32: 0 on background, per image 1..n in raster order of the components' first pixels.
cudaError_t launch_connected_components(const uint8_t* mask, int64_t b, int64_t h, int64_t w, int connectivity,
                                        int32_t* labels, Workspace& ws, cudaStream_t stream);

}  // namespace pst::gpu
