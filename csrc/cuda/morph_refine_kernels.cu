// CUDA kernels of morph_refine: the CPU kernel's algorithm (csrc/cpu/morph_refine_cpu.cpp), step for
// step, so that the output is the same bit for bit.
//
// 1. find_boxes: one hash table per image (open addressing, capacity a power of two > H * W, so
//    it never fills) maps every id to its bounding box. Only the first and last pixel of each
//    horizontal run of equal ids touch the table (atomicMin / atomicMax on the box).
// 2. refine_kernel: a persistent grid. Each block takes chunks of table slots from a global
//    counter and refines the instances found there one after another, every thread of the block
//    on one instance, in a crop (the box grown by max(open_radius, 2 * close_radius), clipped):
//    erosion / dilation as on the CPU (per row the distance to the nearest pixel of interest,
//    then a sliding column count for squares or one test per disk row); hole filling and
//    component filtering by a union-find over the crop's pixels (atomicMin linking, so that every
//    root is its component's first pixel in raster order, as the CPU's run labelling gives).
//    The refined mask is pasted straight into the output: a pixel its own instance keeps is
//    written by that instance alone; any other pixel gets the lowest claiming id by atomicMin.
// 3. finish: pixels no instance kept take that lowest id, else 0.
// The number of instances and the crop sizes never reach the host: the grid size depends only
// on B, H and W, and each block's scratch holds a crop as large as the whole image.
#include "cuda/morph_refine_kernels.h"

#include <climits>
#include <cstdint>
#include <type_traits>

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

constexpr int kRefineThreads = 512;
constexpr int32_t kNone = INT32_MAX;  // no pixel of interest in the row

template <typename T>
__device__ __forceinline__ bool is_negative(T v) {
  if constexpr (std::is_signed<T>::value)
    return v < 0;
  else
    return false;
}

__device__ __forceinline__ unsigned long long mix(unsigned long long v) {  // splitmix64's finaliser
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  v *= 0xc4ceb9fe1a85ec53ull;
  v ^= v >> 33;
  return v;
}

struct Table {
  unsigned long long* key;  // [b * cap]: 0 = empty, else the id (ids are >= 1)
  int32_t *y0, *y1, *x0, *x1;  // [b * cap]: the id's bounding box, inclusive
  int64_t cap;  // slots per image, a power of two
};

// The slot of id in image img's table, claimed when the id is new.
__device__ int64_t find_or_insert(const Table& t, int64_t img, unsigned long long id) {
  unsigned long long* keys = t.key + img * t.cap;
  int64_t s = static_cast<int64_t>(mix(id) & static_cast<unsigned long long>(t.cap - 1));
  for (;;) {
    const unsigned long long k = keys[s];  // a slot goes from 0 to its id once
    if (k == id) return img * t.cap + s;
    if (k == 0) {
      const unsigned long long old = atomicCAS(keys + s, 0ull, id);
      if (old == 0 || old == id) return img * t.cap + s;
    }
    s = (s + 1) & (t.cap - 1);
  }
}

template <typename T>
__global__ void find_boxes(const T* __restrict__ in, int64_t total, int64_t h, int64_t w, Table t,
                           int32_t* __restrict__ negative) {
  const int64_t hw = h * w;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T v = in[e];
    if (v == 0) continue;
    if (is_negative(v)) {
      if (negative != nullptr) *negative = 1;
      continue;
    }
    const int64_t x = e % w;
    const bool start = x == 0 || in[e - 1] != v;
    const bool end = x == w - 1 || in[e + 1] != v;
    if (!start && !end) continue;
    const int64_t img = e / hw, y = (e % hw) / w;
    const int64_t s = find_or_insert(t, img, static_cast<unsigned long long>(static_cast<int64_t>(v)));
    if (start) {
      atomicMin(t.y0 + s, static_cast<int32_t>(y));
      atomicMax(t.y1 + s, static_cast<int32_t>(y));
      atomicMin(t.x0 + s, static_cast<int32_t>(x));
    }
    if (end) atomicMax(t.x1 + s, static_cast<int32_t>(x));
  }
}

