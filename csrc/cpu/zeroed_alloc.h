// CPU tensors that start out zero without the op writing the zeros.
//
// The memory comes from calloc: a large block is a fresh mapping of the operating system's
// zero pages (glibc serves blocks beyond its mmap threshold that way and skips the memset), so
// an op that writes only a small part of its output (morph_refine: the instances' crops) does
// not pay the page faults and zeroing of the rest; a page it never touches is first mapped
// when someone reads it (then onto the shared zero page) or writes it. Smaller blocks come
// from the heap and calloc clears them. On Linux a block of 4 MiB or more is also marked for
// transparent huge pages (madvise MADV_HUGEPAGE, as NumPy does for its large arrays), so a
// touched 2 MiB stretch costs one page fault instead of 512. The storage is resizable like
// any CPU tensor's.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/Allocator.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pst::cpu {

class ZeroedAllocator final : public c10::Allocator {
 public:
  static constexpr size_t kAlign = 64;            // as c10's CPU allocator
  static constexpr size_t kHuge = size_t{4} << 20;  // NumPy's threshold for huge pages

  c10::DataPtr allocate(size_t n) override {
    void* base = std::calloc(n + kAlign, 1);
    TORCH_CHECK(base != nullptr, "could not allocate ", n, " bytes");
    const auto p = reinterpret_cast<uintptr_t>(base);
    void* data = reinterpret_cast<void*>((p + kAlign - 1) & ~static_cast<uintptr_t>(kAlign - 1));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= kHuge) {  // a hint: the kernel may ignore it, and pages stay zero either way
      constexpr uintptr_t page = 4096;
      const uintptr_t a = (p + page - 1) & ~(page - 1), e = (p + n + kAlign) & ~(page - 1);
      if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
    }
#endif
    return {data, base, &release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

 private:
  static void release(void* base) { std::free(base); }
};

// A contiguous zero tensor of `sizes` with the dtype of `like`, on the CPU.
inline at::Tensor zeroed_empty(at::IntArrayRef sizes, const at::Tensor& like) {
  static ZeroedAllocator allocator;
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const size_t nbytes = static_cast<size_t>(numel) * like.element_size();
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, allocator.allocate(nbytes), &allocator,
                       /*resizable=*/true);
  return at::empty({0}, like.options()).set_(std::move(storage), 0, sizes);
}

}  // namespace pst::cpu
