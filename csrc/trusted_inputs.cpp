#include "trusted_inputs.h"

#include <torch/library.h>

// _trust_inputs(on) -> previous: turns the value checks of the CUDA ops off (on = true) or back
// on for the calling thread, and returns the previous setting. Used through the context manager
// pst._ops.trusted_inputs(), by callers that build the ops' offsets and indices themselves.
namespace pst {
namespace {

thread_local bool trusted = false;

bool trust_inputs(bool on) {
  const bool previous = trusted;
  trusted = on;
  return previous;
}

}  // namespace

bool inputs_trusted() { return trusted; }

TORCH_LIBRARY_FRAGMENT(pst, m) { m.def("_trust_inputs(bool on) -> bool", &trust_inputs); }

}  // namespace pst
