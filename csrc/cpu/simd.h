// Hot inner loops compiled for several x86 instruction sets (AVX-512, AVX2, baseline) and
// picked at load time (GCC/Clang target_clones), so one portable wheel still uses the
// wide vector units of the machine it runs on. Other architectures get the plain loop.
//
// Rows are stored in blocks of kBlock rows, each block column-major ([d][kBlock]), padding
// rows holding a huge coordinate so that they are never within any finite radius.
#pragma once

#include <cstdint>

namespace pst::cpu {

constexpr int64_t kBlock = 8;

// Over `nblk` consecutive blocks: for every row with sum_j (x_j - q_j)^2 <= r2 (summed over
// j = 0..d-1 in this order), adds x to vsum ([d][kBlock] lane-wise partial sums, reduce with
// reduce_lanes) and counts it. Returns the count.
int64_t ball_blocks(const double* blocks, int64_t nblk, int64_t d, const double* q, double r2, double* vsum);
int64_t ball_blocks(const float* blocks, int64_t nblk, int64_t d, const double* q, double r2, double* vsum);

// Squared distances of every row of `nblk` blocks to q (same order of operations), into
// out[nblk * kBlock].
void sqdist_blocks(const double* blocks, int64_t nblk, int64_t d, const double* q, double* out);
void sqdist_blocks(const float* blocks, int64_t nblk, int64_t d, const double* q, double* out);

inline void reduce_lanes(const double* vsum, int64_t d, double* sum) {
  for (int64_t j = 0; j < d; ++j) {
    double s = 0;
    for (int64_t i = 0; i < kBlock; ++i) s += vsum[j * kBlock + i];
    sum[j] += s;
  }
}

}  // namespace pst::cpu
