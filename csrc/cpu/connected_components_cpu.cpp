#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "connected_components.h"
#include "cpu/ccl_runs.h"
#include "cpu/parallel.h"
#include "cpu/zeroed_alloc.h"

namespace pst {
namespace {

using cpu::Run;

at::Tensor connected_components_cpu(const at::Tensor& mask, int64_t connectivity) {
  check_connected_components_args(mask, connectivity);

  auto m = mask.contiguous();
  const int64_t b = m.size(0), h = m.size(1), w = m.size(2);
  // zero pages from the allocator: only runs are written, so the background is never touched
  // (a fresh at::zeros of a large map costs a page fault per 4 KiB, more than the labelling)
  auto out = cpu::zeroed_empty({b, h, w}, at::empty({0}, m.options().dtype(at::kInt)));
  if (out.numel() == 0) return out;
  const bool conn8 = connectivity == 8;
  const uint8_t* pm = reinterpret_cast<const uint8_t*>(m.data_ptr<bool>());
  int32_t* po = out.data_ptr<int32_t>();
  const int64_t rows = b * h;
  // As many images as threads (or small images): one parallel region over images, each
  // labelled serially. Otherwise rows are split into chunks labelled in parallel and joined.
  if (b >= at::get_num_threads() || h * w < (int64_t{1} << 18)) {
    cpu::parallel_for(0, b, std::max<int64_t>(1, (int64_t{1} << 18) / (h * w)), [&](int64_t b0, int64_t b1) {
      cpu::RunLabels lab;
      for (int64_t i = b0; i < b1; ++i) {
        lab.label(pm + i * h * w, h, w, 1, conn8);
        int32_t* img = po + i * h * w;
        std::vector<int32_t> label(lab.runs.size());
        int32_t next = 0;
        for (size_t k = 0; k < lab.runs.size(); ++k)
          label[k] = lab.root[k] == static_cast<int32_t>(k) ? ++next : label[lab.root[k]];
        for (int64_t y = 0; y < h; ++y)
          for (int32_t k = lab.row_start[y]; k < lab.row_start[y + 1]; ++k)
            std::fill(img + y * w + lab.runs[k].x0, img + y * w + lab.runs[k].x1, label[k]);
      }
    });
    return out;
  }
  // rows per task: at least ~256k pixels, so that small images are labelled serially
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / w);

  // 1. runs per row, their global raster-order numbering and the runs themselves
  std::vector<int64_t> row_start(rows + 1, 0);
  cpu::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) row_start[r + 1] = cpu::count_runs(pm + r * w, w);
  });
  for (int64_t r = 0; r < rows; ++r) row_start[r + 1] += row_start[r];
  const int64_t n = row_start[rows];
  if (n == 0) return out;
  std::vector<Run> runs(n);
  std::vector<int64_t> parent(n);
  cpu::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      cpu::find_runs(pm + r * w, w, runs.data() + row_start[r]);
      for (int64_t k = row_start[r]; k < row_start[r + 1]; ++k) parent[k] = k;
    }
  });

  // 2. unions inside chunks of rows in parallel (a chunk only touches its own runs), then
  //    across the chunk boundaries serially
  const int64_t nchunks =
      std::max<int64_t>(1, std::min<int64_t>(rows / grain, at::get_num_threads() * 4));
  auto chunk_begin = [&](int64_t c) { return c * rows / nchunks; };
  auto unite_with_previous = [&](int64_t r) {
    if (r % h == 0) return;  // first row of an image
    cpu::unite_rows<int64_t>(runs.data() + row_start[r - 1], row_start[r - 1], row_start[r] - row_start[r - 1],
                             runs.data() + row_start[r], row_start[r], row_start[r + 1] - row_start[r], conn8,
                             parent.data());
  };
  cpu::parallel_for(0, nchunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t r = chunk_begin(c) + 1; r < chunk_begin(c + 1); ++r) unite_with_previous(r);
  });
  for (int64_t c = 1; c < nchunks; ++c) unite_with_previous(chunk_begin(c));

  // 3. labels: roots numbered in run order, per image from 1 (parents precede children)
  std::vector<int32_t> label(n);
  int64_t r = 0;
  int32_t next = 0;
  for (int64_t k = 0; k < n; ++k) {
    while (row_start[r + 1] <= k) {
      ++r;
      if (r % h == 0) next = 0;
    }
    const int64_t root = cpu::find_root(parent.data(), k);
    label[k] = root == k ? ++next : label[root];
  }

  // 4. paint
  cpu::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int32_t* row = po + r * w;
      for (int64_t k = row_start[r]; k < row_start[r + 1]; ++k) std::fill(row + runs[k].x0, row + runs[k].x1, label[k]);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CPU, m) { m.impl("connected_components", &connected_components_cpu); }

}  // namespace pst
