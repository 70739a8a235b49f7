// GRN (hand-computed), LayerNorm, drop path and trunc_normal_.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "model/convnextv2.h"
#include "model/layers.h"
#include "tests/model/test_util.h"

namespace cnx::model {
namespace {

using testing::close_rel;

TEST(GRN, HandComputedExampleWithNonZeroGammaBeta) {
  // N=2, H=2, W=1, C=2 (channels last).
  // Sample 0: channel 0 = (3, 4) -> Gx 5; channel 1 = (6, 8) -> Gx 10; mean 7.5.
  // Sample 1: channel 0 = (1, 1) -> Gx sqrt 2; channel 1 = (0, 0) -> Gx 0.
  auto x = torch::tensor({3.0, 6.0, 4.0, 8.0, 1.0, 0.0, 1.0, 0.0}, torch::kDouble).reshape({2, 2, 1, 2});
  GRN grn(2);
  grn->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    grn->gamma.copy_(torch::tensor({0.5, -1.0}, torch::kDouble).reshape({1, 1, 1, 2}));
    grn->beta.copy_(torch::tensor({0.1, 0.2}, torch::kDouble).reshape({1, 1, 1, 2}));
  }
  const double n00 = 5.0 / (7.5 + 1e-6), n01 = 10.0 / (7.5 + 1e-6);
  const double r2 = std::sqrt(2.0);
  const double n10 = r2 / (r2 / 2 + 1e-6), n11 = 0.0;
  auto expected = torch::tensor({0.5 * 3 * n00 + 0.1 + 3, -1.0 * 6 * n01 + 0.2 + 6,  //
                                 0.5 * 4 * n00 + 0.1 + 4, -1.0 * 8 * n01 + 0.2 + 8,  //
                                 0.5 * 1 * n10 + 0.1 + 1, -1.0 * 0 * n11 + 0.2 + 0,  //
                                 0.5 * 1 * n10 + 0.1 + 1, -1.0 * 0 * n11 + 0.2 + 0},
                                torch::kDouble)
                      .reshape({2, 2, 1, 2});
  auto out = grn->forward(x);
  EXPECT_TRUE(close_rel(out, expected, 1e-12));
  // Rounded sanity values: 4.1, -1.8, 5.4333, -2.4667, 2.1, 0.2.
  EXPECT_NEAR(out[0][0][0][0].item<double>(), 4.1, 1e-5);
  EXPECT_NEAR(out[0][0][0][1].item<double>(), -1.8, 1e-5);
  EXPECT_NEAR(out[1][0][0][0].item<double>(), 2.1, 1e-5);
  EXPECT_NEAR(out[1][1][0][1].item<double>(), 0.2, 1e-12);
}

TEST(GRN, ZeroInitIsIdentityAndZeroChannelHasFiniteGradient) {
  GRN grn(3);
  EXPECT_EQ(grn->gamma.sizes(), (std::vector<int64_t>{1, 1, 1, 3}));
  auto x = torch::randn({2, 4, 5, 3}, torch::kDouble);
  grn->to(torch::kDouble);
  EXPECT_TRUE(close_rel(grn->forward(x), x, 0));
  auto z = torch::zeros({1, 2, 2, 3}, torch::kDouble).requires_grad_(true);
  {
    torch::NoGradGuard g;
    grn->gamma.fill_(0.7);
  }
  grn->forward(z).sum().backward();
  EXPECT_TRUE(torch::isfinite(z.grad()).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(grn->gamma.grad()).all().item<bool>());
}

TEST(GRN, GradientMatchesFiniteDifferences) {
  GRN grn(4);
  grn->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    grn->gamma.copy_(torch::randn({1, 1, 1, 4}, torch::kDouble));
    grn->beta.copy_(torch::randn({1, 1, 1, 4}, torch::kDouble));
  }
  auto x = torch::randn({2, 3, 3, 4}, torch::kDouble).requires_grad_(true);
  auto w = torch::randn({2, 3, 3, 4}, torch::kDouble);
  (grn->forward(x) * w).sum().backward();
  auto grad = x.grad().clone();
  const double h = 1e-6;
  for (int64_t i = 0; i < x.numel(); i += 5) {
    auto xp = x.detach().clone(), xm = x.detach().clone();
    xp.view(-1)[i] += h;
    xm.view(-1)[i] -= h;
    const double fd =
        ((grn->forward(xp) * w).sum().item<double>() - (grn->forward(xm) * w).sum().item<double>()) / (2 * h);
    EXPECT_NEAR(grad.view(-1)[i].item<double>(), fd, 1e-6) << "element " << i;
  }
}

