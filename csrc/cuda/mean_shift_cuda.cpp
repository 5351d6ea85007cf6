// CUDA registration of mean_shift: checks (the CPU kernel's messages), then the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "checks.h"
#include "cuda/mean_shift_kernels.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mean_shift_cuda(const at::Tensor& points, const at::Tensor& offsets,
                                                               const at::Tensor& seeds,
                                                               const at::Tensor& seed_segment, double bandwidth,
                                                               int64_t max_iter, double tol) {
  check_dim(points, 2, "points", "[N, D]");
  check_floating(points, "points");
  check_dim(seeds, 2, "seeds", "[S, D]");
  TORCH_CHECK(seeds.scalar_type() == points.scalar_type(), "seeds should have the dtype of points (",
              points.scalar_type(), "), got ", seeds.scalar_type());
  TORCH_CHECK(seeds.size(1) == points.size(1), "seeds should have D = ", points.size(1),
              " columns like points, got ", seeds.size(1));
  check_dim(seed_segment, 1, "seed_segment", "[S]");
  check_dtype(seed_segment, at::kLong, "seed_segment");
  TORCH_CHECK(seed_segment.size(0) == seeds.size(0), "seed_segment should have one entry per seed (",
              seeds.size(0), "), got ", seed_segment.size(0));
  gpu::check_cuda(points, "points");
  check_same_device(points, offsets, "points", "offsets");
  check_same_device(points, seeds, "points", "seeds");
  check_same_device(points, seed_segment, "points", "seed_segment");
  auto off_host = gpu::check_offsets_cuda(offsets, points.size(0), "offsets", "points");
  check_positive_finite(bandwidth, "bandwidth");
  TORCH_CHECK(max_iter >= 0, "max_iter should be >= 0, got ", max_iter);
  TORCH_CHECK(std::isfinite(tol) && tol >= 0, "tol should be a finite number >= 0, got ", tol);
  TORCH_CHECK(points.size(1) <= gpu::kMeanShiftMaxDim, "mean_shift on CUDA supports at most ",
              gpu::kMeanShiftMaxDim, " dimensions, got D = ", points.size(1));

  const int64_t d = points.size(1), s = seeds.size(0), g = off_host.size(0) - 1;
  auto seg_host = seed_segment.to(at::kCPU).contiguous();
  const int64_t* pseg = seg_host.data_ptr<int64_t>();
  for (int64_t i = 0; i < s; ++i)
    TORCH_CHECK(pseg[i] >= 0 && pseg[i] < g, "seed_segment[", i, "] = ", pseg[i], " is not a segment index in [0, ", g,
                ")");

  const c10::cuda::CUDAGuard guard(points.device());
  auto x = points.contiguous();
  auto sd = seeds.contiguous();
  auto modes = at::empty_like(sd);
  auto counts = at::empty({s}, sd.options().dtype(at::kLong));
  auto iters = at::empty({s}, sd.options().dtype(at::kLong));
  if (s == 0) return {modes, counts, iters};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(x.device());
  cudaError_t err;
  if (x.scalar_type() == at::kFloat) {
    err = gpu::launch_mean_shift(x.data_ptr<float>(), off_host.data_ptr<int64_t>(), x.size(0), d, g,
                                 sd.data_ptr<float>(), pseg, s, bandwidth, max_iter, tol, modes.data_ptr<float>(),
                                 counts.data_ptr<int64_t>(), iters.data_ptr<int64_t>(), ws, stream);
  } else {
    err = gpu::launch_mean_shift(x.data_ptr<double>(), off_host.data_ptr<int64_t>(), x.size(0), d, g,
                                 sd.data_ptr<double>(), pseg, s, bandwidth, max_iter, tol, modes.data_ptr<double>(),
                                 counts.data_ptr<int64_t>(), iters.data_ptr<int64_t>(), ws, stream);
  }
  C10_CUDA_CHECK(err);
  return {modes, counts, iters};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("mean_shift", &mean_shift_cuda); }

}  // namespace pst
