#include "model/layers.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>

#include "common/check.h"
#include "model/precision.h"

namespace cnx::model {

void trunc_normal_(torch::Tensor tensor, double std, double a, double b) {
  CNX_CHECK(tensor.defined(), "trunc_normal_: undefined tensor");
  CNX_CHECK(tensor.is_floating_point(), "trunc_normal_: needs a floating tensor, got ", tensor.scalar_type());
  CNX_CHECK(std > 0 && a < b, "trunc_normal_: need std > 0 and a < b, got std=", std, " a=", a, " b=", b);
  torch::NoGradGuard no_grad;
  auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = norm_cdf(a / std);
  const double u = norm_cdf(b / std);
  // Half types lack erfinv on some backends: draw in float32, then copy.
  const bool low_precision = tensor.scalar_type() != at::kFloat && tensor.scalar_type() != at::kDouble;
  torch::Tensor work = low_precision ? at::empty(tensor.sizes(), tensor.options().dtype(at::kFloat)) : tensor;
  work.uniform_(2 * l - 1, 2 * u - 1);
  work.erfinv_();
  work.mul_(std * std::sqrt(2.0));
  work.clamp_(a, b);
  if (low_precision) tensor.copy_(work);
}

torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (p == 0.0 || !training) return x;
  CNX_CHECK(p > 0.0 && p < 1.0, "drop_path: probability must be in [0, 1), got ", p);
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  auto mask = at::empty(shape, x.options()).bernoulli_(keep).div_(keep);
  return x * mask;
}

LayerNormImpl::LayerNormImpl(int64_t channels, DataFormat format, double eps)
    : channels_(channels), format_(format), eps_(eps) {
  CNX_CHECK(channels > 0, "LayerNorm: channels must be positive, got ", channels);
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  if (format_ == DataFormat::kChannelsLast) {
    CNX_CHECK(x.dim() >= 1 && x.size(-1) == channels_, "LayerNorm(channels_last, ", channels_,
              "): input's last dimension must be ", channels_, ", got shape ", x.sizes());
    // Statistics in float32 under autocast (docs/model.md, "Mixed precision").
    return at::layer_norm(float_under_autocast(x), {channels_}, weight, bias, eps_);
  }
  CNX_CHECK(x.dim() == 4 && x.size(1) == channels_, "LayerNorm(channels_first, ", channels_, "): expected input N,",
            channels_, ",H,W, got shape ", x.sizes());
  // Same statistics as the reference's explicit mean/var over dim 1 (biased
  // variance), computed by the fused kernel on an N,H,W,C view.
  auto y = at::layer_norm(float_under_autocast(x).permute({0, 2, 3, 1}), {channels_}, weight, bias, eps_);
  return y.permute({0, 3, 1, 2});
}

GRNImpl::GRNImpl(int64_t channels) : channels_(channels) {
  CNX_CHECK(channels > 0, "GRN: channels must be positive, got ", channels);
  gamma = register_parameter("gamma", torch::zeros({1, 1, 1, channels}));
  beta = register_parameter("beta", torch::zeros({1, 1, 1, channels}));
}

torch::Tensor grn_apply(const torch::Tensor& x, const torch::Tensor& gx, const torch::Tensor& gamma,
                        const torch::Tensor& beta) {
  auto nx = gx / (gx.mean(-1, /*keepdim=*/true) + 1e-6);
  return gamma * (x * nx) + beta + x;
}

torch::Tensor GRNImpl::forward(const torch::Tensor& x) {
  CNX_CHECK(x.dim() == 4 && x.size(3) == channels_, "GRN(", channels_, "): expected channels-last input N,H,W,",
            channels_, ", got shape ", x.sizes());
  // ||x|| and its mean in float32 under autocast (the output is then float32).
  auto gx = at::linalg_vector_norm(float_under_autocast(x), 2, at::IntArrayRef{1, 2}, /*keepdim=*/true, c10::nullopt);
  return grn_apply(x, gx, gamma, beta);
}

}  // namespace cnx::model
