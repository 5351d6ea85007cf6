// CUDA registration of agglomerative_tree and agglomerative_labels: a host step.
//
// The merging is sequential (one merge after another, each reading the heap the previous one
// left), so it runs on the CPU kernel: the inputs are copied to the host (this waits for the
// device), the CPU kernel runs through the dispatcher (its checks and messages), and the results
// are copied back to the inputs' device. What runs on the GPU in pst's agglomerative clustering
// is the kNN graph (knn_graph's CUDA kernel); this registration lets a CUDA tensor through
// without the caller moving it.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/torch_utils.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor> agglomerative_tree_cuda(const at::Tensor& x, const at::Tensor& rowptr,
                                                           const at::Tensor& col, c10::string_view linkage,
                                                           int64_t n_clusters) {
  gpu::check_cuda(x, "x");
  check_same_device(x, rowptr, "x", "rowptr");
  check_same_device(x, col, "x", "col");
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pst::agglomerative_tree", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&, c10::string_view, int64_t)>();
  const c10::cuda::CUDAGuard guard(x.device());
  auto [children, distances] = op.call(x.to(at::kCPU), rowptr.to(at::kCPU), col.to(at::kCPU), linkage, n_clusters);
  return {children.to(x.device()), distances.to(x.device())};
}

at::Tensor agglomerative_labels_cuda(const at::Tensor& children, int64_t n_samples, int64_t n_merges) {
  gpu::check_cuda(children, "children");
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pst::agglomerative_labels", "")
                             .typed<at::Tensor(const at::Tensor&, int64_t, int64_t)>();
  const c10::cuda::CUDAGuard guard(children.device());
  return op.call(children.to(at::kCPU), n_samples, n_merges).to(children.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) {
  m.impl("agglomerative_tree", &agglomerative_tree_cuda);
  m.impl("agglomerative_labels", &agglomerative_labels_cuda);
}

}  // namespace pst
