// CUDA registration of mean_shift: the shared argument checks (mean_shift.h), then the launcher. The value
// checks of offsets and seed_segment wait for the device, unless inputs are trusted (trusted_inputs.h); the
// seeds' grouping is made on the device, so the rest never waits.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "mean_shift.h"
#include "cuda/mean_shift_kernels.h"
#include "cuda/torch_utils.h"
#include "interrupt.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mean_shift_cuda(const at::Tensor& points, const at::Tensor& offsets,
                                                               const at::Tensor& seeds,
                                                               const at::Tensor& seed_segment, double bandwidth,
                                                               int64_t max_iter, double tol) {
  check_mean_shift_args(points, offsets, seeds, seed_segment, bandwidth, max_iter, tol);
  gpu::check_cuda(points, "points");
  check_same_device(points, offsets, "points", "offsets");
  check_same_device(points, seeds, "points", "seeds");
  check_same_device(points, seed_segment, "points", "seed_segment");
  gpu::check_offsets_cuda(offsets, points.size(0), "offsets", "points");
  TORCH_CHECK(points.size(1) <= gpu::kMeanShiftMaxDim, "mean_shift on CUDA supports at most ",
              gpu::kMeanShiftMaxDim, " dimensions, got D = ", points.size(1));

  const int64_t d = points.size(1), s = seeds.size(0), g = offsets.size(0) - 1;
  if (!inputs_trusted() && s > 0) {
    // the CPU kernel's message for the first seed outside [0, G) (a wait for the device; skipped
    // inside pst._ops.trusted_inputs())
    auto bad = at::logical_or(seed_segment < 0, seed_segment >= g);
    if (bad.any().item<bool>()) {
      const int64_t i = bad.nonzero().select(1, 0).min().item<int64_t>();
      TORCH_CHECK(false, "seed_segment[", i, "] = ", seed_segment[i].item<int64_t>(),
                  " is not a segment index in [0, ", g, ")");
    }
  }

  Interrupt().check();  // one kernel launch: stops before it, not inside it
  const c10::cuda::CUDAGuard guard(points.device());
  auto x = points.contiguous();
  auto sd = seeds.contiguous();
  auto off = offsets.contiguous();
  auto modes = at::empty_like(sd);
  auto counts = at::empty({s}, sd.options().dtype(at::kLong));
  auto iters = at::empty({s}, sd.options().dtype(at::kLong));
  if (s == 0 || g == 0) return {modes, counts, iters};
  // the seeds' grouping, by tensor ops on the device: their order by segment (stable), where each
  // segment's seeds start, and where each segment's groups of kMeanShiftSeedsPerBlock seeds start
  auto [sorted_seg, order] = seed_segment.contiguous().sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto seg_start = at::searchsorted(sorted_seg, at::arange(g + 1, off.options()));
  constexpr int64_t per = gpu::kMeanShiftSeedsPerBlock;
  auto group_start = at::zeros({g + 1}, off.options());
  group_start.slice(0, 1).copy_(at::cumsum(at::floor_divide(seg_start.diff() + (per - 1), per), 0));
  const int64_t max_groups = (s + per - 1) / per + std::min(g, s);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(x.device());
  cudaError_t err;
  if (x.scalar_type() == at::kFloat) {
    err = gpu::launch_mean_shift(x.data_ptr<float>(), off.data_ptr<int64_t>(), x.size(0), d, g, sd.data_ptr<float>(),
                                 order.data_ptr<int64_t>(), seg_start.data_ptr<int64_t>(),
                                 group_start.data_ptr<int64_t>(), max_groups, s, bandwidth, max_iter, tol,
                                 modes.data_ptr<float>(), counts.data_ptr<int64_t>(), iters.data_ptr<int64_t>(), ws,
                                 stream);
  } else {
    err = gpu::launch_mean_shift(x.data_ptr<double>(), off.data_ptr<int64_t>(), x.size(0), d, g,
                                 sd.data_ptr<double>(), order.data_ptr<int64_t>(), seg_start.data_ptr<int64_t>(),
                                 group_start.data_ptr<int64_t>(), max_groups, s, bandwidth, max_iter, tol,
                                 modes.data_ptr<double>(), counts.data_ptr<int64_t>(), iters.data_ptr<int64_t>(), ws,
                                 stream);
  }
  C10_CUDA_CHECK(err);
  return {modes, counts, iters};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("mean_shift", &mean_shift_cuda); }

}  // namespace pst
