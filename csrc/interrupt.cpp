#include "interrupt.h"

#include <c10/util/Exception.h>

#include <csignal>

namespace pst {

namespace detail {
std::atomic<bool> interrupt_requested{false};
static_assert(std::atomic<bool>::is_always_lock_free, "a signal handler may only store lock-free atomics");
}  // namespace detail

namespace {
thread_local bool interruptible = false;
}

void request_interrupt() noexcept { detail::interrupt_requested.store(true, std::memory_order_relaxed); }

bool take_interrupt() noexcept { return detail::interrupt_requested.exchange(false); }

bool set_interruptible(bool on) noexcept {
  const bool previous = interruptible;
  interruptible = on;
  return previous;
}

bool thread_interruptible() noexcept { return interruptible; }

void Interrupt::check() const {
  TORCH_CHECK(!requested(), "pst: interrupted (an interrupt was requested, e.g. SIGINT / Ctrl-C)");
}

}  // namespace pst

// The SIGINT handler of pst._interrupt.interruptible(), for the Python module and for the CMake
// library loaded with PST_OPS_LIB alike (called through ctypes). Main thread only; not nested.
//   pst_sigint_arm(): clears any pending request, makes the calling thread interruptible and
//     installs a SIGINT handler that only requests an interrupt. 1 when armed, 0 when already
//     armed or not supported (Windows).
//   pst_sigint_disarm(): puts the previous handler back, the thread back to non-interruptible;
//     1 when a SIGINT came while armed (the caller then raises KeyboardInterrupt), else 0.
#ifndef _WIN32
namespace {
struct sigaction previous_action;
bool armed = false;
void on_sigint(int) { pst::request_interrupt(); }
}  // namespace

extern "C" __attribute__((visibility("default"))) int pst_sigint_arm() {
  if (armed) return 0;
  struct sigaction action {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  pst::take_interrupt();
  if (sigaction(SIGINT, &action, &previous_action) != 0) return 0;
  armed = true;
  pst::set_interruptible(true);
  return 1;
}

extern "C" __attribute__((visibility("default"))) int pst_sigint_disarm() {
  if (!armed) return 0;
  sigaction(SIGINT, &previous_action, nullptr);
  armed = false;
  pst::set_interruptible(false);
  return pst::take_interrupt() ? 1 : 0;
}
#else
extern "C" int pst_sigint_arm() { return 0; }
extern "C" int pst_sigint_disarm() { return 0; }
#endif
