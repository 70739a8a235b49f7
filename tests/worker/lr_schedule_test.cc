#include "worker/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/check.h"
#include "common/config.h"

namespace cnx::worker {
namespace {

TEST(LrSchedule, PeakLrFollowsTheLinearScalingRule) {
  EXPECT_EQ(global_batch_size(64, 8, 2), 1024);
  // Paper default: blr 1.5e-4 at a global batch of 4096 -> 2.4e-3.
  EXPECT_DOUBLE_EQ(peak_lr(1.5e-4, 0.0, 4096), 2.4e-3);
  EXPECT_DOUBLE_EQ(peak_lr(1.5e-4, 0.0, 256), 1.5e-4);
  // An absolute lr wins over blr.
  EXPECT_DOUBLE_EQ(peak_lr(1.5e-4, 1e-3, 4096), 1e-3);
  EXPECT_THROW(peak_lr(0.0, 0.0, 256), CheckError);
  EXPECT_THROW(global_batch_size(0, 2, 1), CheckError);
}

TEST(LrSchedule, GlobalBatchFixesAccumulationForAnyWorldSize) {
  // The paper's 4096 at 64 per rank: 8 ranks x 8 steps, 4 ranks x 16, 64 x 1;
  // the global batch and so the peak lr stay the same.
  EXPECT_EQ(accum_steps_for_global_batch(4096, 64, 8, 1), 8);
  EXPECT_EQ(accum_steps_for_global_batch(4096, 64, 4, 1), 16);
  EXPECT_EQ(accum_steps_for_global_batch(4096, 64, 64, 1), 1);
  EXPECT_EQ(global_batch_size(64, 4, accum_steps_for_global_batch(4096, 64, 4, 1)), 4096);
  EXPECT_EQ(accum_steps_for_global_batch(4096, 64, 8, 8), 8);  // an explicit, consistent accum_steps
  try {
    accum_steps_for_global_batch(4096, 64, 3, 1);
    FAIL() << "4096 is not a multiple of 64 x 3";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.global_batch 4096 is not a multiple of data.batch_size x ranks "
                                         "= 64 x 3 = 192"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(accum_steps_for_global_batch(4096, 64, 8, 4), ConfigError);  // contradicts the derived 8
}

TEST(LrSchedule, WarmupIsLinearPerIterationThenHalfCosine) {
  LrScheduleOptions o;
  o.peak_lr = 1.0;
  o.min_lr = 0.1;
  o.warmup_epochs = 2;
  o.epochs = 10;
  o.steps_per_epoch = 100;
  LrSchedule s(o);
  EXPECT_EQ(s.total_steps(), 1000);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 1.0 / 200);  // per iteration, not per epoch
  EXPECT_DOUBLE_EQ(s.lr_at(50), 0.25);
  EXPECT_DOUBLE_EQ(s.lr_at(199), 199.0 / 200);
  EXPECT_DOUBLE_EQ(s.lr_at(200), 1.0);     // end of warmup = peak
  EXPECT_NEAR(s.lr_at(600), 0.55, 1e-12);  // half of the cosine: (peak + min) / 2
  // A quarter into the cosine: min + (peak-min) * 0.5 * (1 + cos(pi/4)).
  EXPECT_NEAR(s.lr_at(400), 0.1 + 0.9 * 0.5 * (1 + std::sqrt(0.5)), 1e-12);
  EXPECT_NEAR(s.lr_at(999), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 799.0 / 800.0)), 1e-12);
  EXPECT_DOUBLE_EQ(s.lr_at(1000), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(5000), 0.1);
  EXPECT_DOUBLE_EQ(s.epoch_at(150), 1.5);
  // Monotone: up during warmup, down afterwards.
  for (int64_t i = 1; i < 200; ++i) EXPECT_GT(s.lr_at(i), s.lr_at(i - 1));
  for (int64_t i = 201; i <= 1000; ++i) EXPECT_LE(s.lr_at(i), s.lr_at(i - 1));
}

TEST(LrSchedule, NoWarmupStartsAtPeak) {
  LrScheduleOptions o;
  o.peak_lr = 2e-3;
  o.epochs = 1;
  o.steps_per_epoch = 7;
  LrSchedule s(o);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 2e-3);
  EXPECT_EQ(s.total_steps(), 7);
}

TEST(LrSchedule, RejectsBadOptionsNamingTheField) {
  LrScheduleOptions o;
  o.peak_lr = 1.0;
  o.epochs = 10;
  o.warmup_epochs = 11;
  try {
    LrSchedule s(o);
    FAIL() << "accepted warmup > epochs";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("warmup_epochs"), std::string::npos) << e.what();
  }
  o.warmup_epochs = 1;
  o.steps_per_epoch = 0;
  EXPECT_THROW(LrSchedule{o}, CheckError);
  o.steps_per_epoch = 1;
  o.min_lr = 2.0;
  EXPECT_THROW(LrSchedule{o}, CheckError);
}

}  // namespace
}  // namespace cnx::worker
