// CUDA registration of nearest_center: the shared argument checks (nearest_center.h), then the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "nearest_center.h"
#include "cuda/nearest_center_kernels.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor> nearest_center_cuda(const at::Tensor& points, const at::Tensor& offsets,
                                                       const at::Tensor& centers, const at::Tensor& center_offsets) {
  check_nearest_center_args(points, offsets, centers, center_offsets);
  gpu::check_cuda(points, "points");
  check_same_device(points, offsets, "points", "offsets");
  check_same_device(points, centers, "points", "centers");
  check_same_device(points, center_offsets, "points", "center_offsets");
  gpu::check_offsets_cuda(offsets, points.size(0), "offsets", "points");
  gpu::check_offsets_cuda(center_offsets, centers.size(0), "center_offsets", "centers");

  const c10::cuda::CUDAGuard guard(points.device());
  auto x = points.contiguous();
  auto c = centers.contiguous();
  auto off = offsets.contiguous();
  auto coff = center_offsets.contiguous();
  const int64_t n = x.size(0), d = x.size(1), g = off.size(0) - 1;
  auto index = at::empty({n}, x.options().dtype(at::kLong));
  auto dist = at::empty({n}, x.options());
  if (n == 0) return {index, dist};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  cudaError_t err;
  if (x.scalar_type() == at::kFloat) {
    err = gpu::launch_nearest_center(x.data_ptr<float>(), off.data_ptr<int64_t>(), c.data_ptr<float>(),
                                     coff.data_ptr<int64_t>(), n, d, g, index.data_ptr<int64_t>(),
                                     dist.data_ptr<float>(), stream);
  } else {
    err = gpu::launch_nearest_center(x.data_ptr<double>(), off.data_ptr<int64_t>(), c.data_ptr<double>(),
                                     coff.data_ptr<int64_t>(), n, d, g, index.data_ptr<int64_t>(),
                                     dist.data_ptr<double>(), stream);
  }
  C10_CUDA_CHECK(err);
  return {index, dist};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("nearest_center", &nearest_center_cuda); }

}  // namespace pst
