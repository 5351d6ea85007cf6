// CUDA kernels of sample_anchors.
//
// 1. Gumbel keys log(w) - log(-log(u)), u from rng.h's counter-based generator of (seed, row
//    index inside the segment), so the draws are the CPU kernel's; rows of weight 0 get -inf.
// 2. cub's stable segmented sort by key, descending: rows of equal keys stay in index order,
//    the CPU's tie-break; -inf rows go last.
// 3. Acceptance, one block per segment: a batch of candidates is tested against the anchors
//    taken so far in parallel, then one thread walks the batch in order and tests the
//    survivors against the anchors taken within the batch. The accepted rows are the CPU's.
// The keys go through CUDA's log (error <= 1 ulp) instead of the C library's, so two rows
// whose keys agree to an ulp or two may be drawn in the other order than on the CPU.
#include "cuda/sample_anchors_kernels.h"

#include <cub/device/device_segmented_sort.cuh>
#include <math_constants.h>

#include "cuda/common.cuh"
#include "rng.h"

namespace pst::gpu {
namespace {

constexpr int kBatch = 128;

template <typename T>
__global__ void keys_kernel(const T* __restrict__ w, const int64_t* __restrict__ off, int64_t n, int64_t g,
                            uint64_t seed, double* __restrict__ keys, int64_t* __restrict__ rows) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double wi = static_cast<double>(w[i]);
    double key = -CUDART_INF;
    if (wi > 0) {
      const int64_t b = off[segment_of(off, g, i)];
      const double u = uniform_open01(seed, static_cast<uint64_t>(i - b));
      key = __dsub_rn(log(wi), log(-log(u)));
    }
    keys[i] = key;
    rows[i] = i;
  }
}

template <typename T>
__global__ void accept_kernel(const double* __restrict__ keys, const int64_t* __restrict__ rows,
                              const int64_t* __restrict__ off, const T* __restrict__ xy, int64_t c, int64_t k,
                              double md2, int64_t* __restrict__ out) {
  __shared__ int64_t taken;
  __shared__ int stop;
  __shared__ signed char ok[kBatch];
  const int64_t s = blockIdx.x;
  const int64_t b = off[s], e = off[s + 1];
  int64_t* row = out + s * k;
  if (threadIdx.x == 0) {
    taken = 0;
    stop = 0;
  }
  __syncthreads();
  auto far_enough = [&](int64_t i, int64_t j) {
    double acc = 0;
    for (int64_t q = 0; q < c; ++q)
      acc = add_sqdiff(acc, static_cast<double>(xy[i * c + q]), static_cast<double>(xy[j * c + q]));
    return acc >= md2;
  };
  for (int64_t base = b; base < e; base += kBatch) {
    const int64_t before = taken;
    if (before >= k || stop) break;  // uniform: read after a barrier
    const int64_t p = base + threadIdx.x;
    const bool valid = p < e && keys[p] != -CUDART_INF;
    bool good = valid;
    if (valid) {
      const int64_t i = rows[p];
      for (int64_t a = 0; a < before && good; ++a) good = far_enough(i, row[a]);
    }
    ok[threadIdx.x] = good ? 1 : (valid ? 0 : -1);
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t t = taken;
      for (int q = 0; q < kBatch && t < k; ++q) {
        if (ok[q] < 0) {  // past the segment or at the weight-0 rows: nothing more to draw
          stop = 1;
          break;
        }
        if (ok[q] == 0) continue;
        const int64_t i = rows[base + q];
        bool good2 = true;
        for (int64_t a = before; a < t && good2; ++a) good2 = far_enough(i, row[a]);
        if (good2) row[t++] = i;
      }
      taken = t;
    }
    __syncthreads();
  }
}

template <typename T>
cudaError_t launch(const T* weights, const T* coords, const int64_t* offsets, int64_t n, int64_t c, int64_t g,
                   int64_t k, double min_distance, uint64_t seed, int64_t* out, Workspace& ws, cudaStream_t stream) {
  if (n == 0 || g == 0 || k == 0) return cudaSuccess;
  double* keys = ws.alloc<double>(n);
  double* keys_sorted = ws.alloc<double>(n);
  int64_t* rows = ws.alloc<int64_t>(n);
  int64_t* rows_sorted = ws.alloc<int64_t>(n);
  keys_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(weights, offsets, n, g, seed, keys, rows);
  PST_CUDA_TRY(cudaGetLastError());
  size_t temp_bytes = 0;
  PST_CUDA_TRY(cub::DeviceSegmentedSort::StableSortPairsDescending(
      nullptr, temp_bytes, keys, keys_sorted, rows, rows_sorted, static_cast<int>(n), static_cast<int>(g), offsets,
      offsets + 1, stream));
  void* temp = ws.allocate(temp_bytes);
  PST_CUDA_TRY(cub::DeviceSegmentedSort::StableSortPairsDescending(
      temp, temp_bytes, keys, keys_sorted, rows, rows_sorted, static_cast<int>(n), static_cast<int>(g), offsets,
      offsets + 1, stream));
  accept_kernel<T><<<static_cast<unsigned>(g), kBatch, 0, stream>>>(keys_sorted, rows_sorted, offsets, coords, c, k,
                                                                    min_distance * min_distance, out);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_sample_anchors(const float* weights, const float* coords, const int64_t* offsets, int64_t n,
                                  int64_t c, int64_t g, int64_t k, double min_distance, uint64_t seed, int64_t* out,
                                  Workspace& ws, cudaStream_t stream) {
  return launch<float>(weights, coords, offsets, n, c, g, k, min_distance, seed, out, ws, stream);
}

cudaError_t launch_sample_anchors(const double* weights, const double* coords, const int64_t* offsets, int64_t n,
                                  int64_t c, int64_t g, int64_t k, double min_distance, uint64_t seed, int64_t* out,
                                  Workspace& ws, cudaStream_t stream) {
  return launch<double>(weights, coords, offsets, n, c, g, k, min_distance, seed, out, ws, stream);
}

}  // namespace pst::gpu
