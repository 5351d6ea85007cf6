// CUDA kernels of grid_mean_shift (MeanShift++ on occupied cells).
//
// One pass over K positions (the points first, then one position per occupied cell):
// 1. cell coordinates floor(x / h) (int32, overflow flagged);
// 2. the positions sorted by (segment, cell coordinates), lexicographically, with cub's radix
//    sort: one stable pass per coordinate from the last, then one by segment. Runs of equal keys
//    are the occupied cells, in key order; stability leaves every run in position order, so its
//    first position is the cell's first one;
// 3. the cells renumbered by their first position: the numbering of the CPU kernel's hash table
//    (cells in order of first appearance), so modes and labels come out in the CPU's order;
// 4. per cell the sum of weight * position and the weight (a block per cell, fixed-shape
//    reductions: deterministic);
// 5. per cell the mean over its 3^d block: the neighbours are found by binary search in the
//    sorted cell keys, one coordinate at a time (3 sub-ranges per level, one range for the last
//    coordinate, empty prefixes pruned), so the 3^d block is never enumerated;
// 6. the largest move (cub reduction), the labels, and the next positions.
// Results equal the CPU kernel's up to the order of float64 sums (a few ulp in the modes); the
// labels and the number of modes are the same unless such a difference moves a position across a
// cell border.
#include "cuda/grid_mean_shift_kernels.h"

#include <cub/block/block_reduce.cuh>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_scan.cuh>
#include <cub/util_type.cuh>

#include <algorithm>
#include <utility>

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

constexpr double kLimit = 2147483000.0;  // |cell coordinate| must stay below (the CPU kernel's bound)
constexpr int kSumThreads = 128;

struct MaxOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return a < b ? b : a; }
};

__global__ void seg0_kernel(const int64_t* __restrict__ off, int64_t n, int64_t g, int32_t* __restrict__ seg) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    seg[i] = static_cast<int32_t>(segment_of(off, g, i));
}

template <typename P>
__global__ void coords_kernel(const P* __restrict__ pos, int64_t kd, double h, int32_t* __restrict__ key,
                              int* __restrict__ overflow) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < kd;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double c = floor(static_cast<double>(pos[q]) / h);
    if (!(fabs(c) < kLimit)) {
      *overflow = 1;
      key[q] = 0;
    } else {
      key[q] = static_cast<int32_t>(c);
    }
  }
}

__global__ void iota_kernel(int32_t* out, int64_t k) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(i);
}

// sort key of column j (j = -1: the segment) of the positions in the current order
__global__ void gather_key_kernel(const int32_t* __restrict__ key, const int32_t* __restrict__ seg,
                                  const int32_t* __restrict__ perm, int64_t k, int64_t d, int64_t j,
                                  uint32_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = perm[i];
    out[i] = j < 0 ? static_cast<uint32_t>(seg[r]) : (static_cast<uint32_t>(key[r * d + j]) ^ 0x80000000u);
  }
}

__device__ __forceinline__ bool same_cell(const int32_t* key, const int32_t* seg, int64_t d, int64_t a, int64_t b) {
  if (seg[a] != seg[b]) return false;
  for (int64_t j = 0; j < d; ++j)
    if (key[a * d + j] != key[b * d + j]) return false;
  return true;
}

__global__ void head_kernel(const int32_t* __restrict__ key, const int32_t* __restrict__ seg,
                            const int32_t* __restrict__ perm, int64_t k, int64_t d, int32_t* __restrict__ head) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    head[i] = (i == 0 || !same_cell(key, seg, d, perm[i - 1], perm[i])) ? 1 : 0;
}

// cellid: inclusive scan of the heads (cell = cellid - 1). Per sorted cell: its start in the
// sorted order, its first position, and (after the renumbering) nothing else here.
__global__ void cell_start_kernel(const int32_t* __restrict__ cellid, const int32_t* __restrict__ perm, int64_t k,
                                  int32_t* __restrict__ start, int32_t* __restrict__ first) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t c = cellid[i] - 1;
    if (i == 0 || cellid[i - 1] - 1 != c) {
      start[c] = static_cast<int32_t>(i);
      first[c] = perm[i];
    }
    if (i == k - 1) start[c + 1] = static_cast<int32_t>(k);
  }
}

