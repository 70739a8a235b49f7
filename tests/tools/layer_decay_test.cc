// Layer-wise lr decay ids and values for atto against hand-computed values.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "model/convnextv2.h"
#include "tools/eval/layer_decay.h"

namespace cnx::eval {
namespace {

const std::vector<int64_t> kAtto{2, 2, 6, 2};  // L = 12

TEST(LayerDecay, AttoIdsByHand) {
  // Stem and the first block: 1; a downsample shares its stage's first block id.
  const std::map<std::string, int64_t> expected{{"downsample_layers.0.0.weight", 1},
                                                {"downsample_layers.0.1.bias", 1},
                                                {"stages.0.0.dwconv.weight", 1},
                                                {"stages.0.1.grn.gamma", 2},
                                                {"downsample_layers.1.0.weight", 3},
                                                {"downsample_layers.1.1.weight", 3},
                                                {"stages.1.0.pwconv1.weight", 3},
                                                {"stages.1.1.pwconv2.bias", 4},
                                                {"downsample_layers.2.1.weight", 5},
                                                {"stages.2.0.norm.weight", 5},
                                                {"stages.2.5.dwconv.bias", 10},
                                                {"downsample_layers.3.0.bias", 11},
                                                {"stages.3.0.grn.beta", 11},
                                                {"stages.3.1.pwconv1.weight", 12},
                                                {"norm.weight", 13},
                                                {"head.weight", 13},
                                                {"head.bias", 13}};
  for (const auto& [name, id] : expected) EXPECT_EQ(layer_id(name, kAtto), id) << name;
  EXPECT_THROW(layer_id("stages.4.0.dwconv.weight", kAtto), std::exception);
  EXPECT_THROW(layer_id("stages.0.2.dwconv.weight", kAtto), std::exception);
}

TEST(LayerDecay, AttoScalesByHand) {
  // 0.9^(13 - id)
  EXPECT_DOUBLE_EQ(layer_lr_scale(13, kAtto, 0.9), 1.0);
  EXPECT_DOUBLE_EQ(layer_lr_scale(12, kAtto, 0.9), 0.9);
  EXPECT_NEAR(layer_lr_scale(11, kAtto, 0.9), 0.81, 1e-15);
  EXPECT_NEAR(layer_lr_scale(5, kAtto, 0.9), 0.43046721, 1e-15);
  EXPECT_NEAR(layer_lr_scale(1, kAtto, 0.9), 0.282429536481, 1e-12);
  EXPECT_DOUBLE_EQ(layer_lr_scale(1, kAtto, 1.0), 1.0);
}

TEST(LayerDecay, OptimizerGroupsAndAppliedLrs) {
  model::ConvNeXtV2Options o = model::variant_options("atto");
  o.num_classes = 10;
  model::ConvNeXtV2 net(o);
  worker::NamedTensors params;
  for (const auto& item : net->named_parameters(true)) params.emplace_back(item.key(), item.value());
  worker::AdamWOptions ao;
  ao.weight_decay = 0.0;  // isolate the lr scaling
  LayerDecayAdamW opt(params, kAtto, 0.9, ao);
  ASSERT_EQ(opt.groups().size(), 13u);  // ids 1..13
  for (size_t i = 0; i < opt.groups().size(); ++i) {
    EXPECT_EQ(opt.groups()[i].id, static_cast<int64_t>(i + 1));
    EXPECT_NEAR(opt.groups()[i].lr_scale, std::pow(0.9, 12.0 - static_cast<double>(i)), 1e-15);
  }
  // Fine-tuning decay groups: GRN gamma/beta, biases and norms exempt.
  EXPECT_FALSE(opt.decayed("stages.1.0.grn.gamma"));
  EXPECT_FALSE(opt.decayed("stages.1.0.grn.beta"));
  EXPECT_FALSE(opt.decayed("stages.1.0.pwconv1.bias"));
  EXPECT_FALSE(opt.decayed("stages.1.0.norm.weight"));
  EXPECT_FALSE(opt.decayed("downsample_layers.0.1.weight"));
  EXPECT_TRUE(opt.decayed("stages.1.0.pwconv1.weight"));
  EXPECT_TRUE(opt.decayed("head.weight"));

  // Adam's first step moves each element by lr_eff * g / (|g| + eps') ~ lr_eff:
  // with g = 1 everywhere the change is lr * 0.9^(13 - id) per parameter.
  std::map<std::string, at::Tensor> before;
  for (auto& [name, t] : params) {
    before[name] = t.detach().clone();
    t.mutable_grad() = at::ones_like(t);
  }
  const double lr = 1e-2;
  opt.step(lr);
  for (const auto& [name, t] : params) {
    const double expected = lr * layer_lr_scale(layer_id(name, kAtto), kAtto, 0.9);
    const double moved = (before[name] - t.detach()).mean().item<double>();
    EXPECT_NEAR(moved, expected, expected * 1e-5) << name;
  }
}

}  // namespace
}  // namespace cnx::eval
