// Sparse depthwise conv: input checks, autograd, kernel dispatch (dwconv.h).
#include "sparse_ops/dwconv.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/check.h"
#include "sparse_ops/dwconv_kernels.h"
#include "sparse_ops/op_util.h"

namespace cnx::sparse_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class DwconvFn : public torch::autograd::Function<DwconvFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& map, const at::Tensor& weight,
                            const at::Tensor& bias, bool has_bias) {
    const int64_t c = weight.size(0), k = weight.size(2);
    auto xc = x.contiguous();
    auto w = weight.reshape({c, k * k}).t().contiguous();
    auto b = has_bias ? bias.contiguous() : at::Tensor();
    ctx->save_for_backward({xc, map, weight});
    ctx->saved_data["has_bias"] = has_bias;
    return CNX_SPARSE_DISPATCH(dwconv_forward, xc, xc, map, w, b);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& map = saved[1];
    const auto& weight = saved[2];
    const int64_t c = weight.size(0), k = weight.size(2);
    auto g = grads[0].contiguous();
    const bool need_dx = ctx->needs_input_grad(0), need_dwb = ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
    RECORD_FUNCTION("cnx::sparse_dwconv_backward", std::vector<c10::IValue>({g, map, need_dx, need_dwb}));
    at::Tensor dx, dw, db;
    if (need_dx) {
      // grad_in[j] = sum_t w[k*k-1-t] * g[map[j, t]]: the forward kernel, mirrored weights, no bias.
      auto wflip = weight.reshape({c, k * k}).flip({1}).t().contiguous();
      const at::Tensor no_bias;
      dx = CNX_SPARSE_DISPATCH(dwconv_forward, g, g, map, wflip, no_bias);
    }
    if (need_dwb) {
      auto grads_wb = CNX_SPARSE_DISPATCH(dwconv_weight_grad, g, g, x, map);
      dw = std::get<0>(grads_wb).t().reshape(weight.sizes());
      if (ctx->saved_data["has_bias"].toBool()) db = std::get<1>(grads_wb).contiguous();
    }
    return {dx, at::Tensor(), dw, db, at::Tensor()};
  }
};

}  // namespace

at::Tensor sparse_depthwise_conv(const at::Tensor& input, const at::Tensor& map, const at::Tensor& weight,
                                 const at::Tensor& bias) {
  static const char* op = "sparse_depthwise_conv";
  RECORD_FUNCTION("cnx::sparse_dwconv_forward", std::vector<c10::IValue>({input, map}));
  detail::check_features(op, input);
  // A convolution: under autocast it runs in the reduced dtype, like Conv2d.
  const at::Tensor features = detail::autocast_conv_input(input);
  CNX_CHECK(weight.defined() && weight.dim() == 4 && weight.size(1) == 1 && weight.size(2) == weight.size(3), op,
            ": weight must be (C, 1, k, k), got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  CNX_CHECK(weight.size(0) == features.size(1), op, ": weight has ", weight.size(0), " channels, features ",
            features.size(1));
  auto w = detail::match_param(op, "weight", weight, features);
  detail::check_map(op, map, features.size(0), features);
  CNX_CHECK(map.size(1) == weight.size(2) * weight.size(3), op, ": neighbour map has ", map.size(1),
            " offsets, kernel ", weight.size(2), "x", weight.size(3));
  if (bias.defined()) {
    CNX_CHECK(bias.dim() == 1 && bias.size(0) == features.size(1), op, ": bias must be (C), got ", bias.sizes());
  }
  auto b = detail::match_param(op, "bias", bias, features);
  const detail::AutocastOff no_autocast(features);
  if (detail::float_kernels_for(features)) {
    // Reduced-precision features on CPU: the float32 kernels between casts
    // (op_util.h); the parameters were rounded to the features' dtype above.
    const auto f = at::kFloat;
    auto bf = b.defined() ? b.to(f) : at::Tensor();
    auto y = DwconvFn::apply(features.to(f), map.contiguous(), w.to(f), detail::bias_or_placeholder(bf, w.to(f)),
                             bf.defined());
    return y.to(features.scalar_type());
  }
  return DwconvFn::apply(features, map.contiguous(), w, detail::bias_or_placeholder(b, features), b.defined());
}

}  // namespace cnx::sparse_ops
