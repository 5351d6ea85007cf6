// Counter-based random numbers: the value for (seed, i) depends on nothing else, so the CPU
// and CUDA kernels draw the same numbers in any order or thread layout. SplitMix64 finaliser.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PST_HOST_DEVICE __host__ __device__
#else
#define PST_HOST_DEVICE
#endif

namespace pst {

PST_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform double in the open interval (0, 1) for stream `seed`, counter `i`.
PST_HOST_DEVICE inline double uniform_open01(uint64_t seed, uint64_t i) {
  const uint64_t z = splitmix64(splitmix64(seed) ^ (i * 0xd1b54a32d192ed03ULL));
  return (static_cast<double>(z >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // 2^-53
}

}  // namespace pst
