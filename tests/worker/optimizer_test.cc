#include "worker/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/check.h"

namespace cnx::worker {
namespace {

// LibTorch's AdamW with the reference's two groups: `w` decayed (0.05),
// `b` exempt; betas (0.9, 0.95), eps 1e-8 (AdamWOptions' defaults).
std::unique_ptr<torch::optim::AdamW> torch_adamw_two_groups(const torch::Tensor& w, const torch::Tensor& b, double lr) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (const auto& [t, wd] : {std::pair<torch::Tensor, double>{w, 0.05}, std::pair<torch::Tensor, double>{b, 0.0}}) {
    groups.emplace_back(std::vector<torch::Tensor>{t},
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(wd)));
  }
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(lr));
}

TEST(WeightDecayGroups, ReferencePretrainingRulesByName) {
  const std::vector<std::string> none;
  // Exempt: biases and the LayerNorm weights (1-D in the reference).
  for (const char* n : {"encoder.downsample_layers.0.0.bias", "encoder.downsample_layers.0.1.weight",
                        "encoder.downsample_layers.2.0.weight", "encoder.stages.1.0.norm.weight",
                        "encoder.stages.1.0.dwconv.bias", "norm.weight", "norm.bias", "decoder.0.norm.weight",
                        "downsample_layers.3.0.weight", "stages.0.0.norm.ln.weight", "pred.bias"}) {
    EXPECT_FALSE(is_decayed(n, none)) << n;
  }
  // Decayed: conv/linear weights, GRN gamma/beta and mask_token (multi-dim in the reference).
  for (const char* n : {"encoder.downsample_layers.0.0.weight", "encoder.downsample_layers.2.1.weight",
                        "encoder.stages.1.0.dwconv.weight", "encoder.stages.1.0.pwconv1.weight",
                        "encoder.stages.1.0.grn.gamma", "encoder.stages.1.0.grn.beta", "mask_token",
                        "decoder.0.grn.gamma", "proj.weight", "pred.weight", "head.weight"}) {
    EXPECT_TRUE(is_decayed(n, none)) << n;
  }
  // Fine-tuning style: extra suffixes exempt GRN.
  const std::vector<std::string> ft = {"grn.gamma", "grn.beta"};
  EXPECT_FALSE(is_decayed("encoder.stages.1.0.grn.gamma", ft));
  // A V1 block's layer scale is 1-D: exempt as the reference exempts 1-D tensors.
  EXPECT_FALSE(is_decayed("encoder.stages.2.5.gamma", none));
  EXPECT_FALSE(is_decayed("stages.0.0.gamma", none));
  EXPECT_TRUE(is_decayed("encoder.stages.2.5.grn.gamma", none));
  EXPECT_FALSE(is_decayed("decoder.0.grn.beta", ft));
  EXPECT_TRUE(is_decayed("mask_token", ft));
}

// Our AdamW must equal LibTorch's own AdamW bit for bit (its formula is the
// reference's), with a decayed and an exempt group.
TEST(AdamW, BitIdenticalToTorchAdamWWithTwoGroups) {
  torch::manual_seed(3);
  auto w = torch::randn({5, 7}), b = torch::randn({7});
  auto w2 = w.clone().set_requires_grad(true), b2 = b.clone().set_requires_grad(true);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = 0.05;
  AdamW ours({{"fc.weight", w}, {"fc.bias", b}}, o);
  ASSERT_EQ(ours.group_names(true), std::vector<std::string>{"fc.weight"});
  ASSERT_EQ(ours.group_names(false), std::vector<std::string>{"fc.bias"});

  const double lr = 1e-2;
  auto ref_opt = torch_adamw_two_groups(w2, b2, lr);
  torch::optim::AdamW& ref = *ref_opt;
  for (int it = 0; it < 6; ++it) {
    auto x = torch::randn({3, 5});
    for (auto* p : {&w, &b, &w2, &b2}) p->mutable_grad() = torch::Tensor();
    (torch::matmul(x, w) + b).pow(2).sum().backward();
    (torch::matmul(x, w2) + b2).pow(2).sum().backward();
    ours.step(lr);
    ref.step();
  }
  EXPECT_TRUE(torch::equal(w, w2)) << (w - w2).abs().max();
  EXPECT_TRUE(torch::equal(b, b2)) << (b - b2).abs().max();
  EXPECT_EQ(ours.state().at("fc.weight").step, 6);
}

