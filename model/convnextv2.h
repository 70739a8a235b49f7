#pragma once
// Dense ConvNeXt V2 (docs/model.md), numerically the reference model.
//
// named_parameters() yields exactly the reference implementation's state-dict
// names: downsample_layers.0.{0,1}.* (stem conv, stem LN),
// downsample_layers.i.{0,1}.* (LN, conv; i = 1..3), stages.s.b.{dwconv,norm,
// pwconv1,grn,pwconv2}.*, norm.*, head.*. Weight interop is in weights.h.
//
// Threading: a module instance is not safe for concurrent forward calls that
// also change train()/eval(); otherwise it is as thread-safe as LibTorch.
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <vector>

#include "model/layers.h"
#include "model/options.h"

namespace cnx::model {

// dwconv 7x7 depthwise -> LayerNorm (channels last) -> pwconv1 (C->4C) ->
// GELU (erf) -> GRN(4C) -> pwconv2 (4C->C) -> drop path -> + input.
// A "v1" block (options.h) has no GRN and multiplies the pwconv2 output by
// its layer scale `gamma` (C) before the drop path.
// Members are public so that other encoders (the sparse FCMAE encoder, the
// dense-masked oracle) can run the same weights with their own data path.
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, double drop_path_rate = 0.0, const std::string& block = "v2", double layer_scale_init = 1e-6);

  // x: N,C,H,W. Returns N,C,H,W.
  torch::Tensor forward(const torch::Tensor& x);
  // The per-position part after the depthwise conv, on channels-last input
  // (N,H,W,C): norm -> pwconv1 -> GELU -> GRN -> pwconv2 (v1: no GRN, then
  // x gamma). No residual.
  torch::Tensor pointwise(const torch::Tensor& x_nhwc);
  // v2: GRN, no layer scale; v1: layer scale, no GRN.
  bool has_grn() const { return !grn.is_empty(); }
  // x * gamma (channels last) for a v1 block; x unchanged for v2.
  torch::Tensor layer_scale(const torch::Tensor& x_nhwc) const;

  int64_t dim() const { return dim_; }
  double drop_path_rate() const { return drop_path_rate_; }

  torch::nn::Conv2d dwconv{nullptr};
  LayerNorm norm{nullptr};
  torch::nn::Linear pwconv1{nullptr};
  GRN grn{nullptr};  // null in a v1 block
  torch::nn::Linear pwconv2{nullptr};
  torch::Tensor gamma;  // layer scale (C); undefined in a v2 block

 private:
  int64_t dim_;
  double drop_path_rate_;
};
TORCH_MODULE(Block);

class ConvNeXtV2Impl : public torch::nn::Module {
 public:
  // Validates options (std::invalid_argument) and initialises weights: conv
  // and Linear weights truncated normal std 0.02 cut at +-2, biases 0, head
  // weight and bias multiplied by head_init_scale, LayerNorm 1/0, GRN 0.
  explicit ConvNeXtV2Impl(ConvNeXtV2Options options);

  // Logits N,num_classes (or the pooled features when num_classes == 0).
  torch::Tensor forward(const torch::Tensor& x);
  // norm(mean over H,W of the last stage): N,C3 — the head's input.
  torch::Tensor forward_features(const torch::Tensor& x);
  // The four stages without pooling/norm/head: N,C3,H/32,W/32.
  torch::Tensor forward_encoder(const torch::Tensor& x);
  // downsample_layers[s] then stages[s]; s in 0..3.
  torch::Tensor forward_stage(int64_t s, const torch::Tensor& x);

  const ConvNeXtV2Options& options() const { return options_; }
  int64_t num_stages() const { return 4; }
  torch::nn::ModuleList downsample_layers() const { return downsample_layers_; }
  torch::nn::ModuleList stages() const { return stages_; }
  // Typed access: stem conv/LN, downsample LN/conv (s = 1..3), blocks.
  torch::nn::Conv2d stem_conv() const { return stem_conv_; }
  LayerNorm stem_norm() const { return stem_norm_; }
  LayerNorm downsample_norm(int64_t s) const;
  torch::nn::Conv2d downsample_conv(int64_t s) const;
  Block block(int64_t stage, int64_t index) const;
  const std::vector<Block>& stage_blocks(int64_t stage) const;
  LayerNorm final_norm() const { return norm_; }
  // Null when num_classes == 0.
  torch::nn::Linear head() const { return head_; }

 private:
  ConvNeXtV2Options options_;
  torch::nn::ModuleList downsample_layers_;
  torch::nn::ModuleList stages_;
  torch::nn::Conv2d stem_conv_{nullptr};
  LayerNorm stem_norm_{nullptr};
  std::vector<LayerNorm> ds_norms_;          // index s-1
  std::vector<torch::nn::Conv2d> ds_convs_;  // index s-1
  std::vector<std::vector<Block>> blocks_;
  LayerNorm norm_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(ConvNeXtV2);

// Drop-path rate of every block in stage order: linspace(0, rate, sum(depths)).
std::vector<double> drop_path_rates(const ConvNeXtV2Options& options);

// Sum of numel over a module's parameters (recursively).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace cnx::model
