// CUDA kernels of connected_components: union-find in the style of Allegretti, Bolelli and
// Grana ("Optimized block-based algorithms to label connected components on GPUs", 2019).
//
// 8-connectivity, block-based (BUF): the image is cut into 2 x 2 blocks; the foreground
// pixels of one block are always 8-connected, so the union-find runs over blocks. A block is
// united with its left, top-left, top and top-right neighbours when the pixels that face each
// other are set. 4-connectivity: the same union-find over single pixels (left and top).
// Unions link the larger root below the smaller with atomicMin (Playne and Hawick), so every
// root is the smallest index of its set. Then every node points to its root (compression).
//
// Numbering like scipy.ndimage.label: each component's first pixel in raster order is found
// (for pixels it is the root; for blocks an atomicMin over the component's pixels), the first
// pixels are counted by an exclusive scan, and the count restarts at every image. The labels
// are deterministic and equal to the CPU kernel's.
#include "cuda/connected_components_kernels.h"

#include <cub/device/device_scan.cuh>

#include <cstdint>

#include "cuda/common.cuh"

namespace pst::gpu {
namespace {

// ---- 4-connectivity: nodes are pixels (index y * w + x inside the image) ----

__global__ void px_init(const uint8_t* __restrict__ m, int64_t total, int64_t hw, int32_t* __restrict__ p) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[e] = static_cast<int32_t>(e % hw);
}

__global__ void px_merge(const uint8_t* __restrict__ m, int64_t total, int64_t h, int64_t w, int32_t* __restrict__ p) {
  const int64_t hw = h * w;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!m[e]) continue;
    const int64_t base = e - e % hw;
    const int32_t i = static_cast<int32_t>(e - base);
    const int64_t x = i % w, y = i / w;
    int32_t* pi = p + base;
    if (x > 0 && m[e - 1]) unite(pi, i, i - 1);
    if (y > 0 && m[e - w]) unite(pi, i, static_cast<int32_t>(i - w));
  }
}

// every foreground pixel: its root (= its component's first pixel)
__global__ void px_compress(const uint8_t* __restrict__ m, int64_t total, int64_t hw, int32_t* __restrict__ p,
                            int32_t* __restrict__ first) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!m[e]) continue;
    const int64_t base = e - e % hw;
    const int32_t r = find_root(p + base, static_cast<int32_t>(e - base));
    first[e] = r;  // pixel index inside the image
  }
}

// ---- 8-connectivity: nodes are 2 x 2 blocks (index by * bw + bx inside the image) ----

struct BlockGeom {
  int64_t h, w, bh, bw;
};

__device__ __forceinline__ bool px(const uint8_t* img, const BlockGeom& g, int64_t y, int64_t x) {
  return y >= 0 && y < g.h && x >= 0 && x < g.w && img[y * g.w + x];
}

__global__ void blk_init(int64_t total_blocks, int64_t nb, int32_t* __restrict__ p, int32_t* __restrict__ root_first) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total_blocks;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[e] = static_cast<int32_t>(e % nb);
    root_first[e] = INT32_MAX;
  }
}

__global__ void blk_merge(const uint8_t* __restrict__ m, int64_t total_blocks, BlockGeom g, int32_t* __restrict__ p) {
  const int64_t nb = g.bh * g.bw;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total_blocks;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t img = e / nb;
    const int32_t i = static_cast<int32_t>(e % nb);
    const int64_t by = i / g.bw, bx = i % g.bw, y = 2 * by, x = 2 * bx;
    const uint8_t* im = m + img * g.h * g.w;
    const bool a00 = px(im, g, y, x), a01 = px(im, g, y, x + 1), a10 = px(im, g, y + 1, x),
               a11 = px(im, g, y + 1, x + 1);
    if (!(a00 || a01 || a10 || a11)) continue;
    int32_t* pi = p + img * nb;
    // left block: its right column against our left column (all pairs 8-adjacent)
    if (bx > 0 && (a00 || a10) && (px(im, g, y, x - 1) || px(im, g, y + 1, x - 1)))
      unite(pi, i, static_cast<int32_t>(i - 1));
    if (by > 0) {
      // top block: its bottom row against our top row
      if ((a00 || a01) && (px(im, g, y - 1, x) || px(im, g, y - 1, x + 1)))
        unite(pi, i, static_cast<int32_t>(i - g.bw));
      // top-left block: its bottom-right pixel against our top-left one
      if (bx > 0 && a00 && px(im, g, y - 1, x - 1)) unite(pi, i, static_cast<int32_t>(i - g.bw - 1));
      // top-right block: its bottom-left pixel against our top-right one
      if (bx + 1 < g.bw && a01 && px(im, g, y - 1, x + 2)) unite(pi, i, static_cast<int32_t>(i - g.bw + 1));
    }
  }
}