// wd[k] = floor(sqrt(r^2 - k^2)), k = 0..r: the half-widths of the disk's rows (exact, as on the CPU)
__global__ void disk_half_widths(int64_t r, int32_t* __restrict__ wd) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k <= r;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t v = r * r - k * k;
    int64_t s = static_cast<int64_t>(sqrt(static_cast<double>(v)));
    while (s * s > v) --s;
    while ((s + 1) * (s + 1) <= v) ++s;
    wd[k] = static_cast<int32_t>(s);
  }
}

// ---- block-wide steps on one crop (ch x cw pixels, row-major); every thread of the block calls them ----

// dst[i] = (some q in (i + S) inside the crop has src[q] == target) XOR invert: a dilation with
// target 1, an erosion with target 0 and invert (pixels outside the crop never count).
__device__ void hits(const uint8_t* src, uint8_t* dst, int32_t* dist, int64_t ch, int64_t cw, int64_t r, bool disk,
                     const int32_t* wd, uint8_t target, bool invert) {
  // per row: the distance to the nearest target pixel of the row (kNone if there is none)
  for (int64_t y = threadIdx.x; y < ch; y += blockDim.x) {
    const uint8_t* row = src + y * cw;
    int32_t* d = dist + y * cw;
    int64_t last = -1;
    for (int64_t x = 0; x < cw; ++x) {
      if (row[x] == target) last = x;
      d[x] = last < 0 ? kNone : static_cast<int32_t>(x - last);
    }
    int64_t next = -1;
    for (int64_t x = cw - 1; x >= 0; --x) {
      if (row[x] == target) next = x;
      if (next >= 0 && next - x < d[x]) d[x] = static_cast<int32_t>(next - x);
    }
  }
  __syncthreads();
  const uint8_t inv = invert ? 1 : 0;
  if (!disk) {
    // per column: a sliding count of the rows within [y - r, y + r] that have a hit within r
    for (int64_t x = threadIdx.x; x < cw; x += blockDim.x) {
      int64_t cnt = 0;
      const int64_t first = r < ch - 1 ? r : ch - 1;
      for (int64_t y = 0; y <= first; ++y) cnt += dist[y * cw + x] <= r;
      for (int64_t y = 0; y < ch; ++y) {
        dst[y * cw + x] = static_cast<uint8_t>((cnt > 0) ^ inv);
        const int64_t add = y + r + 1, sub = y - r;
        if (add < ch) cnt += dist[add * cw + x] <= r;
        if (sub >= 0) cnt -= dist[sub * cw + x] <= r;
      }
    }
  } else {
    const int64_t n = ch * cw;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const int64_t y = i / cw, x = i % cw;
      const int64_t lo = y - r > 0 ? y - r : 0, hi = y + r < ch - 1 ? y + r : ch - 1;
      bool hit = false;
      for (int64_t yy = lo; yy <= hi && !hit; ++yy) hit = dist[yy * cw + x] <= wd[yy > y ? yy - y : y - yy];
      dst[i] = static_cast<uint8_t>(hit ^ inv);
    }
  }
  __syncthreads();
}

// par[i] = the first pixel (raster order in the crop) of i's component, for the pixels with
// img[i] == v; components are 8- or 4-connected.
__device__ void label_crop(const uint8_t* img, int32_t* par, int64_t ch, int64_t cw, uint8_t v, bool conn8) {
  const int64_t n = ch * cw;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) par[i] = static_cast<int32_t>(i);
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (img[i] != v) continue;
    const int64_t y = i / cw, x = i % cw;
    const int32_t ii = static_cast<int32_t>(i);
    if (x > 0 && img[i - 1] == v) unite(par, ii, ii - 1);
    if (y > 0) {
      if (img[i - cw] == v) unite(par, ii, static_cast<int32_t>(i - cw));
      if (conn8) {
        if (x > 0 && img[i - cw - 1] == v) unite(par, ii, static_cast<int32_t>(i - cw - 1));
        if (x + 1 < cw && img[i - cw + 1] == v) unite(par, ii, static_cast<int32_t>(i - cw + 1));
      }
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    if (img[i] == v) par[i] = find_root(par, static_cast<int32_t>(i));
  __syncthreads();
}

