// Dynamic scheduling over at::parallel_for's threads (which splits ranges statically):
// each thread pulls the next chunk of `chunk` items from a shared counter, so work items
// of uneven cost (mean-shift seeds, segments of different sizes) keep every thread busy.
// With `stop`, no new chunk starts once an interrupt is requested, and the call throws after
// the parallel region (interrupt.h). Threads are capped so that each gets at least
// `min_per_thread` items: small work runs on the calling thread, without a parallel region.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "interrupt.h"

namespace pst::cpu {

template <typename F>
void dynamic_for(int64_t n, int64_t chunk, const F& fn, const Interrupt* stop = nullptr, int64_t min_per_thread = 1) {
  if (n <= 0) return;
  const int64_t per = std::max(chunk, min_per_thread);
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + per - 1) / per));
  std::atomic<int64_t> next{0};
  auto work = [&](int64_t, int64_t) {
    for (;;) {
      if (stop && stop->requested()) break;
      const int64_t b = next.fetch_add(chunk);
      if (b >= n) break;
      const int64_t e = std::min(n, b + chunk);
      for (int64_t i = b; i < e; ++i) fn(i);
    }
  };
  if (threads == 1)
    work(0, 1);
  else
    at::parallel_for(0, threads, 1, work);
  if (stop) stop->check();
}

}  // namespace pst::cpu
