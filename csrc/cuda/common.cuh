// Helpers shared by the CUDA kernels (pure CUDA, no torch headers).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

// Return the error of a CUDA runtime / cub call from the enclosing launcher.
#define PST_CUDA_TRY(expr)                     \
  do {                                         \
    const cudaError_t pst_err_ = (expr);       \
    if (pst_err_ != cudaSuccess) return pst_err_; \
  } while (0)

namespace pst::gpu {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items (at least 1, capped: the loops stride).
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

// The segment s with off[s] <= i < off[s + 1] (off: g + 1 non-decreasing offsets; the last
// such s when empty segments share the boundary).
__device__ __forceinline__ int64_t segment_of(const int64_t* off, int64_t g, int64_t i) {
  int64_t lo = 0, hi = g;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (off[mid] <= i)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// acc + (a - b)^2 rounded after every operation (no fused multiply-add), the order and
// rounding of the CPU kernels' `diff = a - b; acc += diff * diff`, so that distance tests
// give the same answers on both devices.
__device__ __forceinline__ double add_sqdiff(double acc, double a, double b) {
  const double diff = __dsub_rn(a, b);
  return __dadd_rn(acc, __dmul_rn(diff, diff));
}

}  // namespace pst::gpu
