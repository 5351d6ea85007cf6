// CUDA registration of grid_mean_shift: the shared argument checks (grid_mean_shift.h), then the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "grid_mean_shift.h"
#include "cuda/grid_mean_shift_kernels.h"
#include "cuda/torch_utils.h"
#include "interrupt.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> grid_mean_shift_cuda(
    const at::Tensor& points, const at::Tensor& offsets, double cell_size, int64_t max_iter, double tol) {
  check_grid_mean_shift_args(points, offsets, cell_size, max_iter, tol);
  gpu::check_cuda(points, "points");
  check_same_device(points, offsets, "points", "offsets");
  gpu::check_offsets_cuda(offsets, points.size(0), "offsets", "points");
  TORCH_CHECK(points.size(1) <= gpu::kGridMeanShiftMaxDim, "grid_mean_shift on CUDA supports at most ",
              gpu::kGridMeanShiftMaxDim, " dimensions, got D = ", points.size(1));
  gpu::check_int32_count(points.size(0), "points");
  gpu::check_int32_count(offsets.size(0), "segments");

  const Interrupt stop;
  stop.check();
  const c10::cuda::CUDAGuard guard(points.device());
  auto x = points.contiguous();
  auto off = offsets.contiguous();
  const int64_t n = x.size(0), d = x.size(1), g = off.size(0) - 1;
  auto labels = at::empty({n}, off.options());
  auto n_iter = at::zeros({}, off.options());
  if (n == 0) {
    return {at::empty({0, d}, x.options()), at::empty({0}, off.options()), at::empty({0}, off.options()), labels,
            n_iter};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(x.device());
  gpu::GridMeanShiftResult res;
  cudaError_t err;
  if (x.scalar_type() == at::kFloat) {
    err = gpu::launch_grid_mean_shift(x.data_ptr<float>(), off.data_ptr<int64_t>(), n, d, g, cell_size, max_iter, tol,
                                      labels.data_ptr<int64_t>(), res, ws, stream, &stop);
  } else {
    err = gpu::launch_grid_mean_shift(x.data_ptr<double>(), off.data_ptr<int64_t>(), n, d, g, cell_size, max_iter,
                                      tol, labels.data_ptr<int64_t>(), res, ws, stream, &stop);
  }
  C10_CUDA_CHECK(err);
  stop.check();
  TORCH_CHECK(!res.overflow, "grid_mean_shift: points / cell_size gives grid coordinates beyond the int32 range "
              "(|x| / cell_size must stay below 2.1e9); rescale the data or use a larger bandwidth");
  const int64_t m = res.m;
  auto modes64 = at::empty({m, d}, x.options().dtype(at::kDouble));
  auto weights = at::empty({m}, off.options());
  auto mseg = at::empty({m}, off.options());
  if (m > 0) {
    C10_CUDA_CHECK(cudaMemcpyAsync(modes64.data_ptr<double>(), res.modes, m * d * sizeof(double),
                                   cudaMemcpyDeviceToDevice, stream));
    C10_CUDA_CHECK(cudaMemcpyAsync(weights.data_ptr<int64_t>(), res.weights, m * sizeof(int64_t),
                                   cudaMemcpyDeviceToDevice, stream));
    C10_CUDA_CHECK(cudaMemcpyAsync(mseg.data_ptr<int64_t>(), res.segment, m * sizeof(int64_t),
                                   cudaMemcpyDeviceToDevice, stream));
  }
  n_iter.fill_(res.n_iter);
  return {modes64.to(x.scalar_type()), weights, mseg, labels, n_iter};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("grid_mean_shift", &grid_mean_shift_cuda); }

}  // namespace pst