TEST(GRN, RejectsWrongLayout) {
  GRN grn(4);
  EXPECT_THROW(grn->forward(torch::zeros({1, 4, 3, 3})), std::exception);
}

TEST(LayerNorm, ChannelsFirstMatchesReferenceFormula) {
  LayerNorm ln(5, DataFormat::kChannelsFirst);
  ln->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    ln->weight.copy_(torch::randn({5}, torch::kDouble));
    ln->bias.copy_(torch::randn({5}, torch::kDouble));
  }
  auto x = torch::randn({2, 5, 3, 4}, torch::kDouble) * 3 + 1;
  auto u = x.mean({1}, true);
  auto s = (x - u).pow(2).mean({1}, true);
  auto ref = (x - u) / torch::sqrt(s + 1e-6);
  ref = ln->weight.view({1, 5, 1, 1}) * ref + ln->bias.view({1, 5, 1, 1});
  EXPECT_TRUE(close_rel(ln->forward(x), ref, 1e-12));
}

TEST(LayerNorm, ChannelsLastNormalisesLastDim) {
  LayerNorm ln(6, DataFormat::kChannelsLast);
  ln->to(torch::kDouble);
  auto x = torch::randn({2, 3, 6}, torch::kDouble) * 2 - 1;
  auto u = x.mean({-1}, true);
  auto s = (x - u).pow(2).mean({-1}, true);
  EXPECT_TRUE(close_rel(ln->forward(x), (x - u) / torch::sqrt(s + 1e-6), 1e-12));
  EXPECT_THROW(ln->forward(torch::zeros({2, 5})), std::exception);
}

TEST(DropPath, EachSampleIsKeptScaledOrDropped) {
  torch::manual_seed(3);
  Block block(8, /*drop_path_rate=*/0.5);
  {
    torch::NoGradGuard g;
    block->grn->gamma.normal_();
  }
  auto x = torch::randn({64, 8, 6, 6});
  block->eval();
  auto branch = block->forward(x) - x;
  block->train();
  auto out = block->forward(x);
  int kept = 0, dropped = 0;
  for (int64_t n = 0; n < 64; ++n) {
    if (torch::allclose(out[n], x[n], 0, 0)) {
      ++dropped;
    } else {
      EXPECT_TRUE(torch::allclose(out[n], x[n] + branch[n] / 0.5, 1e-5, 1e-5)) << "sample " << n;
      ++kept;
    }
  }
  EXPECT_GT(kept, 10);
  EXPECT_GT(dropped, 10);
  // Rate 0 or eval: identity.
  EXPECT_TRUE(torch::equal(drop_path(x, 0.0, true), x));
  EXPECT_TRUE(torch::equal(drop_path(x, 0.3, false), x));
}

TEST(DropPath, RatesAreLinspaceOverAllBlocks) {
  ConvNeXtV2Options o;
  o.depths = {1, 2, 1, 1};
  o.dims = {4, 4, 4, 4};
  o.drop_path_rate = 0.2;
  auto rates = drop_path_rates(o);
  ASSERT_EQ(rates.size(), 5u);
  const double expected[] = {0.0, 0.05, 0.1, 0.15, 0.2};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(rates[i], expected[i], 1e-15);
  ConvNeXtV2 model(o);
  EXPECT_NEAR(model->block(1, 1)->drop_path_rate(), 0.1, 1e-15);
  EXPECT_NEAR(model->block(3, 0)->drop_path_rate(), 0.2, 1e-15);
}

TEST(TruncNormal, StaysInsideCutAndHasTruncatedMoments) {
  torch::manual_seed(11);
  auto t = torch::empty({200000});
  trunc_normal_(t, 1.0);
  EXPECT_GE(t.min().item<double>(), -2.0);
  EXPECT_LE(t.max().item<double>(), 2.0);
  EXPECT_NEAR(t.mean().item<double>(), 0.0, 0.01);
  EXPECT_NEAR(t.std().item<double>(), 0.8796, 0.01);  // std of N(0,1) cut at +-2
  auto s = torch::empty({100000}, torch::kDouble);
  trunc_normal_(s, 0.02);
  EXPECT_NEAR(s.std().item<double>(), 0.02, 0.0005);
  auto h = torch::empty({1000}, torch::kHalf);
  trunc_normal_(h, 0.5, -0.1, 0.1);
  EXPECT_LE(h.abs().max().item<double>(), 0.1001);
}

}  // namespace
}  // namespace cnx::model
