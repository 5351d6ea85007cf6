// CUDA registration of morph_refine: the shared argument checks (morph_refine.h), then the launcher. Nothing
// here waits for the device: negative ids are reported by a device-side assert (at::_assert_async) with the
// CPU kernel's message.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "checks.h"
#include "morph_refine.h"
#include "cuda/morph_refine_kernels.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

constexpr int64_t kMaxSide = std::numeric_limits<int32_t>::max() / 4;  // the CPU kernel's kFar
constexpr const char* kNegative = "instances should hold ids >= 0 (0 = no instance), got negative values";

at::Tensor morph_refine_cuda(const at::Tensor& instances, int64_t open_radius, int64_t close_radius, bool disk,
                             bool fill_holes, int64_t min_size, bool largest_component, int64_t connectivity) {
  check_morph_refine_args(instances, open_radius, close_radius, min_size, connectivity);
  gpu::check_cuda(instances, "instances");

  const c10::cuda::CUDAGuard guard(instances.device());
  auto inst = instances.contiguous();
  const int64_t b = inst.size(0), h = inst.size(1), w = inst.size(2);
  const bool nothing = open_radius == 0 && close_radius == 0 && !fill_holes && min_size == 0 && !largest_component;
  if (inst.numel() == 0) return inst.clone();
  const bool is_signed = at::isSignedType(inst.scalar_type());
  if (nothing) {
    if (is_signed) at::_assert_async(inst.min().ge(0), kNegative);
    return inst.clone();
  }
  TORCH_CHECK(w < kMaxSide && h < kMaxSide, "instances should be smaller than ", kMaxSide, " pixels per side, got ",
              h, " x ", w);
  gpu::check_int32_count(h * w, "pixels per image");
  gpu::MorphParams p{std::min(open_radius, h + w), std::min(close_radius, h + w), disk, fill_holes, min_size,
                     largest_component, connectivity == 8};
  auto out = at::empty_like(inst);
  at::Tensor negative;
  int32_t* neg = nullptr;
  if (is_signed) {
    negative = at::zeros({}, inst.options().dtype(at::kInt));
    neg = negative.data_ptr<int32_t>();
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(inst.device());
  cudaError_t err = cudaSuccess;
  switch (inst.scalar_type()) {
    case at::kByte:
      err = gpu::launch_morph_refine(inst.data_ptr<uint8_t>(), b, h, w, p, out.data_ptr<uint8_t>(), neg, ws, stream);
      break;
    case at::kChar:
      err = gpu::launch_morph_refine(inst.data_ptr<int8_t>(), b, h, w, p, out.data_ptr<int8_t>(), neg, ws, stream);
      break;
    case at::kShort:
      err = gpu::launch_morph_refine(inst.data_ptr<int16_t>(), b, h, w, p, out.data_ptr<int16_t>(), neg, ws, stream);
      break;
    case at::kInt:
      err = gpu::launch_morph_refine(inst.data_ptr<int32_t>(), b, h, w, p, out.data_ptr<int32_t>(), neg, ws, stream);
      break;
    case at::kLong:
      err = gpu::launch_morph_refine(inst.data_ptr<int64_t>(), b, h, w, p, out.data_ptr<int64_t>(), neg, ws, stream);
      break;
    default:
      TORCH_CHECK_TYPE(false, "instances should be an integer tensor (uint8, int8, int16, int32 or int64), got ",
                       inst.scalar_type());
  }
  C10_CUDA_CHECK(err);
  if (is_signed) at::_assert_async(negative.eq(0), kNegative);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("morph_refine", &morph_refine_cuda); }

}  // namespace pst
