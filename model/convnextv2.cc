#include "model/convnextv2.h"

#include <ATen/ATen.h>

#include <utility>

#include "common/check.h"

namespace cnx::model {
namespace {

namespace nn = torch::nn;

void init_dense(nn::Conv2d& conv) {
  trunc_normal_(conv->weight, 0.02);
  if (conv->bias.defined()) {
    torch::NoGradGuard no_grad;
    conv->bias.zero_();
  }
}

void init_dense(nn::Linear& linear) {
  trunc_normal_(linear->weight, 0.02);
  if (linear->bias.defined()) {
    torch::NoGradGuard no_grad;
    linear->bias.zero_();
  }
}

}  // namespace

BlockImpl::BlockImpl(int64_t dim, double drop_path_rate, const std::string& block, double layer_scale_init)
    : dim_(dim), drop_path_rate_(drop_path_rate) {
  CNX_CHECK(is_block_type(block), "Block: block must be v2 or v1, got '", block, "'");
  CNX_CHECK(dim > 0, "Block: dim must be positive, got ", dim);
  CNX_CHECK(drop_path_rate >= 0 && drop_path_rate < 1, "Block: drop_path_rate must be in [0,1), got ", drop_path_rate);
  dwconv = register_module("dwconv", nn::Conv2d(nn::Conv2dOptions(dim, dim, 7).padding(3).groups(dim).bias(true)));
  norm = register_module("norm", LayerNorm(dim, DataFormat::kChannelsLast, 1e-6));
  pwconv1 = register_module("pwconv1", nn::Linear(dim, 4 * dim));
  if (block == "v2") grn = register_module("grn", GRN(4 * dim));
  pwconv2 = register_module("pwconv2", nn::Linear(4 * dim, dim));
  // A module's own parameters precede its children's in named_parameters(),
  // as in PyTorch's state dict: stages.s.b.gamma comes first, as in V1's.
  if (block == "v1") gamma = register_parameter("gamma", torch::full({dim}, layer_scale_init));
}

torch::Tensor BlockImpl::layer_scale(const torch::Tensor& x_nhwc) const {
  return gamma.defined() ? x_nhwc * gamma : x_nhwc;
}

torch::Tensor BlockImpl::pointwise(const torch::Tensor& x_nhwc) {
  auto x = norm->forward(x_nhwc);
  x = pwconv1->forward(x);
  x = at::gelu(x);  // exact erf form
  if (has_grn()) x = grn->forward(x);
  return layer_scale(pwconv2->forward(x));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& input) {
  CNX_CHECK(input.dim() == 4 && input.size(1) == dim_, "Block(", dim_, "): expected input N,", dim_, ",H,W, got shape ",
            input.sizes());
  auto x = dwconv->forward(input);
  x = pointwise(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
  return input + drop_path(x, drop_path_rate_, is_training());
}

std::vector<double> drop_path_rates(const ConvNeXtV2Options& o) {
  int64_t total = 0;
  for (auto d : o.depths) total += d;
  std::vector<double> rates(total, 0.0);
  // torch.linspace(0, rate, n): step = rate / (n - 1); a single block gets 0.
  for (int64_t i = 0; i < total && total > 1; ++i) {
    rates[i] = o.drop_path_rate * static_cast<double>(i) / static_cast<double>(total - 1);
  }
  return rates;
}

ConvNeXtV2Impl::ConvNeXtV2Impl(ConvNeXtV2Options options) : options_(std::move(options)) {
  validate(options_);
  const auto& dims = options_.dims;
  downsample_layers_ = register_module("downsample_layers", nn::ModuleList());
  stem_conv_ = nn::Conv2d(nn::Conv2dOptions(options_.in_chans, dims[0], 4).stride(4).bias(true));
  stem_norm_ = LayerNorm(dims[0], DataFormat::kChannelsFirst, 1e-6);
  downsample_layers_->push_back(nn::Sequential(stem_conv_, stem_norm_));
  for (int64_t s = 1; s < 4; ++s) {
    ds_norms_.push_back(LayerNorm(dims[s - 1], DataFormat::kChannelsFirst, 1e-6));
    ds_convs_.push_back(nn::Conv2d(nn::Conv2dOptions(dims[s - 1], dims[s], 2).stride(2).bias(true)));
    downsample_layers_->push_back(nn::Sequential(ds_norms_.back(), ds_convs_.back()));
  }
  stages_ = register_module("stages", nn::ModuleList());
  const auto rates = drop_path_rates(options_);
  size_t k = 0;
  for (int64_t s = 0; s < 4; ++s) {
    nn::Sequential stage;
    blocks_.emplace_back();
    for (int64_t b = 0; b < options_.depths[s]; ++b) {
      blocks_.back().push_back(Block(dims[s], rates[k++], options_.block, options_.layer_scale_init));
      stage->push_back(blocks_.back().back());
    }
    stages_->push_back(stage);
  }
  norm_ = register_module("norm", LayerNorm(dims[3], DataFormat::kChannelsLast, 1e-6));
  if (options_.num_classes > 0) head_ = register_module("head", nn::Linear(dims[3], options_.num_classes));

  // The reference's _init_weights over every Conv2d and Linear, then the head scale.
  init_dense(stem_conv_);
  for (auto& c : ds_convs_) init_dense(c);
  for (auto& stage : blocks_) {
    for (auto& blk : stage) {
      init_dense(blk->dwconv);
      init_dense(blk->pwconv1);
      init_dense(blk->pwconv2);
    }
  }
  if (head_) {
    init_dense(head_);
    torch::NoGradGuard no_grad;
    head_->weight.mul_(options_.head_init_scale);
    head_->bias.mul_(options_.head_init_scale);
  }
}

torch::Tensor ConvNeXtV2Impl::forward_stage(int64_t s, const torch::Tensor& input) {
  CNX_CHECK(s >= 0 && s < 4, "forward_stage: stage must be in 0..3, got ", s);
  torch::Tensor x;
  if (s == 0) {
    CNX_CHECK(input.dim() == 4 && input.size(1) == options_.in_chans, "ConvNeXtV2: expected input N,",
              options_.in_chans, ",H,W, got shape ", input.sizes());
    CNX_CHECK(input.size(2) >= 32 && input.size(3) >= 32, "ConvNeXtV2: input must be at least 32x32, got shape ",
              input.sizes());
    x = stem_norm_->forward(stem_conv_->forward(input));
  } else {
    x = ds_convs_[s - 1]->forward(ds_norms_[s - 1]->forward(input));
  }
  for (auto& blk : blocks_[s]) x = blk->forward(x);
  return x;
}

torch::Tensor ConvNeXtV2Impl::forward_encoder(const torch::Tensor& input) {
  auto x = input;
  for (int64_t s = 0; s < 4; ++s) x = forward_stage(s, x);
  return x;
}

torch::Tensor ConvNeXtV2Impl::forward_features(const torch::Tensor& x) {
  return norm_->forward(forward_encoder(x).mean({-2, -1}));
}

torch::Tensor ConvNeXtV2Impl::forward(const torch::Tensor& x) {
  auto features = forward_features(x);
  return head_ ? head_->forward(features) : features;
}

LayerNorm ConvNeXtV2Impl::downsample_norm(int64_t s) const {
  CNX_CHECK(s >= 1 && s < 4, "downsample_norm: stage must be in 1..3, got ", s);
  return ds_norms_[s - 1];
}

nn::Conv2d ConvNeXtV2Impl::downsample_conv(int64_t s) const {
  CNX_CHECK(s >= 1 && s < 4, "downsample_conv: stage must be in 1..3, got ", s);
  return ds_convs_[s - 1];
}

const std::vector<Block>& ConvNeXtV2Impl::stage_blocks(int64_t stage) const {
  CNX_CHECK(stage >= 0 && stage < 4, "stage_blocks: stage must be in 0..3, got ", stage);
  return blocks_[stage];
}

Block ConvNeXtV2Impl::block(int64_t stage, int64_t index) const {
  const auto& blocks = stage_blocks(stage);
  CNX_CHECK(index >= 0 && index < static_cast<int64_t>(blocks.size()), "block: stage ", stage, " has ", blocks.size(),
            " blocks, asked for ", index);
  return blocks[index];
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters(/*recurse=*/true)) n += p.numel();
  return n;
}

}  // namespace cnx::model
