// Parallel loops of the CPU kernels, on torch's thread pool (at::parallel_for: torch's one
// OpenMP runtime), with two additions:
//
// - An honest thread cap (threads_for): no more threads than the work needs and than there are
//   idle cores now. A fork-join region with more threads than free cores waits at its end for a
//   thread that first has to get a core from the other processes: on a busy machine every
//   region then costs a scheduler wait, and the op runs slower than on one thread. So when
//   other runnable tasks leave at most one core idle, the loop runs on the calling thread.
// - Dynamic scheduling (dynamic_for): each thread pulls the next chunk of `chunk` items from a
//   shared counter, so work items of uneven cost (mean-shift seeds, segments of different
//   sizes) keep every thread busy, and a thread that got its core late finds less work left.
//   With `stop`, no new chunk starts once an interrupt is requested, and the call throws after
//   the parallel region (interrupt.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "interrupt.h"

namespace pst::cpu {

// Cores idle now: the online CPUs less the runnable tasks of others (Linux: those of
// /proc/loadavg less this process's own runnable threads, up to torch's thread count; read at
// most every 10 ms). Elsewhere: torch's thread count.
int64_t idle_cores();

// Threads for n items of which each thread should get at least min_per_thread: at most
// torch's thread count and the idle cores; 1 when that leaves no second thread.
inline int64_t threads_for(int64_t n, int64_t min_per_thread) {
  const int64_t per = std::max<int64_t>(1, min_per_thread);
  int64_t t = std::min<int64_t>(at::get_num_threads(), (n + per - 1) / per);
  if (t > 1 && !at::in_parallel_region()) t = std::min(t, idle_cores());
  return std::max<int64_t>(1, t);
}

// at::parallel_for(begin, end, grain, f) under the cap: contiguous ranges, one per thread, or
// f(begin, end) on the calling thread.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  const int64_t n = end - begin, threads = threads_for(n, grain);
  if (threads <= 1) {
    f(begin, end);
    return;
  }
  const int64_t step = (n + threads - 1) / threads;
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = begin + t * step;
      if (b < end) f(b, std::min(end, b + step));
    }
  });
}

template <typename F>
void dynamic_for(int64_t n, int64_t chunk, const F& fn, const Interrupt* stop = nullptr, int64_t min_per_thread = 1) {
  if (n <= 0) return;
  const int64_t threads = threads_for(n, std::max(chunk, min_per_thread));
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
