// Whether the ops may skip the value checks that would make them wait for the device.
#pragma once

namespace pst {

// True inside `pst._ops.trusted_inputs()` on this thread (the op pst::_trust_inputs sets it).
// The CUDA ops then check shapes, dtypes and devices only: the values of offsets, segment
// indices and weights are the caller's promise (pst.cluster.cluster_instances builds them
// itself and checks them once, on the device). Outside it every op checks every value, on a
// host copy for CUDA inputs (a wait for the device), with the CPU kernels' messages.
bool inputs_trusted();

}  // namespace pst
