// Sparse GRN: input checks, autograd, kernel dispatch (grn.h).
#include "sparse_ops/grn.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/check.h"
#include "sparse_ops/grn_kernels.h"
#include "sparse_ops/op_util.h"

namespace cnx::sparse_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Statistics (G, Nx, their gradients) are kept in the statistics dtype:
// float32 for float16/bfloat16 features, the features' dtype otherwise.
class GrnFn : public torch::autograd::Function<GrnFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& offsets,
                            const at::Tensor& gamma, const at::Tensor& beta, double eps) {
    const int64_t c = x.size(1);
    const auto acc = detail::acc_dtype(x.scalar_type());
    auto xc = x.contiguous();
    if (kernel_path(xc) == KernelPath::kCpu) {
      // Fused CPU kernel: one pass for the statistics, one for the output.
      auto [out, gx, denom, nx] = detail::grn_forward_cpu(xc, offsets, gamma, beta, eps);
      ctx->save_for_backward({xc, offsets, gamma, gx, denom, nx});
      return out;
    }
    auto gm = gamma.reshape({1, c}).to(acc);
    auto bt = beta.reshape({c}).contiguous();
    auto sumsq = CNX_SPARSE_DISPATCH(segment_dot, xc, xc, xc, offsets);
    auto gx = sumsq.sqrt();
    auto denom = gx.mean(1, true) + eps;
    auto nx = gx / denom;
    auto scale = (gm * nx + 1).contiguous();
    ctx->save_for_backward({xc, offsets, gamma, gx, denom, nx});
    const at::Tensor none;
    return CNX_SPARSE_DISPATCH(segment_affine, xc, xc, scale, none, none, bt, offsets);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& offsets = saved[1];
    const auto& gamma = saved[2];
    const auto& gx = saved[3];
    const auto& denom = saved[4];
    const auto& nx = saved[5];
    const int64_t c = x.size(1);
    const at::Tensor none;
    RECORD_FUNCTION("cnx::sparse_grn_backward", std::vector<c10::IValue>());
    auto g = grads[0].contiguous();
    if (kernel_path(x) == KernelPath::kCpu) {
      auto [dx, dgamma, dbeta] =
          detail::grn_backward_cpu(g, x, offsets, gamma, gx, denom, nx, ctx->needs_input_grad(0));
      return {dx, at::Tensor(), dgamma.reshape(gamma.sizes()), dbeta.reshape(gamma.sizes()), at::Tensor()};
    }
    auto gm = gamma.reshape({1, c}).to(gx.scalar_type());
    auto gxs = CNX_SPARSE_DISPATCH(segment_dot, g, g, x, offsets);    // sum g*x per sample
    auto gs = CNX_SPARSE_DISPATCH(segment_dot, g, g, none, offsets);  // sum g per sample
    auto dgamma = (gxs * nx).sum(0).reshape(gamma.sizes()).to(gamma.scalar_type());
    auto dbeta = gs.sum(0).reshape(gamma.sizes()).to(gamma.scalar_type());
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      auto a = gxs * gm;  // dL/dNx
      auto dg = a / denom - (a * gx).sum(1, true) / (denom * denom * static_cast<double>(c));
      auto coef = at::where(gx > 0, dg / gx, at::zeros_like(gx)).contiguous();
      auto scale = (gm * nx + 1).contiguous();
      dx = CNX_SPARSE_DISPATCH(segment_affine, g, g, scale, x, coef, none, offsets);
    }
    return {dx, at::Tensor(), dgamma, dbeta, at::Tensor()};
  }
};

}  // namespace

at::Tensor sparse_grn(const at::Tensor& features, const at::Tensor& offsets, const at::Tensor& gamma,
                      const at::Tensor& beta, double eps) {
  static const char* op = "sparse_grn";
  RECORD_FUNCTION("cnx::sparse_grn_forward", std::vector<c10::IValue>());
  detail::check_features(op, features);
  CNX_CHECK(offsets.defined() && offsets.dim() == 1 && offsets.scalar_type() == at::kLong && offsets.size(0) >= 2, op,
            ": offsets must be int64 [N+1] with N >= 1");
  detail::check_same(op, "offsets", offsets, features);
  CNX_CHECK(gamma.defined() && gamma.numel() == features.size(1), op, ": gamma has ",
            gamma.defined() ? gamma.numel() : 0, " elements, features ", features.size(1), " channels");
  CNX_CHECK(beta.defined() && beta.numel() == features.size(1), op, ": beta has ", beta.defined() ? beta.numel() : 0,
            " elements, features ", features.size(1), " channels");
  const detail::AutocastOff no_autocast(features);
  if (detail::float_kernels_for(features) && gamma.scalar_type() == at::kFloat && beta.scalar_type() == at::kFloat) {
    // Reduced-precision features on CPU: the float32 kernels between casts
    // (op_util.h). GRN is no autocast op: gamma and beta stay float32.
    CNX_CHECK(gamma.device() == features.device() && beta.device() == features.device(), op,
              ": gamma and beta must be on the features' device ", features.device());
    return GrnFn::apply(features.to(at::kFloat), offsets.contiguous(), gamma, beta, eps).to(features.scalar_type());
  }
  auto gm = detail::match_param(op, "gamma", gamma, features);
  auto bt = detail::match_param(op, "beta", beta, features);
  return GrnFn::apply(features, offsets.contiguous(), gm, bt, eps);
}

}  // namespace cnx::sparse_ops
