// densify / sparsify (densify.h). Both are ATen operators only, so they run
// on every device and dtype; there are no device-specific kernels.
#include "sparse_ops/densify.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/check.h"
#include "sparse_ops/op_util.h"

namespace cnx::sparse_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class DensifyFn : public torch::autograd::Function<DensifyFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& site_index, int64_t n,
                            int64_t h, int64_t w) {
    const int64_t c = x.size(1);
    auto out = at::zeros({n * h * w, c}, x.options());
    out.index_copy_(0, site_index, x);
    ctx->save_for_backward({site_index});
    ctx->saved_data["c"] = c;
    return out.view({n, h, w, c}).permute({0, 3, 1, 2});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto site_index = ctx->get_saved_variables()[0];
    const int64_t c = ctx->saved_data["c"].toInt();
    auto g = grads[0].permute({0, 2, 3, 1}).reshape({-1, c}).index_select(0, site_index);
    return {g, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor densify(const at::Tensor& features, const SparseLayout& layout) {
  RECORD_FUNCTION("cnx::densify", std::vector<c10::IValue>());
  detail::check_features("densify", features);
  CNX_CHECK(features.size(0) == layout.num_sites, "densify: features have ", features.size(0), " rows, layout ",
            layout.num_sites, " sites");
  CNX_CHECK(layout.site_index.device() == features.device(), "densify: layout is on ", layout.site_index.device(),
            ", features on ", features.device());
  return DensifyFn::apply(features, layout.site_index, layout.batch, layout.height, layout.width);
}

at::Tensor sparsify(const at::Tensor& dense, const SparseLayout& layout) {
  CNX_CHECK(dense.defined() && dense.dim() == 4 && dense.size(0) == layout.batch && dense.size(2) == layout.height &&
                dense.size(3) == layout.width,
            "sparsify: tensor ", dense.defined() ? dense.sizes() : at::IntArrayRef{}, " does not match a ",
            layout.batch, "x", layout.height, "x", layout.width, " layout");
  return dense.permute({0, 2, 3, 1}).reshape({-1, dense.size(1)}).index_select(0, layout.site_index);
}

}  // namespace cnx::sparse_ops
