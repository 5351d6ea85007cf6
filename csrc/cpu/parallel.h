// Dynamic scheduling over at::parallel_for's threads (which splits ranges statically):
// each thread pulls the next chunk of `chunk` items from a shared counter, so work items
// of uneven cost (mean-shift seeds, segments of different sizes) keep every thread busy.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace pst::cpu {

template <typename F>
void dynamic_for(int64_t n, int64_t chunk, const F& fn) {
  if (n <= 0) return;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + chunk - 1) / chunk));
  if (threads == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (;;) {
      const int64_t b = next.fetch_add(chunk);
      if (b >= n) break;
      const int64_t e = std::min(n, b + chunk);
      for (int64_t i = b; i < e; ++i) fn(i);
    }
  });
}

}  // namespace pst::cpu
