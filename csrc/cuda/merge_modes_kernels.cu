// CUDA kernels of merge_modes.
//
// 1. The visiting order: cub's merge sort of the indices with the CPU kernel's comparator
//    (segment ascending, weight descending, coordinates descending, index ascending), a total
//    order, so the permutation is the CPU's.
// 2. The greedy merge: one warp per run of one segment in that order. Centres are visited
//    one after the other; the lanes test the kept centres in parallel and a butterfly picks
//    the nearest within the radius, the first kept one among equals (the CPU's strict `<` over
//    the kept list in insertion order). Distances use the CPU's arithmetic, so keeper equals
//    the CPU result exactly.
#include "cuda/merge_modes_kernels.h"

#include <cub/device/device_merge_sort.cuh>
#include <math_constants.h>

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

template <typename T>
struct VisitOrder {
  const T* c;
  const double* w;
  const int64_t* s;
  int64_t d;
  __device__ bool operator()(const int64_t& a, const int64_t& b) const {
    if (s[a] != s[b]) return s[a] < s[b];
    if (w[a] != w[b]) return w[a] > w[b];
    for (int64_t j = 0; j < d; ++j) {
      const double ca = static_cast<double>(c[a * d + j]), cb = static_cast<double>(c[b * d + j]);
      if (ca != cb) return ca > cb;
    }
    return a < b;
  }
};

__global__ void iota_kernel(int64_t* out, int64_t k) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = i;
}

// One warp per position t of the order; only warps at the head of a segment's run work.
// kept: scratch [k] (a run's kept centres, in insertion order, at the run's own positions).
template <typename T>
__global__ void greedy_kernel(const T* __restrict__ c, const int64_t* __restrict__ seg,
                              const int64_t* __restrict__ order, int64_t k, int64_t d, double r2,
                              int64_t* __restrict__ kept, int64_t* __restrict__ keeper) {
  const int64_t t0 = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (t0 >= k) return;
  const int64_t s0 = seg[order[t0]];
  if (t0 > 0 && seg[order[t0 - 1]] == s0) return;  // not a run head (uniform over the warp)
  int64_t* run_kept = kept + t0;
  int64_t nkept = 0;
  for (int64_t t = t0; t < k && seg[order[t]] == s0; ++t) {
    const int64_t i = order[t];
    double best_d = CUDART_INF;
    int64_t best_pos = -1;
    for (int64_t q = lane; q < nkept; q += 32) {
      const int64_t kk = run_kept[q];
      double acc = 0;
      for (int64_t j = 0; j < d; ++j)
        acc = add_sqdiff(acc, static_cast<double>(c[i * d + j]), static_cast<double>(c[kk * d + j]));
      if (acc <= r2 && acc < best_d) {
        best_d = acc;
        best_pos = q;
      }
    }
    // argmin over the lanes by (distance, position in the kept list)
    for (int m = 16; m > 0; m >>= 1) {
      const double od = __shfl_xor_sync(0xffffffffu, best_d, m);
      const int64_t op = __shfl_xor_sync(0xffffffffu, best_pos, m);
      if (op >= 0 && (best_pos < 0 || od < best_d || (od == best_d && op < best_pos))) {
        best_d = od;
        best_pos = op;
      }
    }
    if (best_pos < 0) {
      if (lane == 0) {
        run_kept[nkept] = i;
        keeper[i] = i;
      }
      ++nkept;
    } else if (lane == 0) {
      keeper[i] = run_kept[best_pos];
    }
    __syncwarp();  // the new kept entry is visible to every lane
  }
}

template <typename T>
cudaError_t launch(const T* centers, const double* weights, const int64_t* segment, int64_t k, int64_t d,
                   double radius, int64_t* keeper, int64_t* order, Workspace& ws, cudaStream_t stream) {
  if (k == 0) return cudaSuccess;
  iota_kernel<<<blocks_for(k), kThreads, 0, stream>>>(order, k);
  PST_CUDA_TRY(cudaGetLastError());
  const VisitOrder<T> cmp{centers, weights, segment, d};
  size_t temp_bytes = 0;
  PST_CUDA_TRY(cub::DeviceMergeSort::SortKeys(nullptr, temp_bytes, order, static_cast<int>(k), cmp, stream));
  void* temp = ws.allocate(temp_bytes);
  PST_CUDA_TRY(cub::DeviceMergeSort::SortKeys(temp, temp_bytes, order, static_cast<int>(k), cmp, stream));
  int64_t* kept = ws.alloc<int64_t>(k);
  const int64_t threads = k * 32;
  greedy_kernel<T><<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      centers, segment, order, k, d, radius * radius, kept, keeper);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_merge_modes(const float* centers, const double* weights, const int64_t* segment, int64_t k,
                               int64_t d, double radius, int64_t* keeper, int64_t* order, Workspace& ws,
                               cudaStream_t stream) {
  return launch<float>(centers, weights, segment, k, d, radius, keeper, order, ws, stream);
}

cudaError_t launch_merge_modes(const double* centers, const double* weights, const int64_t* segment, int64_t k,
                               int64_t d, double radius, int64_t* keeper, int64_t* order, Workspace& ws,
                               cudaStream_t stream) {
  return launch<double>(centers, weights, segment, k, d, radius, keeper, order, ws, stream);
}

}  // namespace pst::gpu
