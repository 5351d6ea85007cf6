// CUDA registration of connected_components: the shared argument checks (connected_components.h), then the
// launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "connected_components.h"
#include "cuda/connected_components_kernels.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

at::Tensor connected_components_cuda(const at::Tensor& mask, int64_t connectivity) {
  check_connected_components_args(mask, connectivity);
  gpu::check_cuda(mask, "mask");

  const c10::cuda::CUDAGuard guard(mask.device());
  auto m = mask.contiguous();
  const int64_t b = m.size(0), h = m.size(1), w = m.size(2);
  auto out = at::empty({b, h, w}, m.options().dtype(at::kInt));
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(m.device());
  // bool tensors hold one byte per element, 0 or 1
  C10_CUDA_CHECK(gpu::launch_connected_components(reinterpret_cast<const uint8_t*>(m.data_ptr<bool>()), b, h, w,
                                                  static_cast<int>(connectivity), out.data_ptr<int32_t>(), ws,
                                                  stream));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("connected_components", &connected_components_cuda); }

}  // namespace pst
