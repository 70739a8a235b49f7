#pragma once
// Building blocks of ConvNeXt V2 (docs/model.md), shared by the dense
// model and the FCMAE encoder/decoder. Parameter names match the reference
// implementation's state dict (`weight`/`bias`, `gamma`/`beta`).
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace cnx::model {

// In-place truncated normal, mean 0, values cut to [a, b] (absolute, not in
// units of std), by the inverse-CDF method of timm/PyTorch's trunc_normal_.
// Runs without autograd; works on any floating dtype and device. Draws from
// the global generator.
void trunc_normal_(torch::Tensor tensor, double std, double a = -2.0, double b = 2.0);

// Stochastic depth: in training, each sample's branch is zeroed with
// probability p and kept ones are scaled by 1/(1-p). Identity when
// !training or p == 0.
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training);

enum class DataFormat { kChannelsLast, kChannelsFirst };

// LayerNorm over the channel dimension: the last one (N,H,W,C or N,C) for
// kChannelsLast, dimension 1 of N,C,H,W for kChannelsFirst. eps 1e-6 by
// default as in ConvNeXt. Parameters `weight` (init 1), `bias` (init 0), shape (C).
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t channels, DataFormat format, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);

  int64_t channels() const { return channels_; }
  DataFormat format() const { return format_; }
  double eps() const { return eps_; }

  torch::Tensor weight;
  torch::Tensor bias;

 private:
  int64_t channels_;
  DataFormat format_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

// Global Response Normalization on channels-last input (N,H,W,C):
//   Gx = ||x||_2 over (H,W) per sample and channel (no eps in the sqrt),
//   Nx = Gx / (mean_C Gx + 1e-6),  out = gamma * (x * Nx) + beta + x.
// `gamma`, `beta` have the reference's shape (1,1,1,C), init 0 (identity).
class GRNImpl : public torch::nn::Module {
 public:
  explicit GRNImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);

  int64_t channels() const { return channels_; }

  torch::Tensor gamma;
  torch::Tensor beta;

 private:
  int64_t channels_;
};
TORCH_MODULE(GRN);

// The GRN formula for a given Gx (N,1,1,C); exposed so that masked or
// sparse variants can reuse the exact arithmetic with their own Gx.
torch::Tensor grn_apply(const torch::Tensor& x, const torch::Tensor& gx, const torch::Tensor& gamma,
                        const torch::Tensor& beta);

}  // namespace cnx::model