template <typename T>
struct RefineArgs {
  const T* in;
  T* out;
  unsigned long long* other;  // [b * h * w]: lowest id of another instance claiming the pixel
  int64_t h, w;
  Table t;
  int64_t total_slots;
  MorphParams p;
  const int32_t* wd_open;
  const int32_t* wd_close;
  unsigned long long* next_chunk;
  uint8_t *sa, *sm;  // per block: [stride] bytes each
  int32_t *sdist, *spar;  // per block: [stride] ints each
  int64_t stride;  // h * w
};

template <typename T>
__device__ void refine_one(const RefineArgs<T>& g, int64_t slot, uint8_t* a, uint8_t* m, int32_t* dist, int32_t* par,
                           unsigned long long* s_best) {
  __syncthreads();  // the previous instance is done with the scratch
  const MorphParams& p = g.p;
  const int64_t h = g.h, w = g.w, img = slot / g.t.cap;
  const unsigned long long id = g.t.key[slot];
  const int64_t margin = p.open_r > 2 * p.close_r ? p.open_r : 2 * p.close_r;
  const int64_t by0 = g.t.y0[slot] - margin, by1 = g.t.y1[slot] + 1 + margin;
  const int64_t bx0 = g.t.x0[slot] - margin, bx1 = g.t.x1[slot] + 1 + margin;
  const int64_t y0 = by0 > 0 ? by0 : 0, y1 = by1 < h ? by1 : h;
  const int64_t x0 = bx0 > 0 ? bx0 : 0, x1 = bx1 < w ? bx1 : w;
  const int64_t ch = y1 - y0, cw = x1 - x0, n = ch * cw;
  const T* src = g.in + img * h * w;
  const int64_t sid = static_cast<int64_t>(id);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    a[i] = static_cast<int64_t>(src[(y0 + i / cw) * w + x0 + i % cw]) == sid;
  __syncthreads();

  if (p.open_r > 0) {
    hits(a, m, dist, ch, cw, p.open_r, p.disk, g.wd_open, 0, true);  // erode
    int any = 0;
    for (int64_t i = threadIdx.x; i < n && !any; i += blockDim.x) any = m[i];
    if (!__syncthreads_or(any)) return;  // nothing survives the erosion: the instance is gone
    hits(m, a, dist, ch, cw, p.open_r, p.disk, g.wd_open, 1, false);  // dilate
  }
  if (p.close_r > 0) {
    hits(a, m, dist, ch, cw, p.close_r, p.disk, g.wd_close, 1, false);  // dilate
    hits(m, a, dist, ch, cw, p.close_r, p.disk, g.wd_close, 0, true);   // erode
  }
  if (p.fill_holes) {
    // background components (complementary connectivity) that do not reach the crop's edge
    label_crop(a, par, ch, cw, 0, !p.conn8);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      if (a[i]) continue;
      const int64_t y = i / cw, x = i % cw;
      if (y == 0 || y == ch - 1 || x == 0 || x == cw - 1) m[par[i]] = 1;
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      if (!a[i] && !m[par[i]]) a[i] = 1;
    __syncthreads();
  }
  if (p.min_size > 0 || p.largest) {
    label_crop(a, par, ch, cw, 1, p.conn8);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dist[i] = 0;  // area per root
    if (threadIdx.x == 0) *s_best = 0;
    __syncthreads();
    const int lane = threadIdx.x % 32;
    for (int64_t base = 0; base < n; base += blockDim.x) {  // whole warps: one atomic per root and warp
      const int64_t i = base + threadIdx.x;
      const bool fg = i < n && a[i];
      const int32_t r = fg ? par[i] : -1;
      const unsigned same = __match_any_sync(0xffffffffu, r);
      if (fg && __ffs(same) - 1 == lane) atomicAdd(dist + r, __popc(same));
    }
    __syncthreads();
    // the largest component of at least min_size pixels; ties: the smaller root (first in raster order)
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      if (!a[i] || par[i] != i || dist[i] < p.min_size) continue;
      const unsigned long long key = (static_cast<unsigned long long>(dist[i]) << 32) |
                                     static_cast<unsigned long long>(static_cast<uint32_t>(INT32_MAX - i));
      atomicMax(s_best, key);
    }
    __syncthreads();
    const unsigned long long best = *s_best;
    const int64_t best_root = best == 0 ? -1 : INT32_MAX - static_cast<int64_t>(best & 0xffffffffull);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      if (!a[i]) continue;
      const int32_t r = par[i];
      if (dist[r] < p.min_size || (p.largest && r != best_root)) a[i] = 0;
    }
    __syncthreads();
  }
  // paste: the pixels of its own instance directly (one writer per pixel), the others by atomicMin
  const int64_t ibase = img * h * w;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if (!a[i]) continue;
    const int64_t e = ibase + (y0 + i / cw) * w + x0 + i % cw;
    if (static_cast<int64_t>(g.in[e]) == sid)
      g.out[e] = static_cast<T>(sid);
    else
      atomicMin(g.other + e, id);
  }
}