// every foreground pixel: the root block of its block; the component's first pixel by atomicMin
// into root_first (indexed by root block, initialised to INT32_MAX)
__global__ void blk_first(const uint8_t* __restrict__ m, int64_t total, BlockGeom g, const int32_t* __restrict__ p,
                          int32_t* __restrict__ root_of, int32_t* __restrict__ root_first) {
  const int64_t hw = g.h * g.w, nb = g.bh * g.bw;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!m[e]) continue;
    const int64_t img = e / hw, i = e % hw, y = i / g.w, x = i % g.w;
    const int32_t r = find_root(p + img * nb, static_cast<int32_t>((y / 2) * g.bw + x / 2));
    root_of[e] = r;
    atomicMin(root_first + img * nb + r, static_cast<int32_t>(i));
  }
}

__global__ void blk_first_of_pixel(const uint8_t* __restrict__ m, int64_t total, BlockGeom g,
                                   const int32_t* __restrict__ root_of, const int32_t* __restrict__ root_first,
                                   int32_t* __restrict__ first) {
  const int64_t hw = g.h * g.w, nb = g.bh * g.bw;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    if (m[e]) first[e] = root_first[(e / hw) * nb + root_of[e]];
}

// ---- numbering ----

__global__ void is_first_kernel(const uint8_t* __restrict__ m, const int32_t* __restrict__ first, int64_t total,
                                int64_t hw, int32_t* __restrict__ flag) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x)
    flag[e] = (m[e] && first[e] == e % hw) ? 1 : 0;
}

// label = (number of first pixels before the component's first pixel, from the image's start) + 1
__global__ void paint_kernel(const uint8_t* __restrict__ m, const int32_t* __restrict__ first,
                             const int32_t* __restrict__ before, int64_t total, int64_t hw,
                             int32_t* __restrict__ out) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (!m[e]) {
      out[e] = 0;
      continue;
    }
    const int64_t base = e - e % hw;
    out[e] = static_cast<int32_t>(before[base + first[e]] - before[base] + 1);
  }
}

}  // namespace

cudaError_t launch_connected_components(const uint8_t* mask, int64_t b, int64_t h, int64_t w, int connectivity,
                                        int32_t* labels, Workspace& ws, cudaStream_t stream) {
  const int64_t hw = h * w, total = b * hw;
  if (total == 0) return cudaSuccess;
  if (connectivity != 4 && connectivity != 8) return cudaErrorInvalidValue;
  int32_t* first = ws.alloc<int32_t>(total);  // per foreground pixel: its component's first pixel
  if (connectivity == 4) {
    int32_t* p = ws.alloc<int32_t>(total);
    px_init<<<blocks_for(total), kThreads, 0, stream>>>(mask, total, hw, p);
    PST_CUDA_TRY(cudaGetLastError());
    px_merge<<<blocks_for(total), kThreads, 0, stream>>>(mask, total, h, w, p);
    PST_CUDA_TRY(cudaGetLastError());
    px_compress<<<blocks_for(total), kThreads, 0, stream>>>(mask, total, hw, p, first);
    PST_CUDA_TRY(cudaGetLastError());
  } else {
    const BlockGeom g{h, w, (h + 1) / 2, (w + 1) / 2};
    const int64_t nb = g.bh * g.bw, total_blocks = b * nb;
    int32_t* p = ws.alloc<int32_t>(total_blocks);
    int32_t* root_first = ws.alloc<int32_t>(total_blocks);
    int32_t* root_of = ws.alloc<int32_t>(total);
    blk_init<<<blocks_for(total_blocks), kThreads, 0, stream>>>(total_blocks, nb, p, root_first);
    PST_CUDA_TRY(cudaGetLastError());
    blk_merge<<<blocks_for(total_blocks), kThreads, 0, stream>>>(mask, total_blocks, g, p);
    PST_CUDA_TRY(cudaGetLastError());
    blk_first<<<blocks_for(total), kThreads, 0, stream>>>(mask, total, g, p, root_of, root_first);
    PST_CUDA_TRY(cudaGetLastError());
    blk_first_of_pixel<<<blocks_for(total), kThreads, 0, stream>>>(mask, total, g, root_of, root_first, first);
    PST_CUDA_TRY(cudaGetLastError());
  }
  int32_t* flag = ws.alloc<int32_t>(total);
  int32_t* before = ws.alloc<int32_t>(total);
  is_first_kernel<<<blocks_for(total), kThreads, 0, stream>>>(mask, first, total, hw, flag);
  PST_CUDA_TRY(cudaGetLastError());
  // exclusive count of first pixels: over the whole batch when it has < 2^31 pixels (labels then
  // subtract the count at the image's start), else image by image (cub counts items in int)
  const bool whole = total <= INT32_MAX;
  const int64_t span = whole ? total : hw;
  size_t temp_bytes = 0;
  PST_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, temp_bytes, flag, before, static_cast<int>(span), stream));
  void* temp = ws.allocate(temp_bytes);
  for (int64_t s0 = 0; s0 < total; s0 += span) {
    size_t bytes = temp_bytes;
    PST_CUDA_TRY(cub::DeviceScan::ExclusiveSum(temp, bytes, flag + s0, before + s0, static_cast<int>(span), stream));
  }
  paint_kernel<<<blocks_for(total), kThreads, 0, stream>>>(mask, first, before, total, hw, labels);
  return cudaGetLastError();
}

}  // namespace pst::gpu