// The same with sizes past one vector register and its tail, float and
// double, at 1 and 2 threads (the fused update is split across threads).
TEST(AdamW, BitIdenticalToTorchAdamWLargeTensorsBothDtypes) {
  const int threads_before = at::get_num_threads();
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      torch::manual_seed(5);
      auto w = torch::randn({67, 1037}, dtype), b = torch::randn({13}, dtype);
      auto w2 = w.clone().set_requires_grad(true), b2 = b.clone().set_requires_grad(true);
      w.set_requires_grad(true);
      b.set_requires_grad(true);
      AdamW ours({{"fc.weight", w}, {"fc.bias", b}}, AdamWOptions{});
      const double lr = 3e-3;
      auto ref_opt = torch_adamw_two_groups(w2, b2, lr);
      torch::optim::AdamW& ref = *ref_opt;
      for (int it = 0; it < 4; ++it) {
        auto gw = torch::randn({67, 1037}, dtype) * (it + 1), gb = torch::randn({13}, dtype);
        w.mutable_grad() = gw.clone();
        w2.mutable_grad() = gw.clone();
        b.mutable_grad() = gb.clone();
        b2.mutable_grad() = gb.clone();
        ours.step(lr);
        ref.step();
      }
      EXPECT_TRUE(torch::equal(w, w2)) << dtype << " threads " << threads << " " << (w - w2).abs().max();
      EXPECT_TRUE(torch::equal(b, b2)) << dtype << " threads " << threads << " " << (b - b2).abs().max();
    }
  }
  at::set_num_threads(threads_before);
}

TEST(AdamW, StateDictRoundTripAndStrictLoad) {
  auto w = torch::randn({4, 3}).set_requires_grad(true);
  auto g = torch::randn({2}).set_requires_grad(true);
  AdamW a({{"w", w}, {"grn.gamma", g}}, AdamWOptions{});
  w.mutable_grad() = torch::ones_like(w);  // g has no grad: no step counted
  a.step(1e-3);
  const NamedTensors sd = a.state_dict();
  ASSERT_EQ(sd.size(), 6u);

  auto w2 = w.detach().clone().set_requires_grad(true);
  auto g2 = g.detach().clone().set_requires_grad(true);
  AdamW b({{"w", w2}, {"grn.gamma", g2}}, AdamWOptions{});
  b.load_state_dict(sd);
  EXPECT_EQ(b.state().at("w").step, 1);
  EXPECT_EQ(b.state().at("grn.gamma").step, 0);
  EXPECT_TRUE(torch::equal(b.state().at("w").exp_avg, a.state().at("w").exp_avg));
  EXPECT_TRUE(torch::equal(b.state().at("w").exp_avg_sq, a.state().at("w").exp_avg_sq));
  // Same next update from both.
  w2.mutable_grad() = torch::ones_like(w2);
  a.step(1e-3);
  b.step(1e-3);
  EXPECT_TRUE(torch::equal(w, w2));

  // Missing, unexpected and wrong-shape entries are all listed.
  NamedTensors bad = sd;
  bad.erase(bad.begin());                               // missing exp_avg/w
  bad.emplace_back("exp_avg/nope", torch::zeros({1}));  // unexpected
  for (auto& [k, t] : bad)
    if (k == "exp_avg_sq/grn.gamma") t = torch::zeros({3});  // wrong shape
  try {
    b.load_state_dict(bad);
    FAIL() << "accepted a mismatching optimizer state";
  } catch (const CheckError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("missing 'exp_avg/w'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected key 'exp_avg/nope'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("exp_avg_sq/grn.gamma"), std::string::npos) << msg;
  }
}

TEST(ClipGradNorm, MatchesTorchClipGradNorm) {
  torch::manual_seed(5);
  auto p1 = torch::randn({10}).set_requires_grad(true), p2 = torch::randn({3, 3}).set_requires_grad(true);
  auto q1 = p1.detach().clone().set_requires_grad(true), q2 = p2.detach().clone().set_requires_grad(true);
  auto g1 = torch::randn({10}) * 3, g2 = torch::randn({3, 3}) * 3;
  p1.mutable_grad() = g1.clone();
  p2.mutable_grad() = g2.clone();
  q1.mutable_grad() = g1.clone();
  q2.mutable_grad() = g2.clone();
  const double norm = clip_grad_norm({{"a", p1}, {"b", p2}}, 1.0);
  const double ref = torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{q1, q2}, 1.0);
  EXPECT_NEAR(norm, ref, 1e-5 * ref);
  EXPECT_TRUE(torch::allclose(p1.grad(), q1.grad(), 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(p2.grad(), q2.grad(), 1e-6, 1e-7));
  // max_norm 0: norm reported, gradients untouched.
  auto before = p1.grad().clone();
  clip_grad_norm({{"a", p1}}, 0.0);
  EXPECT_TRUE(torch::equal(before, p1.grad()));
}

}  // namespace
}  // namespace cnx::worker
