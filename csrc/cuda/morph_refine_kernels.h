// CUDA launcher of morph_refine (semantics in csrc/morph_refine.cpp). Plain C++ header.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/workspace.h"

namespace pst::gpu {

struct MorphParams {
  int64_t open_r, close_r;  // >= 0, already clipped to h + w (as the CPU kernel does)
  bool disk, fill_holes;
  int64_t min_size;  // >= 0
  bool largest, conn8;
};

// Scratch of one persistent block of the refinement kernel: 10 bytes per pixel of an image
// (one instance's crop is at most the whole image). The launcher runs at most as many blocks as
// fit in this budget (and at least one).
constexpr int64_t kMorphScratchBudget = int64_t{768} << 20;

// instances [b, h, w] (device), h * w < 2^31, h and w < 2^29; writes out [b, h, w]. Negative ids
// are treated as background and set *negative (device int32, may be nullptr for unsigned inputs)
// to 1; the caller turns that into an error on the device. No host synchronisation: every size
// that depends on the data (instances, crops) stays on the device.
cudaError_t launch_morph_refine(const uint8_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                uint8_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream);
cudaError_t launch_morph_refine(const int8_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p, int8_t* out,
                                int32_t* negative, Workspace& ws, cudaStream_t stream);
cudaError_t launch_morph_refine(const int16_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                int16_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream);
cudaError_t launch_morph_refine(const int32_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                int32_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream);
cudaError_t launch_morph_refine(const int64_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                int64_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream);

}  // namespace pst::gpu
