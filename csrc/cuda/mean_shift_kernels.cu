// CUDA kernels of mean_shift (flat kernel, per seed, within its segment).
//
// Layout: the seeds are grouped by segment, kWarps seeds of one segment per thread block,
// one warp per seed. The groups are described on the device (the seeds' order by segment and
// per-segment prefix sums, made by the caller without waiting for the device); the grid has an
// upper bound of blocks, and a block past the last group returns at once. All warps of a block
// iterate in lock step (a warp whose seed has converged idles): per iteration the block streams its segment's points through shared
// memory in tiles (column-major, so lanes read consecutive words), and every active warp
// scans the tile for its seed, a point per lane. Lane sums are reduced with a butterfly, so
// all lanes hold the same new mean.
//
// Exactness: the ball test uses the CPU's arithmetic (float64, (x_j - m_j)^2 summed over j in
// order, no FMA), and the control flow is the CPU's (scikit-learn's _mean_shift_single_seed),
// so counts and iteration numbers agree with the CPU kernel; the means differ only by the
// order of the float64 sums (a few ulp), unless such a difference moves a point across the
// ball's border.
#include "cuda/mean_shift_kernels.h"

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

constexpr int kWarps = static_cast<int>(kMeanShiftSeedsPerBlock);  // seeds per block
constexpr int kSmallDim = 16;  // d <= this: mean and lane sums in registers

template <typename T, int DMAX>
__global__ void __launch_bounds__(kWarps * 32)
    mean_shift_kernel(const T* __restrict__ x, const int64_t* __restrict__ offsets, const int64_t* __restrict__ order,
                      const int64_t* __restrict__ seg_start, const int64_t* __restrict__ group_start, int64_t g,
                      const T* __restrict__ seeds, int64_t d, double r2, int64_t max_iter, double tol, int tile,
                      double* __restrict__ scratch, T* __restrict__ modes, int64_t* __restrict__ counts,
                      int64_t* __restrict__ iters) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* tp = reinterpret_cast<T*>(smem_raw);  // [d][tile]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t bid = blockIdx.x;
  if (bid >= group_start[g]) return;  // past the last group (the whole block)
  const int64_t k = segment_of(group_start, g, bid);
  const int64_t first = seg_start[k] + (bid - group_start[k]) * kWarps;
  const int64_t left = seg_start[k + 1] - first;
  const int64_t nseeds = left < kWarps ? left : kWarps;
  const int64_t b = offsets[k], e = offsets[k + 1];
  const bool has_seed = warp < nseeds;
  const int64_t sid = has_seed ? order[first + warp] : 0;

  constexpr int R = DMAX > 0 ? DMAX : 1;
  double mean_r[R], sum_r[R];
  // generic path: per warp [mean d | lane sums 32 x d] in global scratch
  double* mean_g = DMAX > 0 ? nullptr : scratch + (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * 33 * d;
  double* sum_g = DMAX > 0 ? nullptr : mean_g + d + lane * d;

  if (has_seed) {
    if constexpr (DMAX > 0) {
#pragma unroll
      for (int j = 0; j < DMAX; ++j) mean_r[j] = j < d ? static_cast<double>(seeds[sid * d + j]) : 0.0;
    } else {
      for (int64_t j = lane; j < d; j += 32) mean_g[j] = static_cast<double>(seeds[sid * d + j]);
      __syncwarp();
    }
  }
  bool active = has_seed;
  int64_t it = 0, cnt = 0;
  while (__syncthreads_or(active)) {
    int64_t c = 0;
    if (active) {
      if constexpr (DMAX > 0) {
#pragma unroll
        for (int j = 0; j < DMAX; ++j) sum_r[j] = 0.0;
      } else {
        for (int64_t j = 0; j < d; ++j) sum_g[j] = 0.0;
      }
    }
    for (int64_t t0 = b; t0 < e; t0 += tile) {
      const int len = static_cast<int>(e - t0 < tile ? e - t0 : tile);
      __syncthreads();
      const T* src = x + t0 * d;
      for (int64_t q = threadIdx.x; q < len * d; q += blockDim.x) tp[(q % d) * tile + q / d] = src[q];
      __syncthreads();
      if (!active) continue;
      for (int p = lane; p < len; p += 32) {
        double acc = 0;
        if constexpr (DMAX > 0) {
#pragma unroll
          for (int j = 0; j < DMAX; ++j)
            if (j < d) acc = add_sqdiff(acc, static_cast<double>(tp[j * tile + p]), mean_r[j]);
        } else {
          for (int64_t j = 0; j < d; ++j) acc = add_sqdiff(acc, static_cast<double>(tp[j * tile + p]), mean_g[j]);
        }
        if (acc <= r2) {
          ++c;
          if constexpr (DMAX > 0) {
#pragma unroll
            for (int j = 0; j < DMAX; ++j)
              if (j < d) sum_r[j] += static_cast<double>(tp[j * tile + p]);
          } else {
            for (int64_t j = 0; j < d; ++j) sum_g[j] += static_cast<double>(tp[j * tile + p]);
          }
        }
      }
    }
    if (!active) continue;
    // butterfly reductions: every lane ends with the same totals
    for (int m = 16; m > 0; m >>= 1) c += __shfl_xor_sync(0xffffffffu, c, m);
    if constexpr (DMAX > 0) {
#pragma unroll
      for (int j = 0; j < DMAX; ++j)
        for (int m = 16; m > 0; m >>= 1) sum_r[j] += __shfl_xor_sync(0xffffffffu, sum_r[j], m);
    } else {
      __syncwarp();
      for (int64_t j = 0; j < d; ++j) {
        double v = sum_g[j];
        for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
        sum_g[j] = v;  // each lane keeps the total in its own row
      }
      __syncwarp();
    }
    if (c == 0) {  // the seed saw no point: stop where it is
      cnt = 0;
      active = false;
      continue;
    }
    double shift = 0;
    if constexpr (DMAX > 0) {
#pragma unroll
      for (int j = 0; j < DMAX; ++j) {
        if (j < d) {
          const double next = sum_r[j] / static_cast<double>(c);
          shift = add_sqdiff(shift, next, mean_r[j]);
          mean_r[j] = next;
        }
      }
    } else {
      for (int64_t j = 0; j < d; ++j) shift = add_sqdiff(shift, sum_g[j] / static_cast<double>(c), mean_g[j]);
    }
    if constexpr (DMAX == 0) {
      __syncwarp();  // every lane has read the old mean
      for (int64_t j = lane; j < d; j += 32) mean_g[j] = sum_g[j] / static_cast<double>(c);
      __syncwarp();
    }
    cnt = c;
    if (sqrt(shift) <= tol || it == max_iter)
      active = false;
    else
      ++it;
  }
  if (has_seed) {
    if constexpr (DMAX > 0) {
#pragma unroll
      for (int j = 0; j < DMAX; ++j)
        if (j < d && j % 32 == lane) modes[sid * d + j] = static_cast<T>(mean_r[j]);
    } else {
      for (int64_t j = lane; j < d; j += 32) modes[sid * d + j] = static_cast<T>(mean_g[j]);
    }
    if (lane == 0) {
      counts[sid] = cnt;
      iters[sid] = it;
    }
  }
}

