// CUDA registration of merge_modes: the shared argument checks (merge_modes.h), then the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "merge_modes.h"
#include "cuda/merge_modes_kernels.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor> merge_modes_cuda(const at::Tensor& centers, const at::Tensor& weights,
                                                    const at::Tensor& segment, double radius) {
  check_merge_modes_args(centers, weights, segment, radius);
  const int64_t k = centers.size(0), d = centers.size(1);
  gpu::check_cuda(centers, "centers");
  check_same_device(centers, weights, "centers", "weights");
  check_same_device(centers, segment, "centers", "segment");
  gpu::check_int32_count(k, "centres");

  const c10::cuda::CUDAGuard guard(centers.device());
  auto c = centers.contiguous();
  auto w = weights.contiguous();
  auto sg = segment.contiguous();
  auto keeper = at::empty({k}, sg.options());
  auto order = at::empty({k}, sg.options());
  if (k == 0) return {keeper, order};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(c.device());
  cudaError_t err;
  if (c.scalar_type() == at::kFloat) {
    err = gpu::launch_merge_modes(c.data_ptr<float>(), w.data_ptr<double>(), sg.data_ptr<int64_t>(), k, d, radius,
                                  keeper.data_ptr<int64_t>(), order.data_ptr<int64_t>(), ws, stream);
  } else {
    err = gpu::launch_merge_modes(c.data_ptr<double>(), w.data_ptr<double>(), sg.data_ptr<int64_t>(), k, d, radius,
                                  keeper.data_ptr<int64_t>(), order.data_ptr<int64_t>(), ws, stream);
  }
  C10_CUDA_CHECK(err);
  return {keeper, order};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("merge_modes", &merge_modes_cuda); }

}  // namespace pst