template <typename T>
__global__ void __launch_bounds__(kRefineThreads) refine_kernel(RefineArgs<T> g) {
  __shared__ unsigned long long s_base;
  __shared__ int s_n;
  __shared__ int64_t s_list[kRefineThreads];
  __shared__ unsigned long long s_best;
  uint8_t* a = g.sa + blockIdx.x * g.stride;
  uint8_t* m = g.sm + blockIdx.x * g.stride;
  int32_t* dist = g.sdist + blockIdx.x * g.stride;
  int32_t* par = g.spar + blockIdx.x * g.stride;
  for (;;) {
    if (threadIdx.x == 0) {
      s_base = atomicAdd(g.next_chunk, static_cast<unsigned long long>(kRefineThreads));
      s_n = 0;
    }
    __syncthreads();
    const int64_t base = static_cast<int64_t>(s_base);
    if (base >= g.total_slots) break;
    const int64_t slot = base + threadIdx.x;
    if (slot < g.total_slots && g.t.key[slot] != 0) s_list[atomicAdd(&s_n, 1)] = slot;
    __syncthreads();
    const int count = s_n;
    for (int j = 0; j < count; ++j) refine_one<T>(g, s_list[j], a, m, dist, par, &s_best);
    __syncthreads();  // everyone has read s_base, s_n and s_list
  }
}

template <typename T>
__global__ void finish(T* __restrict__ out, const unsigned long long* __restrict__ other, int64_t total) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long o = other[e];
    if (out[e] == 0 && o != ~0ull) out[e] = static_cast<T>(static_cast<int64_t>(o));
  }
}