// rank_inv[r] = sorted cell of CPU number r  ->  rank[sorted cell] = r
__global__ void invert_kernel(const int32_t* __restrict__ rank_inv, int64_t c, int32_t* __restrict__ rank) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < c;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x)
    rank[rank_inv[r]] = static_cast<int32_t>(r);
}

__global__ void cell_of_kernel(const int32_t* __restrict__ cellid, const int32_t* __restrict__ perm,
                               const int32_t* __restrict__ rank, int64_t k, int32_t* __restrict__ cell_of) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    cell_of[perm[i]] = rank[cellid[i] - 1];
}

// One block per sorted cell: sum of w * position and of w over its positions, its key and segment.
template <typename P>
__global__ void __launch_bounds__(kSumThreads)
    cell_sum_kernel(const P* __restrict__ pos, const double* __restrict__ w, const int32_t* __restrict__ key,
                    const int32_t* __restrict__ seg, const int32_t* __restrict__ perm,
                    const int32_t* __restrict__ start, int64_t d, double* __restrict__ csum,
                    double* __restrict__ cw, int32_t* __restrict__ ckey, int32_t* __restrict__ cseg) {
  using Reduce = cub::BlockReduce<double, kSumThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const int64_t c = blockIdx.x;
  const int64_t b = start[c], e = start[c + 1];
  for (int64_t j = -1; j < d; ++j) {  // j = -1: the weights
    double acc = 0;
    for (int64_t p = b + threadIdx.x; p < e; p += kSumThreads) {
      const int64_t i = perm[p];
      const double wi = w ? w[i] : 1.0;
      acc += j < 0 ? wi : wi * static_cast<double>(pos[i * d + j]);
    }
    const double total = Reduce(tmp).Sum(acc);
    if (threadIdx.x == 0) {
      if (j < 0)
        cw[c] = total;
      else
        csum[c * d + j] = total;
    }
    __syncthreads();  // tmp is reused
  }
  const int64_t r = perm[b];
  for (int64_t j = threadIdx.x; j < d; j += kSumThreads) ckey[c * d + j] = key[r * d + j];
  if (threadIdx.x == 0) cseg[c] = seg[r];
}

// first index in [lo, hi) whose level-l key is >= v (level 0 = segment, l >= 1 = coordinate l - 1)
__device__ __forceinline__ int32_t lower(const int32_t* ckey, const int32_t* cseg, int64_t d, int l, int32_t lo,
                                         int32_t hi, int64_t v) {
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    const int64_t x = l == 0 ? cseg[mid] : ckey[static_cast<int64_t>(mid) * d + (l - 1)];
    if (x < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Per sorted cell: the mean of its 3^d block; written at the cell's CPU number, with its weight
// and segment carried over to the next pass.
__global__ void block_mean_kernel(const int32_t* __restrict__ ckey, const int32_t* __restrict__ cseg,
                                  const double* __restrict__ csum, const double* __restrict__ cw,
                                  const int32_t* __restrict__ rank, int64_t nc, int64_t d,
                                  double* __restrict__ next, double* __restrict__ next_w,
                                  int32_t* __restrict__ next_seg, double* __restrict__ acc_scratch) {
  struct Range {
    int32_t lo, hi;
    int32_t level;
  };
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < nc;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t* me = ckey + c * d;
    double* sum = acc_scratch + c * d;  // this cell's accumulator (global scratch: any d)
    for (int64_t j = 0; j < d; ++j) sum[j] = 0;
    double wsum = 0;
    const int32_t n32 = static_cast<int32_t>(nc);
    const int32_t s_lo = lower(ckey, cseg, d, 0, 0, n32, cseg[c]);
    const int32_t s_hi = lower(ckey, cseg, d, 0, s_lo, n32, static_cast<int64_t>(cseg[c]) + 1);
    Range stack[3 * kGridMeanShiftMaxDim + 3];
    int top = 0;
    stack[top++] = Range{s_lo, s_hi, 1};
    while (top > 0) {
      const Range r = stack[--top];
      if (r.level > d) {  // every level fixed (d == 0): the whole range
        for (int32_t q = r.lo; q < r.hi; ++q) {
          for (int64_t j = 0; j < d; ++j) sum[j] += csum[static_cast<int64_t>(q) * d + j];
          wsum += cw[q];
        }
        continue;
      }
      const int64_t v = me[r.level - 1];
      if (r.level == d) {  // last coordinate: one range for v - 1 .. v + 1
        const int32_t a = lower(ckey, cseg, d, r.level, r.lo, r.hi, v - 1);
        const int32_t b = lower(ckey, cseg, d, r.level, a, r.hi, v + 2);
        for (int32_t q = a; q < b; ++q) {
          for (int64_t j = 0; j < d; ++j) sum[j] += csum[static_cast<int64_t>(q) * d + j];
          wsum += cw[q];
        }
        continue;
      }
      int32_t a = lower(ckey, cseg, d, r.level, r.lo, r.hi, v - 1);
      for (int64_t dv = -1; dv <= 1; ++dv) {
        const int32_t b = lower(ckey, cseg, d, r.level, a, r.hi, v + dv + 1);
        if (b > a) stack[top++] = Range{a, b, r.level + 1};
        a = b;
      }
    }
    const int64_t out = rank[c];
    for (int64_t j = 0; j < d; ++j) next[out * d + j] = sum[j] / wsum;  // wsum >= own weight > 0
    next_w[out] = cw[c];
    next_seg[out] = cseg[c];
  }
}

template <typename P>
__global__ void shift_kernel(const P* __restrict__ pos, const double* __restrict__ next,
                             const int32_t* __restrict__ cell_of, int64_t k, int64_t d, double* __restrict__ shift2) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < k;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double* a = next + static_cast<int64_t>(cell_of[i]) * d;
    double acc = 0;
    for (int64_t j = 0; j < d; ++j) acc = add_sqdiff(acc, a[j], static_cast<double>(pos[i * d + j]));
    shift2[i] = acc;
  }
}

