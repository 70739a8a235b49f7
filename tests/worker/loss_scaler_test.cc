// worker/loss_scaler.h: the GradScaler update rule on hand-checked cases.
// The sequence against PyTorch's rule replayed with torch float32 arithmetic
// is tests/worker/loss_scaler_reference.py (ctest worker_loss_scaler_reference).
#include "worker/loss_scaler.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "common/check.h"

namespace cnx::worker {
namespace {

LossScalerOptions on() {
  LossScalerOptions o;
  o.enabled = true;
  return o;
}

TEST(LossScaler, DisabledIsTheIdentity) {
  LossScaler s;  // disabled by default
  EXPECT_FALSE(s.enabled());
  EXPECT_EQ(s.scale(), 1.0);
  auto p = torch::ones({3});
  p.mutable_grad() = torch::full({3}, 4.0);
  s.unscale({{"p", p}});
  EXPECT_TRUE(torch::equal(p.grad(), torch::full({3}, 4.0)));
  s.update(true);
  EXPECT_EQ(s.scale(), 1.0);
}

TEST(LossScaler, GradScalerDefaultsBackOffAndGrowAfter2000GoodSteps) {
  LossScaler s(on());
  EXPECT_EQ(s.scale(), 65536.0);
  s.update(true);
  EXPECT_EQ(s.scale(), 32768.0);
  EXPECT_EQ(s.state().growth_tracker, 0);
  for (int i = 0; i < 1999; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 32768.0);
  EXPECT_EQ(s.state().growth_tracker, 1999);
  s.update(false);  // the 2000th good step in a row
  EXPECT_EQ(s.scale(), 65536.0);
  EXPECT_EQ(s.state().growth_tracker, 0);
  for (int i = 0; i < 1000; ++i) s.update(false);
  s.update(true);  // an overflow resets the count
  EXPECT_EQ(s.scale(), 32768.0);
  for (int i = 0; i < 1999; ++i) s.update(false);
  EXPECT_EQ(s.scale(), 32768.0);
}

TEST(LossScaler, GrowthThatOverflowsKeepsTheScale) {
  LossScalerOptions o = on();
  o.init_scale = std::ldexp(1.0, 127);
  o.growth_interval = 1;
  LossScaler s(o);
  s.update(false);  // 2^128 is not a float: unchanged, tracker reset
  EXPECT_EQ(s.scale(), std::ldexp(1.0, 127));
  EXPECT_EQ(s.state().growth_tracker, 0);
}

TEST(LossScaler, UnscaleMultipliesByTheFloatReciprocal) {
  LossScaler s(on());
  auto p = torch::ones({2});
  p.mutable_grad() = torch::tensor({65536.0f, -3.0f * 65536.0f});
  auto q = torch::ones({1});  // no gradient: left alone
  s.unscale({{"p", p}, {"q", q}});
  EXPECT_TRUE(torch::equal(p.grad(), torch::tensor({1.0f, -3.0f})));
  EXPECT_FALSE(q.grad().defined());
}

TEST(LossScaler, StateRoundTripsAndBadStateIsRefused) {
  LossScaler s(on());
  s.update(true);
  s.update(false);
  LossScaler t(on());
  t.load(s.state());
  EXPECT_EQ(t.scale(), 32768.0);
  EXPECT_EQ(t.state().growth_tracker, 1);
  EXPECT_THROW(t.load({0.0f, 0}), CheckError);
  EXPECT_THROW(t.load({std::numeric_limits<float>::infinity(), 0}), CheckError);
  EXPECT_THROW(t.load({1.0f, 2000}), CheckError);
  LossScalerOptions bad = on();
  bad.backoff_factor = 1.0;
  EXPECT_THROW(LossScaler{bad}, CheckError);
  bad = on();
  bad.growth_factor = 1.0;
  EXPECT_THROW(LossScaler{bad}, CheckError);
}

}  // namespace
}  // namespace cnx::worker
