#include "cpu/simd.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

// Every loop is compiled three times, for AVX-512 (F, DQ, VL, BW), AVX2 and the baseline, each
// from the same source (simd_impl.inc) in its own namespace, and the variant for this CPU is
// picked once at run time. (GCC 12's target_clones scalarises vector-extension comparisons, so
// it is not used.)
#if defined(__GNUC__) || defined(__clang__)
#define PST_INLINE inline __attribute__((always_inline))
#else
#define PST_INLINE inline
#endif

// The helpers return vectors; they are always inlined, so GCC's note that the baseline ABI
// passes them differently does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__APPLE__)
#define PST_X86_VARIANTS 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx2")
namespace pst::cpu::isa_avx512 {
#include "cpu/simd_impl.inc"
}  // namespace pst::cpu::isa_avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2")
namespace pst::cpu::isa_avx2 {
#include "cpu/simd_impl.inc"
}  // namespace pst::cpu::isa_avx2
#pragma GCC pop_options
#endif
namespace pst::cpu::isa_base {
#include "cpu/simd_impl.inc"
}  // namespace pst::cpu::isa_base

namespace pst::cpu {
namespace {

// 2: AVX-512, 1: AVX2, 0: baseline. The environment variable PST_CPU_ISA (baseline, avx2 or
// avx512) caps it, so that tests can run every variant on one machine.
int isa_level() {
#ifdef PST_X86_VARIANTS
  static const int level = [] {
    __builtin_cpu_init();
    int best = 0;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
      best = 2;
    else if (__builtin_cpu_supports("avx2"))
      best = 1;
    if (const char* cap = std::getenv("PST_CPU_ISA")) {
      if (std::strcmp(cap, "baseline") == 0) best = 0;
      if (std::strcmp(cap, "avx2") == 0) best = std::min(best, 1);
    }
    return best;
  }();
  return level;
#else
  return 0;
#endif
}

}  // namespace

const char* isa_name() {
  static const char* names[3] = {"baseline", "avx2", "avx512"};
  return names[isa_level()];
}


#ifdef PST_X86_VARIANTS
#define PST_CALL(fn, ...)                                                   \
  (isa_level() == 2   ? isa_avx512::fn(__VA_ARGS__)                         \
   : isa_level() == 1 ? isa_avx2::fn(__VA_ARGS__)                           \
                      : isa_base::fn(__VA_ARGS__))
#else
#define PST_CALL(fn, ...) isa_base::fn(__VA_ARGS__)
#endif

int64_t ball_blocks(const double* bl, int64_t nb, int64_t d, const double* q, double r2, double* vs) {
  return PST_CALL(ball_d, bl, nb, d, q, r2, vs);
}
int64_t ball_blocks(const float* bl, int64_t nb, int64_t d, const double* q, double r2, double* vs) {
  return PST_CALL(ball_f, bl, nb, d, q, r2, vs);
}
int64_t box_blocks(const int32_t* bl, const double* pay, int64_t nb, int64_t d, const int32_t* lo,
                   const int32_t* hi, double* vs) {
  return PST_CALL(box_i, bl, pay, nb, d, lo, hi, vs);
}
bool cell_coords(const double* x, int64_t n, double h, int32_t* out) { return PST_CALL(cells_d, x, n, h, out); }
bool cell_coords(const float* x, int64_t n, double h, int32_t* out) { return PST_CALL(cells_f, x, n, h, out); }
void sqdist_blocks(const double* bl, int64_t nb, int64_t d, const double* q, double* out) {
  PST_CALL(sqdist_d, bl, nb, d, q, out);
}
void sqdist_blocks(const float* bl, int64_t nb, int64_t d, const double* q, double* out) {
  PST_CALL(sqdist_f, bl, nb, d, q, out);
}

}  // namespace pst::cpu

// For callers without the Python module (the CMake library loaded with PST_OPS_LIB): the same
// answer as pst._C.cpu_isa().
extern "C" __attribute__((visibility("default"))) const char* pst_cpu_isa() { return pst::cpu::isa_name(); }