__global__ void labels_kernel(const int32_t* __restrict__ cell_of, int64_t n, bool first, int64_t* __restrict__ labels) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    labels[i] = first ? cell_of[i] : cell_of[labels[i]];
}

__global__ void finish_kernel(const double* __restrict__ w, const int32_t* __restrict__ seg, int64_t m,
                              int64_t* __restrict__ w_out, int64_t* __restrict__ seg_out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < m;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    w_out[i] = llround(w[i]);
    seg_out[i] = seg[i];
  }
}

int bits_for(int64_t g) {  // bits of the largest segment index g - 1
  int b = 1;
  while (b < 32 && (int64_t{1} << b) < g) ++b;
  return b;
}

template <typename T>
cudaError_t launch(const T* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g, double h,
                   int64_t max_iter, double tol, int64_t* labels, GridMeanShiftResult& res, Workspace& ws,
                   cudaStream_t stream, const Interrupt* stop) {
  res = GridMeanShiftResult{};
  if (n == 0) return cudaSuccess;
  if (d < 0 || d > kGridMeanShiftMaxDim) return cudaErrorInvalidValue;
  const int64_t nd = n * d;
  // buffers for up to n positions (later passes have fewer)
  double* pos[2] = {ws.alloc<double>(nd), ws.alloc<double>(nd)};
  double* wts[2] = {ws.alloc<double>(n), ws.alloc<double>(n)};
  int32_t* seg[2] = {ws.alloc<int32_t>(n), ws.alloc<int32_t>(n)};
  int32_t* key = ws.alloc<int32_t>(nd);
  uint32_t* skey[2] = {ws.alloc<uint32_t>(n), ws.alloc<uint32_t>(n)};
  int32_t* perm[2] = {ws.alloc<int32_t>(n), ws.alloc<int32_t>(n)};
  int32_t* head = ws.alloc<int32_t>(n);
  int32_t* cellid = ws.alloc<int32_t>(n);
  int32_t* start = ws.alloc<int32_t>(n + 1);
  int32_t* first_[2] = {ws.alloc<int32_t>(n), ws.alloc<int32_t>(n)};
  int32_t* rinv[2] = {ws.alloc<int32_t>(n), ws.alloc<int32_t>(n)};
  int32_t* rank = ws.alloc<int32_t>(n);
  int32_t* cell_of = ws.alloc<int32_t>(n);
  double* csum = ws.alloc<double>(nd);
  double* cw = ws.alloc<double>(n);
  int32_t* ckey = ws.alloc<int32_t>(nd);
  int32_t* cseg = ws.alloc<int32_t>(n);
  double* acc = ws.alloc<double>(nd);
  double* shift2 = ws.alloc<double>(n);
  // small device results copied back once per pass: [max shift2 (double)], [cells, overflow (int32)]
  double* d_max = ws.alloc<double>(1);
  int32_t* d_info = ws.alloc<int32_t>(2);  // [0] unused, [1] overflow flag

  // cub temp storage, sized for n items (the largest of the three algorithms)
  const int32_t ni = static_cast<int32_t>(n);
  size_t b_sort = 0, b_scan = 0, b_red = 0;
  {
    cub::DoubleBuffer<uint32_t> k2(skey[0], skey[1]);
    cub::DoubleBuffer<int32_t> v2(perm[0], perm[1]);
    PST_CUDA_TRY(cub::DeviceRadixSort::SortPairs(nullptr, b_sort, k2, v2, ni, 0, 32, stream));
    PST_CUDA_TRY(cub::DeviceScan::InclusiveSum(nullptr, b_scan, head, cellid, ni, stream));
    PST_CUDA_TRY(cub::DeviceReduce::Reduce(nullptr, b_red, shift2, d_max, ni, MaxOp{}, 0.0, stream));
  }
  size_t temp_bytes = std::max(b_sort, std::max(b_scan, b_red));
  void* temp = ws.allocate(temp_bytes);

  seg0_kernel<<<blocks_for(n), kThreads, 0, stream>>>(offsets, n, g, seg[0]);
  PST_CUDA_TRY(cudaGetLastError());
  PST_CUDA_TRY(cudaMemsetAsync(d_info, 0, 2 * sizeof(int32_t), stream));
  const int seg_bits = bits_for(g);

  int cur = 0;  // pos[cur], wts[cur], seg[cur]: the current positions (after the first pass)
  int64_t k = n;
  int64_t it = 0;
  for (it = 1; it <= max_iter; ++it) {
    if (stop && stop->requested()) return cudaSuccess;  // the caller throws (stop->check())
    const bool first = it == 1;
    // 1. cell coordinates
    if (first)
      coords_kernel<T><<<blocks_for(k * d), kThreads, 0, stream>>>(points, k * d, h, key, d_info + 1);
    else
      coords_kernel<double><<<blocks_for(k * d), kThreads, 0, stream>>>(pos[cur], k * d, h, key, d_info + 1);
    PST_CUDA_TRY(cudaGetLastError());
    // 2. sort by (segment, coordinates): stable LSD passes
    const int32_t k32 = static_cast<int32_t>(k);
    cub::DoubleBuffer<uint32_t> kb(skey[0], skey[1]);
    cub::DoubleBuffer<int32_t> vb(perm[0], perm[1]);
    iota_kernel<<<blocks_for(k), kThreads, 0, stream>>>(vb.Current(), k);
    PST_CUDA_TRY(cudaGetLastError());
    for (int64_t j = d - 1; j >= -1; --j) {
      gather_key_kernel<<<blocks_for(k), kThreads, 0, stream>>>(key, seg[cur], vb.Current(), k, d, j, kb.Current());
      PST_CUDA_TRY(cudaGetLastError());
      size_t bytes = temp_bytes;
      PST_CUDA_TRY(cub::DeviceRadixSort::SortPairs(temp, bytes, kb, vb, k32, 0, j < 0 ? seg_bits : 32, stream));
    }
    const int32_t* pm = vb.Current();
    // 3. cells and their numbering by first position
    head_kernel<<<blocks_for(k), kThreads, 0, stream>>>(key, seg[cur], pm, k, d, head);
    PST_CUDA_TRY(cudaGetLastError());
    {
      size_t bytes = temp_bytes;
      PST_CUDA_TRY(cub::DeviceScan::InclusiveSum(temp, bytes, head, cellid, k32, stream));
    }
    int32_t info[2] = {0, 0};
    PST_CUDA_TRY(cudaMemcpyAsync(&info[0], cellid + (k - 1), sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    PST_CUDA_TRY(cudaMemcpyAsync(&info[1], d_info + 1, sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
    PST_CUDA_TRY(cudaStreamSynchronize(stream));
    if (info[1] != 0) {
      res.overflow = true;
      return cudaSuccess;
    }
    const int64_t nc = info[0];
    const int32_t nc32 = info[0];
    cell_start_kernel<<<blocks_for(k), kThreads, 0, stream>>>(cellid, pm, k, start, first_[0]);
    PST_CUDA_TRY(cudaGetLastError());
    iota_kernel<<<blocks_for(nc), kThreads, 0, stream>>>(rinv[0], nc);
    PST_CUDA_TRY(cudaGetLastError());
    {
      cub::DoubleBuffer<uint32_t> fk(reinterpret_cast<uint32_t*>(first_[0]), reinterpret_cast<uint32_t*>(first_[1]));
      cub::DoubleBuffer<int32_t> fv(rinv[0], rinv[1]);
      size_t bytes = temp_bytes;
      PST_CUDA_TRY(cub::DeviceRadixSort::SortPairs(temp, bytes, fk, fv, nc32, 0, bits_for(n), stream));
      invert_kernel<<<blocks_for(nc), kThreads, 0, stream>>>(fv.Current(), nc, rank);
      PST_CUDA_TRY(cudaGetLastError());
    }
    cell_of_kernel<<<blocks_for(k), kThreads, 0, stream>>>(cellid, pm, rank, k, cell_of);
    PST_CUDA_TRY(cudaGetLastError());
    // 4. per-cell sums (sorted order)
    if (first)
      cell_sum_kernel<T><<<static_cast<unsigned>(nc), kSumThreads, 0, stream>>>(points, nullptr, key, seg[cur], pm,
                                                                                start, d, csum, cw, ckey, cseg);
    else
      cell_sum_kernel<double><<<static_cast<unsigned>(nc), kSumThreads, 0, stream>>>(
          pos[cur], wts[cur], key, seg[cur], pm, start, d, csum, cw, ckey, cseg);
    PST_CUDA_TRY(cudaGetLastError());
    // 5. block means, into the other buffers in CPU numbering
    const int nx = 1 - cur;
    block_mean_kernel<<<blocks_for(nc, 128), 128, 0, stream>>>(ckey, cseg, csum, cw, rank, nc, d, pos[nx], wts[nx],
                                                               seg[nx], acc);
    PST_CUDA_TRY(cudaGetLastError());
    // 6. largest move, labels
    if (first)
      shift_kernel<T><<<blocks_for(k), kThreads, 0, stream>>>(points, pos[nx], cell_of, k, d, shift2);
    else
      shift_kernel<double><<<blocks_for(k), kThreads, 0, stream>>>(pos[cur], pos[nx], cell_of, k, d, shift2);
    PST_CUDA_TRY(cudaGetLastError());
    {
      size_t bytes = temp_bytes;
      PST_CUDA_TRY(cub::DeviceReduce::Reduce(temp, bytes, shift2, d_max, k32, MaxOp{}, 0.0, stream));
    }
    labels_kernel<<<blocks_for(n), kThreads, 0, stream>>>(cell_of, n, first, labels);
    PST_CUDA_TRY(cudaGetLastError());
    double max_shift2 = 0;
    PST_CUDA_TRY(cudaMemcpyAsync(&max_shift2, d_max, sizeof(double), cudaMemcpyDeviceToHost, stream));
    PST_CUDA_TRY(cudaStreamSynchronize(stream));
    cur = nx;
    k = nc;
    if (std::sqrt(max_shift2) <= tol) break;
  }
  res.n_iter = std::min(it, max_iter);
  res.m = k;
  int64_t* w_out = ws.alloc<int64_t>(k);
  int64_t* s_out = ws.alloc<int64_t>(k);
  finish_kernel<<<blocks_for(k), kThreads, 0, stream>>>(wts[cur], seg[cur], k, w_out, s_out);
  PST_CUDA_TRY(cudaGetLastError());
  res.modes = pos[cur];
  res.weights = w_out;
  res.segment = s_out;
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_grid_mean_shift(const float* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                                   double cell_size, int64_t max_iter, double tol, int64_t* labels,
                                   GridMeanShiftResult& result, Workspace& ws, cudaStream_t stream,
                                   const Interrupt* stop) {
  return launch<float>(points, offsets, n, d, g, cell_size, max_iter, tol, labels, result, ws, stream, stop);
}

cudaError_t launch_grid_mean_shift(const double* points, const int64_t* offsets, int64_t n, int64_t d, int64_t g,
                                   double cell_size, int64_t max_iter, double tol, int64_t* labels,
                                   GridMeanShiftResult& result, Workspace& ws, cudaStream_t stream,
                                   const Interrupt* stop) {
  return launch<double>(points, offsets, n, d, g, cell_size, max_iter, tol, labels, result, ws, stream, stop);
}

}  // namespace pst::gpu
