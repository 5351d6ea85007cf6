// CUDA kernels of nearest_center: one thread per point, the centres of its segment read
// through the read-only cache. Same arithmetic as the CPU kernel (float64, no FMA, centres
// in index order, strict `<`), so index and distance equal the CPU results bit for bit.
#include "cuda/nearest_center_kernels.h"

#include <math_constants.h>

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

template <typename T>
__global__ void nearest_center_kernel(const T* __restrict__ x, const int64_t* __restrict__ off,
                                      const T* __restrict__ c, const int64_t* __restrict__ coff, int64_t n,
                                      int64_t d, int64_t g, int64_t* __restrict__ index, T* __restrict__ dist) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t s = segment_of(off, g, i);
    const T* xi = x + i * d;
    int64_t best = -1;
    double best_d = CUDART_INF;
    const int64_t k1 = __ldg(coff + s + 1);
    for (int64_t k = __ldg(coff + s); k < k1; ++k) {
      const T* ck = c + k * d;
      double acc = 0;
      for (int64_t j = 0; j < d; ++j)
        acc = add_sqdiff(acc, static_cast<double>(xi[j]), static_cast<double>(__ldg(ck + j)));
      if (acc < best_d) {
        best_d = acc;
        best = k;
      }
    }
    index[i] = best;
    dist[i] = static_cast<T>(best_d);
  }
}

template <typename T>
cudaError_t launch(const T* points, const int64_t* offsets, const T* centers, const int64_t* center_offsets,
                   int64_t n, int64_t d, int64_t g, int64_t* index, T* sqdist, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  nearest_center_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(points, offsets, centers, center_offsets, n, d,
                                                                   g, index, sqdist);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_nearest_center(const float* points, const int64_t* offsets, const float* centers,
                                  const int64_t* center_offsets, int64_t n, int64_t d, int64_t g, int64_t* index,
                                  float* sqdist, cudaStream_t stream) {
  return launch<float>(points, offsets, centers, center_offsets, n, d, g, index, sqdist, stream);
}

cudaError_t launch_nearest_center(const double* points, const int64_t* offsets, const double* centers,
                                  const int64_t* center_offsets, int64_t n, int64_t d, int64_t g, int64_t* index,
                                  double* sqdist, cudaStream_t stream) {
  return launch<double>(points, offsets, centers, center_offsets, n, d, g, index, sqdist, stream);
}

}  // namespace pst::gpu
