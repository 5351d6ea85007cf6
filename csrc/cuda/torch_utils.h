// Torch-side helpers of the CUDA ops (included by csrc/cuda/*_cuda.cpp only).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>
#include <vector>

#include "checks.h"
#include "cuda/workspace.h"
#include "trusted_inputs.h"

namespace pst::gpu {

// Workspace on PyTorch's caching allocator: byte tensors on `device`, kept until destruction.
// Allocations are made on the current stream, the one the launchers run on.
class TorchWorkspace final : public Workspace {
 public:
  explicit TorchWorkspace(c10::Device device) : device_(device) {}
  void* allocate(std::size_t bytes) override {
    blocks_.push_back(at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)},
                                at::TensorOptions().dtype(at::kByte).device(device_)));
    return blocks_.back().data_ptr();
  }

 private:
  c10::Device device_;
  std::vector<at::Tensor> blocks_;
};

inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " should be a CUDA tensor, got one on ", t.device());
}

// The shape checks of check_offsets_cpu here; its value checks on a host copy (G + 1 numbers;
// the same messages as the CPU kernel), a wait for the device, unless the inputs are trusted
// (inside pst._ops.trusted_inputs(), see trusted_inputs.h): then nothing waits.
inline void check_offsets_cuda(const at::Tensor& offsets, int64_t n, const char* name, const char* of) {
  check_offsets_shape(offsets, name);
  if (inputs_trusted()) return;
  check_offsets_cpu(offsets.to(at::kCPU).contiguous(), n, name, of);
}

// Kernels index with int32 in places (cub item counts, crop pixels): inputs beyond that are refused.
inline void check_int32_count(int64_t n, const char* what) {
  TORCH_CHECK(n <= static_cast<int64_t>(std::numeric_limits<int32_t>::max()), "the CUDA kernel supports at most ",
              std::numeric_limits<int32_t>::max(), " ", what, ", got ", n);
}

}  // namespace pst::gpu
