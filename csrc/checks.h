// Argument checks shared by the kernels. Each says what was expected and what came.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace pst {

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name, const char* layout) {
  TORCH_CHECK(t.dim() == dim, name, " should be a ", dim, "-D tensor ", layout, ", got shape ",
              t.sizes());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " should be float32 or float64, got ", t.scalar_type());
}

inline void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype, name, " should be ", dtype, ", got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* name_a,
                              const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), name_a, " and ", name_b,
              " should be on the same device, got ", a.device(), " and ", b.device());
}

// t has the dtype of ref: "<name> should have the dtype of <ref_name> (Float), got Double".
inline void check_dtype_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " should have the dtype of ", ref_name, " (",
              ref.scalar_type(), "), got ", t.scalar_type());
}

// t (2-D) has as many columns as ref: "<name> should have D = 3 columns like <ref_name>, got 2".
inline void check_columns_like(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK(t.size(1) == ref.size(1), name, " should have D = ", ref.size(1), " columns like ", ref_name, ", got ",
              t.size(1));
}

// t has n rows, one per item of another input: "<name> should have <per> (n), got m", with per
// e.g. "one entry per seed".
inline void check_rows(const at::Tensor& t, int64_t n, const char* name, const char* per) {
  TORCH_CHECK(t.size(0) == n, name, " should have ", per, " (", n, "), got ", t.size(0));
}

inline void check_positive_finite(double v, const char* name) {
  TORCH_CHECK(std::isfinite(v) && v > 0, name, " should be a finite number > 0, got ", v);
}

// Neither NaN nor +-Inf, and >= 0: tolerances, distances, sampling weights.
inline bool finite_nonnegative(double v) { return std::isfinite(v) && v >= 0; }

inline void check_nonnegative_finite(double v, const char* name) {
  TORCH_CHECK(finite_nonnegative(v), name, " should be a finite number >= 0, got ", v);
}

// Every value of a float32/float64 CPU tensor is finite (no NaN, no +-Inf); the error names the
// first one that is not, by its index. One vectorisable pass over the values.
void check_finite_cpu(const at::Tensor& t, const char* name);

// offsets: int64 [G+1], offsets[0] == 0, non-decreasing, offsets[G] == n. CPU tensors only: the
// ops' check_<op>_args check the shape (check_offsets_shape), the CPU kernels the values here, the
// CUDA wrappers the values on a host copy (gpu::check_offsets_cuda) unless inputs are trusted.
void check_offsets_cpu(const at::Tensor& offsets, int64_t n, const char* name, const char* of);

inline void check_offsets_shape(const at::Tensor& offsets, const char* name) {
  check_dim(offsets, 1, name, "[G + 1] of segment boundaries");
  check_dtype(offsets, at::kLong, name);
  TORCH_CHECK(offsets.size(0) >= 1, name, " should have at least one element (G + 1 >= 1), got 0");
}

}  // namespace pst
