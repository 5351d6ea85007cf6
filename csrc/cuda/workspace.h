// Scratch memory for the CUDA launchers (plain C++, no torch and no CUDA headers).
//
// Launchers that need temporaries (cub's temp storage, buffers whose size depends on the
// data) take a Workspace&. The torch side implements it on PyTorch's caching allocator
// (csrc/cuda/torch_workspace.h); every block lives until the Workspace is destroyed, and is
// only used by work queued on the launcher's stream. allocate() throws on failure.
#pragma once

#include <cstddef>

namespace pst::gpu {

class Workspace {
 public:
  virtual ~Workspace() = default;
  // At least `bytes` bytes of device memory, aligned to 256 bytes; never nullptr
  // (a zero-byte request still gets a valid pointer).
  virtual void* allocate(std::size_t bytes) = 0;

  template <typename T>
  T* alloc(std::size_t count) {
    return static_cast<T*>(allocate(count * sizeof(T)));
  }
};

}  // namespace pst::gpu
