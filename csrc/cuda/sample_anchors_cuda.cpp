// CUDA registration of sample_anchors: the shared argument checks (sample_anchors.h), then the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "checks.h"
#include "sample_anchors.h"
#include "cuda/sample_anchors_kernels.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

at::Tensor sample_anchors_cuda(const at::Tensor& weights, const at::Tensor& coords, const at::Tensor& offsets,
                               int64_t k, double min_distance, int64_t seed) {
  check_sample_anchors_args(weights, coords, offsets, k, min_distance);
  gpu::check_cuda(weights, "weights");
  check_same_device(weights, coords, "weights", "coords");
  check_same_device(weights, offsets, "weights", "offsets");
  gpu::check_offsets_cuda(offsets, weights.size(0), "offsets", "weights");
  gpu::check_int32_count(weights.size(0), "weights");

  const c10::cuda::CUDAGuard guard(weights.device());
  auto w = weights.contiguous();
  auto xy = coords.contiguous();
  auto off = offsets.contiguous();
  const int64_t n = w.size(0), g = off.size(0) - 1, c = xy.size(1);
  if (n > 0 && !inputs_trusted()) {
    // the first weight that is not finite or negative, with the CPU kernel's message (a wait for
    // the device; skipped inside pst._ops.trusted_inputs())
    auto bad = at::logical_or(at::logical_not(at::isfinite(w)), w < 0);
    if (bad.any().item<bool>()) {
      const int64_t i = bad.nonzero().select(1, 0).min().item<int64_t>();
      TORCH_CHECK(false, "weights should be finite and >= 0, got weights[", i, "] = ", w[i].item<double>());
    }
  }
  gpu::check_int32_count(g, "segments");
  auto out = at::full({g, k}, -1, off.options());
  if (n == 0 || g == 0 || k == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(w.device());
  const uint64_t useed = static_cast<uint64_t>(seed);
  cudaError_t err;
  if (w.scalar_type() == at::kFloat) {
    err = gpu::launch_sample_anchors(w.data_ptr<float>(), xy.data_ptr<float>(), off.data_ptr<int64_t>(), n, c, g, k,
                                     min_distance, useed, out.data_ptr<int64_t>(), ws, stream);
  } else {
    err = gpu::launch_sample_anchors(w.data_ptr<double>(), xy.data_ptr<double>(), off.data_ptr<int64_t>(), n, c, g, k,
                                     min_distance, useed, out.data_ptr<int64_t>(), ws, stream);
  }
  C10_CUDA_CHECK(err);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("sample_anchors", &sample_anchors_cuda); }

}  // namespace pst
