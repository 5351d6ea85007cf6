// CUDA kernels of knn_graph: exact brute force, one thread per query. The data rows stream
// through shared memory in tiles (column-major); every thread keeps its sorted top-k list in
// global scratch laid out [k][n] (consecutive queries at consecutive addresses), with the
// current k-th distance in a register so that most candidates cost one comparison.
// Candidates come in ascending row order and the insertion is the CPU kernel's (same
// float64 arithmetic without FMA, same comparisons), so distances and indices equal the CPU's.
#include "cuda/knn_graph_kernels.h"

#include <math_constants.h>

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

constexpr int kQueries = 128;  // threads (queries) per block

template <typename T>
__global__ void __launch_bounds__(kQueries)
    knn_kernel(const T* __restrict__ x, int64_t n, int64_t d, int64_t k, int tile, double* __restrict__ bd,
               int64_t* __restrict__ bi) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* tp = reinterpret_cast<T*>(smem_raw);  // [d][tile]
  const int64_t q = blockIdx.x * static_cast<int64_t>(kQueries) + threadIdx.x;
  const bool live = q < n;
  // slot r of query q at [r * n + q]
  if (live)
    for (int64_t r = 0; r < k; ++r) {
      bd[r * n + q] = CUDART_INF;
      bi[r * n + q] = -1;
    }
  double worst = CUDART_INF;  // bd[k - 1]
  bool full = false;          // bi[k - 1] >= 0
  for (int64_t t0 = 0; t0 < n; t0 += tile) {
    const int len = static_cast<int>(n - t0 < tile ? n - t0 : tile);
    __syncthreads();
    const T* src = x + t0 * d;
    for (int64_t e = threadIdx.x; e < len * d; e += kQueries) tp[(e % d) * tile + e / d] = src[e];
    __syncthreads();
    if (!live) continue;
    for (int p = 0; p < len; ++p) {
      const int64_t j = t0 + p;
      double dd = 0;
      for (int64_t c = 0; c < d; ++c)
        dd = add_sqdiff(dd, static_cast<double>(tp[c * tile + p]), static_cast<double>(x[q * d + c]));
      if (!((dd < worst || !full) && j != q)) continue;
      // push_candidate of the CPU kernel
      if (!(dd < worst) && full) continue;
      int64_t pos = k - 1;
      while (pos > 0) {
        const double pd = bd[(pos - 1) * n + q];
        const int64_t pi = bi[(pos - 1) * n + q];
        if (!(pd > dd || pi < 0)) break;
        bd[pos * n + q] = pd;
        bi[pos * n + q] = pi;
        --pos;
      }
      bd[pos * n + q] = dd;
      bi[pos * n + q] = j;
      worst = bd[(k - 1) * n + q];
      full = bi[(k - 1) * n + q] >= 0;
    }
  }
}

template <typename T>
__global__ void write_kernel(const double* __restrict__ bd, const int64_t* __restrict__ bi, int64_t n, int64_t k,
                             T* __restrict__ dist, int64_t* __restrict__ idx) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n * k;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = e / k, r = e % k;
    dist[e] = static_cast<T>(bd[r * n + q]);
    idx[e] = bi[r * n + q];
  }
}

template <typename T>
cudaError_t launch(const T* x, int64_t n, int64_t d, int64_t k, T* sqdist, int64_t* index, Workspace& ws,
                   cudaStream_t stream) {
  if (n == 0 || k <= 0) return cudaSuccess;
  double* bd = ws.alloc<double>(n * k);
  int64_t* bi = ws.alloc<int64_t>(n * k);
  const int64_t row_bytes = (d > 0 ? d : 1) * static_cast<int64_t>(sizeof(T));
  int64_t tile = 32768 / row_bytes;
  if (tile > 256) tile = 256;
  if (tile < 1) return cudaErrorInvalidValue;  // rows wider than 32 KiB
  const size_t smem = static_cast<size_t>(tile * d * static_cast<int64_t>(sizeof(T)));
  const unsigned blocks = static_cast<unsigned>((n + kQueries - 1) / kQueries);
  knn_kernel<T><<<blocks, kQueries, smem, stream>>>(x, n, d, k, static_cast<int>(tile), bd, bi);
  PST_CUDA_TRY(cudaGetLastError());
  write_kernel<T><<<blocks_for(n * k), kThreads, 0, stream>>>(bd, bi, n, k, sqdist, index);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_knn_graph(const float* x, int64_t n, int64_t d, int64_t k, float* sqdist, int64_t* index,
                             Workspace& ws, cudaStream_t stream) {
  return launch<float>(x, n, d, k, sqdist, index, ws, stream);
}

cudaError_t launch_knn_graph(const double* x, int64_t n, int64_t d, int64_t k, double* sqdist, int64_t* index,
                             Workspace& ws, cudaStream_t stream) {
  return launch<double>(x, n, d, k, sqdist, index, ws, stream);
}

}  // namespace pst::gpu
