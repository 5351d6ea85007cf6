#include "cpu/simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__APPLE__)
#define PST_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PST_CLONES
#endif

namespace pst::cpu {
namespace {

template <typename T>
inline void block_sqdist(const T* p, int64_t d, const double* q, double* acc) {
  for (int64_t i = 0; i < kBlock; ++i) acc[i] = 0;
  for (int64_t j = 0; j < d; ++j) {
    const double qj = q[j];
    for (int64_t i = 0; i < kBlock; ++i) {
      const double diff = static_cast<double>(p[j * kBlock + i]) - qj;
      acc[i] += diff * diff;
    }
  }
}

template <typename T>
inline int64_t ball_impl(const T* blocks, int64_t nblk, int64_t d, const double* q, double r2, double* vsum) {
  int64_t n = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    const T* p = blocks + b * d * kBlock;
    double acc[kBlock];
    block_sqdist(p, d, q, acc);
    int64_t in = 0;
    for (int64_t i = 0; i < kBlock; ++i) in += acc[i] <= r2;
    if (in == 0) continue;
    n += in;
    for (int64_t j = 0; j < d; ++j)
      for (int64_t i = 0; i < kBlock; ++i)
        vsum[j * kBlock + i] += acc[i] <= r2 ? static_cast<double>(p[j * kBlock + i]) : 0.0;
  }
  return n;
}

template <typename T>
inline void sqdist_impl(const T* blocks, int64_t nblk, int64_t d, const double* q, double* out) {
  for (int64_t b = 0; b < nblk; ++b) block_sqdist(blocks + b * d * kBlock, d, q, out + b * kBlock);
}

}  // namespace

PST_CLONES int64_t ball_blocks(const double* bl, int64_t nb, int64_t d, const double* q, double r2, double* vs) {
  return ball_impl(bl, nb, d, q, r2, vs);
}
PST_CLONES int64_t ball_blocks(const float* bl, int64_t nb, int64_t d, const double* q, double r2, double* vs) {
  return ball_impl(bl, nb, d, q, r2, vs);
}
PST_CLONES void sqdist_blocks(const double* bl, int64_t nb, int64_t d, const double* q, double* out) {
  sqdist_impl(bl, nb, d, q, out);
}
PST_CLONES void sqdist_blocks(const float* bl, int64_t nb, int64_t d, const double* q, double* out) {
  sqdist_impl(bl, nb, d, q, out);
}

}  // namespace pst::cpu
