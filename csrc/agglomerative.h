#pragma once
#include <ATen/core/Tensor.h>

#include <c10/util/string_view.h>

// Argument checks of agglomerative_tree and agglomerative_labels that do not depend on the device:
// shapes, dtypes and scalars, one message each (schemas and semantics in agglomerative.cpp). The
// CPU kernels call them first and add only their own checks (values that need the data); the CUDA
// registration is a host step that runs the CPU kernels. The fake kernels in pst/_meta.py check
// the same with torch._check.
namespace pst {

enum class Linkage { kWard, kAverage, kComplete, kSingle };

// Also parses the linkage name: the kernel gets it back.
Linkage check_agglomerative_tree_args(const at::Tensor& x, const at::Tensor& rowptr, const at::Tensor& col,
                                      c10::string_view linkage, int64_t n_clusters);

void check_agglomerative_labels_args(const at::Tensor& children, int64_t n_samples, int64_t n_merges);

}  // namespace pst