template <typename T>
cudaError_t launch(const T* points, const int64_t* off, int64_t n, int64_t d, int64_t g, const T* seeds,
                   const int64_t* order, const int64_t* seg_start, const int64_t* group_start, int64_t max_groups,
                   int64_t s, double bandwidth, int64_t max_iter, double tol, T* modes, int64_t* counts,
                   int64_t* n_iter, Workspace& ws, cudaStream_t stream) {
  (void)n;
  if (s == 0 || g == 0 || max_groups == 0) return cudaSuccess;
  if (d < 0 || d > kMeanShiftMaxDim || max_groups > 0x7fffffff) return cudaErrorInvalidValue;
  const int64_t ng = max_groups;
  const int64_t row_bytes = (d > 0 ? d : 1) * static_cast<int64_t>(sizeof(T));
  int64_t tile = 32768 / row_bytes;
  if (tile >= 64) tile = tile / 32 * 32;
  if (tile > 256) tile = 256;
  if (tile < 1) tile = 1;
  const size_t smem = static_cast<size_t>(tile * d * static_cast<int64_t>(sizeof(T)));
  const double r2 = bandwidth * bandwidth;
  double* scratch = nullptr;
  if (d > kSmallDim) scratch = ws.alloc<double>(static_cast<size_t>(ng) * kWarps * 33 * d);
  const int itile = static_cast<int>(tile);
#define PST_MS_LAUNCH(DM)                                                                                   \
  mean_shift_kernel<T, DM><<<static_cast<unsigned>(ng), kWarps * 32, smem, stream>>>(                        \
      points, off, order, seg_start, group_start, g, seeds, d, r2, max_iter, tol, itile, scratch, modes, counts,  \
      n_iter)
  if (d <= 4)
    PST_MS_LAUNCH(4);
  else if (d <= 8)
    PST_MS_LAUNCH(8);
  else if (d <= kSmallDim)
    PST_MS_LAUNCH(kSmallDim);
  else
    PST_MS_LAUNCH(0);
#undef PST_MS_LAUNCH
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_mean_shift(const float* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                              const float* seeds, const int64_t* order, const int64_t* seg_start,
                              const int64_t* group_start, int64_t max_groups, int64_t s, double bandwidth,
                              int64_t max_iter, double tol, float* modes, int64_t* counts, int64_t* n_iter,
                              Workspace& ws, cudaStream_t stream) {
  return launch<float>(points, offsets, n, d, g, seeds, order, seg_start, group_start, max_groups, s, bandwidth,
                       max_iter, tol, modes, counts, n_iter, ws, stream);
}

cudaError_t launch_mean_shift(const double* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                              const double* seeds, const int64_t* order, const int64_t* seg_start,
                              const int64_t* group_start, int64_t max_groups, int64_t s, double bandwidth,
                              int64_t max_iter, double tol, double* modes, int64_t* counts, int64_t* n_iter,
                              Workspace& ws, cudaStream_t stream) {
  return launch<double>(points, offsets, n, d, g, seeds, order, seg_start, group_start, max_groups, s, bandwidth,
                       max_iter, tol, modes, counts, n_iter, ws, stream);
}

}  // namespace pst::gpu
