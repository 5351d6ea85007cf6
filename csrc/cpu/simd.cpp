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

// One block as a vector of kBlock doubles (GCC/Clang vector extension: AVX-512 registers in
// the avx512f clone, pairs of AVX2 registers in the avx2 one).
typedef double v8d __attribute__((vector_size(kBlock * sizeof(double))));
typedef float v8f __attribute__((vector_size(kBlock * sizeof(float))));
typedef int64_t v8l __attribute__((vector_size(kBlock * sizeof(int64_t))));
static_assert(kBlock == 8, "the vector types assume blocks of 8 rows");

inline v8d load_block(const double* p) {
  v8d v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline v8d load_block(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, v8d);
}

template <typename T>
inline int64_t ball_impl(const T* blocks, int64_t nblk, int64_t d, const double* q, double r2, double* vsum) {
  int64_t n = 0;
  const v8d r2v = v8d{} + r2;
  for (int64_t b = 0; b < nblk; ++b) {
    const T* p = blocks + b * d * kBlock;
    v8d acc = v8d{};
    for (int64_t j = 0; j < d; ++j) {
      const v8d diff = load_block(p + j * kBlock) - q[j];
      acc += diff * diff;
    }
    const v8l in = acc <= r2v;  // -1 where inside
    const v8l cnt = -in;
    int64_t c = 0;
    for (int i = 0; i < kBlock; ++i) c += cnt[i];
    if (c == 0) continue;
    n += c;
    for (int64_t j = 0; j < d; ++j) {
      v8d s = load_block(vsum + j * kBlock);
      s += in ? load_block(p + j * kBlock) : v8d{};
      __builtin_memcpy(vsum + j * kBlock, &s, sizeof(s));
    }
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
