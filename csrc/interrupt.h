// Stopping long ops early on request (Ctrl-C). No torch headers: the CUDA launchers include it.
//
// A request is one process-wide flag, set by request_interrupt() (async-signal-safe: a C signal
// handler may call it). Only ops called on a thread that opted in with set_interruptible(true)
// heed it, so that a request meant for one thread's call leaves other threads' ops alone. Python
// arms both for the duration of one op call (pst._interrupt.interruptible: a SIGINT handler that
// calls request_interrupt(), installed in the main thread only).
//
// In a kernel: make one `Interrupt stop;` on the op's calling thread, at entry (it reads the
// thread's setting once). Worker threads (at::parallel_for, OpenMP) poll stop.requested() between
// chunks and return early; the calling thread calls stop.check() after the parallel region, which
// throws. No exception ever crosses a parallel region.
#pragma once

#include <atomic>

namespace pst {

namespace detail {
extern std::atomic<bool> interrupt_requested;
}

// Asks the ops running on interruptible threads to stop. The request stays until
// take_interrupt() clears it (every later op on an interruptible thread stops at once).
void request_interrupt() noexcept;

// Whether a request was pending; clears it.
bool take_interrupt() noexcept;

// Whether the calling thread's op calls stop on request (false by default); returns the
// previous setting.
bool set_interruptible(bool on) noexcept;
bool thread_interruptible() noexcept;

class Interrupt {
 public:
  Interrupt() noexcept : armed_(thread_interruptible()) {}

  // Cheap (one relaxed atomic load); callable from any thread.
  bool requested() const noexcept {
    return armed_ && detail::interrupt_requested.load(std::memory_order_relaxed);
  }

  // Throws c10::Error("pst: interrupted ...") when requested. On the calling thread, outside
  // parallel regions only.
  void check() const;

 private:
  bool armed_;
};

}  // namespace pst