template <typename T>
cudaError_t launch(const T* in, int64_t b, int64_t h, int64_t w, const MorphParams& p, T* out, int32_t* negative,
                   Workspace& ws, cudaStream_t stream) {
  const int64_t hw = h * w, total = b * hw;
  if (total == 0) return cudaSuccess;
  if (hw > INT32_MAX || p.open_r < 0 || p.close_r < 0 || p.min_size < 0) return cudaErrorInvalidValue;
  int64_t cap = 2;
  while (cap <= hw) cap *= 2;  // > H * W slots: never full
  const int64_t slots = b * cap;
  Table t;
  t.cap = cap;
  t.key = ws.alloc<unsigned long long>(slots);
  t.y0 = ws.alloc<int32_t>(slots);
  t.y1 = ws.alloc<int32_t>(slots);
  t.x0 = ws.alloc<int32_t>(slots);
  t.x1 = ws.alloc<int32_t>(slots);
  PST_CUDA_TRY(cudaMemsetAsync(t.key, 0, slots * sizeof(unsigned long long), stream));
  // box minima start at 0x7F7F7F7F (above every coordinate), maxima at 0
  PST_CUDA_TRY(cudaMemsetAsync(t.y0, 0x7F, slots * sizeof(int32_t), stream));
  PST_CUDA_TRY(cudaMemsetAsync(t.x0, 0x7F, slots * sizeof(int32_t), stream));
  PST_CUDA_TRY(cudaMemsetAsync(t.y1, 0, slots * sizeof(int32_t), stream));
  PST_CUDA_TRY(cudaMemsetAsync(t.x1, 0, slots * sizeof(int32_t), stream));
  find_boxes<T><<<blocks_for(total), kThreads, 0, stream>>>(in, total, h, w, t, negative);
  PST_CUDA_TRY(cudaGetLastError());

  RefineArgs<T> g;
  g.in = in;
  g.out = out;
  g.h = h;
  g.w = w;
  g.t = t;
  g.total_slots = slots;
  g.p = p;
  g.wd_open = nullptr;
  g.wd_close = nullptr;
  if (p.disk && p.open_r > 0) {
    int32_t* wd = ws.alloc<int32_t>(p.open_r + 1);
    disk_half_widths<<<blocks_for(p.open_r + 1), kThreads, 0, stream>>>(p.open_r, wd);
    PST_CUDA_TRY(cudaGetLastError());
    g.wd_open = wd;
  }
  if (p.disk && p.close_r > 0) {
    int32_t* wd = ws.alloc<int32_t>(p.close_r + 1);
    disk_half_widths<<<blocks_for(p.close_r + 1), kThreads, 0, stream>>>(p.close_r, wd);
    PST_CUDA_TRY(cudaGetLastError());
    g.wd_close = wd;
  }
  int device = 0, sms = 1;
  PST_CUDA_TRY(cudaGetDevice(&device));
  PST_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  int64_t grid = 2 * static_cast<int64_t>(sms);
  const int64_t fit = kMorphScratchBudget / (10 * hw);
  if (grid > fit) grid = fit;
  const int64_t chunks = (slots + kRefineThreads - 1) / kRefineThreads;
  if (grid > chunks) grid = chunks;
  if (grid < 1) grid = 1;
  g.stride = hw;
  g.sa = ws.alloc<uint8_t>(grid * hw);
  g.sm = ws.alloc<uint8_t>(grid * hw);
  g.sdist = ws.alloc<int32_t>(grid * hw);
  g.spar = ws.alloc<int32_t>(grid * hw);
  g.other = ws.alloc<unsigned long long>(total);
  g.next_chunk = ws.alloc<unsigned long long>(1);
  PST_CUDA_TRY(cudaMemsetAsync(g.next_chunk, 0, sizeof(unsigned long long), stream));
  PST_CUDA_TRY(cudaMemsetAsync(g.other, 0xFF, total * sizeof(unsigned long long), stream));
  PST_CUDA_TRY(cudaMemsetAsync(out, 0, total * sizeof(T), stream));
  refine_kernel<T><<<static_cast<unsigned>(grid), kRefineThreads, 0, stream>>>(g);
  PST_CUDA_TRY(cudaGetLastError());
  finish<T><<<blocks_for(total), kThreads, 0, stream>>>(out, g.other, total);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_morph_refine(const uint8_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                uint8_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream) {
  return launch<uint8_t>(in, b, h, w, p, out, negative, ws, stream);
}
cudaError_t launch_morph_refine(const int8_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p, int8_t* out,
                                int32_t* negative, Workspace& ws, cudaStream_t stream) {
  return launch<int8_t>(in, b, h, w, p, out, negative, ws, stream);
}
cudaError_t launch_morph_refine(const int16_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                int16_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream) {
  return launch<int16_t>(in, b, h, w, p, out, negative, ws, stream);
}
cudaError_t launch_morph_refine(const int32_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                int32_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream) {
  return launch<int32_t>(in, b, h, w, p, out, negative, ws, stream);
}
cudaError_t launch_morph_refine(const int64_t* in, int64_t b, int64_t h, int64_t w, const MorphParams& p,
                                int64_t* out, int32_t* negative, Workspace& ws, cudaStream_t stream) {
  return launch<int64_t>(in, b, h, w, p, out, negative, ws, stream);
}

}  // namespace pst::gpu
