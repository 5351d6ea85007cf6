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

// Union-find with atomicMin linking (Playne and Hawick): the larger root goes below the smaller,
// so every root is the smallest index of its set. Reads go to L2 (__ldcg), where the atomics land,
// so that a block never follows a stale parent out of its own L1.
__device__ __forceinline__ int32_t find_root(const int32_t* p, int32_t i) {
  int32_t r = __ldcg(p + i);
  while (r != i) {
    i = r;
    r = __ldcg(p + i);
  }
  return r;
}

__device__ __forceinline__ void unite(int32_t* p, int32_t a, int32_t b) {
  bool done = false;
  while (!done) {
    a = find_root(p, a);
    b = find_root(p, b);
    if (a < b) {
      const int32_t old = atomicMin(p + b, a);
      done = old == b;
      b = old;
    } else if (b < a) {
      const int32_t old = atomicMin(p + a, b);
      done = old == a;
      a = old;
    } else {
      done = true;
    }
  }
}

}  // namespace pst::gpu
