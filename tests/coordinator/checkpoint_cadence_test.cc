// The cadence rule on its own (coordinator/checkpoint_cadence.h): margins,
// the every_steps multiples and the every_minutes interval, at the edges of
// the planning window and of the step range. The scheduler's use of it is
// simulated in scheduler_cadence_test.cc.
#include "coordinator/checkpoint_cadence.h"

#include <gtest/gtest.h>

#include <limits>

namespace cnx::coordinator {
namespace {

constexpr int64_t kCap = int64_t{1} << 40;

CadenceInput steps(int64_t every, int64_t top, int64_t margin, int64_t committed = 0) {
  CadenceInput in;
  in.every_steps = every;
  in.top_step = top;
  in.margin = margin;
  in.committed_step = committed;
  in.cap = kCap;
  return in;
}

CadenceInput minutes(double every, double rate, double last_commit, double now, int64_t top, int64_t margin) {
  CadenceInput in;
  in.every_minutes = every;
  in.rate = rate;
  in.last_commit_unix_s = last_commit;
  in.now = now;
  in.top_step = top;
  in.margin = margin;
  in.cap = kCap;
  return in;
}

TEST(CheckpointCadence, MarginIsTwoHeartbeatsOfStepsPlusOne) {
  EXPECT_EQ(plan_margin(0, 2.0, kCap), 1);
  EXPECT_EQ(plan_margin(5, 2.0, kCap), 21);
  EXPECT_EQ(plan_margin(0.1, 2.0, kCap), 2);  // ceil(0.4) + 1
  EXPECT_EQ(plan_margin(std::numeric_limits<double>::infinity(), 2.0, kCap), kCap);
  EXPECT_EQ(plan_margin(1e30, 2.0, kCap), kCap);
}

TEST(CheckpointCadence, AddCappedSaturates) {
  EXPECT_EQ(add_capped(3, 4, kCap), 7);
  EXPECT_EQ(add_capped(kCap - 1, 5, kCap), kCap);
  EXPECT_EQ(add_capped(std::numeric_limits<int64_t>::max(), 1, kCap), kCap);
}

TEST(CheckpointCadence, EveryStepsPlansTheNextMultipleInsideTheWindow) {
  // Multiple 10 is 10 steps ahead of step 0: beyond two margins (6).
  EXPECT_FALSE(next_cadence_checkpoint(steps(10, 0, 3)));
  // At step 4 it is 6 ahead: planned, exactly at 10.
  auto p = next_cadence_checkpoint(steps(10, 4, 3));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 10);
  EXPECT_EQ(p->why, "every 10 steps");
  // At step 8 the margin rule skips 10 (only 2 ahead): 20 is 12 ahead, too far.
  EXPECT_FALSE(next_cadence_checkpoint(steps(10, 8, 3)));
  // A multiple that is a margin ahead exactly is taken.
  p = next_cadence_checkpoint(steps(10, 7, 3));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 10);
}

TEST(CheckpointCadence, EveryStepsNeverPlansAtOrBeforeTheLastCommit) {
  // Committed at 20 while the fastest rank reports 15 (a resumed attempt):
  // the next multiple is 30, 15 ahead: not yet.
  EXPECT_FALSE(next_cadence_checkpoint(steps(10, 15, 3, 20)));
  auto p = next_cadence_checkpoint(steps(10, 25, 3, 20));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 30);
}

TEST(CheckpointCadence, EveryStepsStopsBelowTheCap) {
  EXPECT_FALSE(next_cadence_checkpoint(steps(10, kCap - 2, 3)));
}

TEST(CheckpointCadence, EveryMinutesAtTheStepReachedWhenTheIntervalEnds) {
  // Due at 60 s; at 50 s and 1 step/s the rank reaches top + 10 then: more
  // than two margins (6) ahead, so not yet.
  EXPECT_FALSE(next_cadence_checkpoint(minutes(1, 1.0, 0, 50, 100, 3)));
  // At 55 s: 5 steps ahead, inside the window.
  auto p = next_cadence_checkpoint(minutes(1, 1.0, 0, 55, 100, 3));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 105);
  EXPECT_EQ(p->why, "every 1 minutes");
  // Never less than a margin ahead.
  p = next_cadence_checkpoint(minutes(1, 1.0, 0, 59, 100, 3));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 103);
}

TEST(CheckpointCadence, EveryMinutesWithoutARateWaitsForTheInterval) {
  EXPECT_FALSE(next_cadence_checkpoint(minutes(1, 0.0, 0, 59, 100, 3)));
  auto p = next_cadence_checkpoint(minutes(1, 0.0, 0, 60, 100, 3));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 103);
}

TEST(CheckpointCadence, StepRuleFirstThenTheClock) {
  CadenceInput in = steps(10, 0, 3);
  in.every_minutes = 1;
  in.now = 61;  // the interval has ended, the multiple of 10 is out of reach
  auto p = next_cadence_checkpoint(in);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 3);
  EXPECT_EQ(p->why, "every 1 minutes");
  in.top_step = 5;  // now 10 is in reach: the step rule wins
  p = next_cadence_checkpoint(in);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->step, 10);
  EXPECT_EQ(p->why, "every 10 steps");
  EXPECT_FALSE(next_cadence_checkpoint(steps(0, 5, 3)));  // neither rule on
}

}  // namespace
}  // namespace cnx::coordinator
