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

// The instruction set whose variant of these loops runs: "avx512", "avx2" or "baseline".
const char* isa_name();

// Over `nblk` consecutive blocks: for every row with sum_j (x_j - q_j)^2 <= r2 (summed over
// j = 0..d-1 in this order), adds x to vsum ([d][kBlock] lane-wise partial sums, reduce with
// reduce_lanes) and counts it. Returns the count.
int64_t ball_blocks(const double* blocks, int64_t nblk, int64_t d, const double* q, double r2, double* vsum);
int64_t ball_blocks(const float* blocks, int64_t nblk, int64_t d, const double* q, double r2, double* vsum);

// Squared distances of every row of `nblk` blocks to q (same order of operations), into
// out[nblk * kBlock].
void sqdist_blocks(const double* blocks, int64_t nblk, int64_t d, const double* q, double* out);
void sqdist_blocks(const float* blocks, int64_t nblk, int64_t d, const double* q, double* out);

// Over `nblk` blocks of int32 cell coordinates: for every row with lo[j] <= x[j] <= hi[j] for
// all j, adds its payload and weight (pay: per block [d + 1][kBlock], weight last) to vsum
// ([d + 1][kBlock] lane-wise partial sums). Returns the number of such rows.
int64_t box_blocks(const int32_t* blocks, const double* pay, int64_t nblk, int64_t d, const int32_t* lo,
                   const int32_t* hi, double* vsum);

// Grid cell coordinates floor(x[i] / h) of n values, into out. Returns false when one of
// them is not finite or beyond +-2147483000 (out is then unspecified).
bool cell_coords(const double* x, int64_t n, double h, int32_t* out);
bool cell_coords(const float* x, int64_t n, double h, int32_t* out);

inline void reduce_lanes(const double* vsum, int64_t d, double* sum) {
  for (int64_t j = 0; j < d; ++j) {
    double s = 0;
    for (int64_t i = 0; i < kBlock; ++i) s += vsum[j * kBlock + i];
    sum[j] += s;
  }
}

}  // namespace pst::cpu
