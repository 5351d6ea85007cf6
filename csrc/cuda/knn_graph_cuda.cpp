// CUDA registration of knn_graph: the shared argument checks (knn_graph.h), then the launcher.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "knn_graph.h"
#include "cuda/knn_graph_kernels.h"
#include "cuda/torch_utils.h"
#include "interrupt.h"

namespace pst {
namespace {

std::tuple<at::Tensor, at::Tensor> knn_graph_cuda(const at::Tensor& x, int64_t k) {
  check_knn_graph_args(x, k);
  const int64_t n = x.size(0), d = x.size(1);
  gpu::check_cuda(x, "x");
  TORCH_CHECK(d * static_cast<int64_t>(x.element_size()) <= 32768, "knn_graph on CUDA supports rows of at most ",
              "32 KiB, got D = ", d);

  Interrupt().check();  // one kernel launch: stops before it, not inside it
  const c10::cuda::CUDAGuard guard(x.device());
  auto xc = x.contiguous();
  auto dist = at::empty({n, k}, xc.options());
  auto idx = at::empty({n, k}, xc.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gpu::TorchWorkspace ws(xc.device());
  cudaError_t err;
  if (xc.scalar_type() == at::kFloat) {
    err = gpu::launch_knn_graph(xc.data_ptr<float>(), n, d, k, dist.data_ptr<float>(), idx.data_ptr<int64_t>(), ws,
                                stream);
  } else {
    err = gpu::launch_knn_graph(xc.data_ptr<double>(), n, d, k, dist.data_ptr<double>(), idx.data_ptr<int64_t>(), ws,
                                stream);
  }
  C10_CUDA_CHECK(err);
  return {dist, idx};
}

}  // namespace

TORCH_LIBRARY_IMPL(pst, CUDA, m) { m.impl("knn_graph", &knn_graph_cuda); }

}  // namespace pst
