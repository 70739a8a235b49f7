// Checkpoint cadence (every_steps, every_minutes) of the scheduler, driven by
// a simulation of ranks that train in lockstep, heartbeat on their own
// period and act on plans as the trainer does (worker/trainer.h): a plan
// runs at the first step >= its step at which every rank has heard of it,
// and the parts are reported when the background write is done.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <optional>
#include <vector>

#include "coordinator/scheduler.h"
#include "tests/coordinator/sim_util.h"

namespace cnx::coordinator {
namespace {

using test::make_index;

struct Sim {
  double rate = 5.0;     // steps per second of every rank
  double hb_s = 2.0;     // heartbeat period (SchedulerOptions::heartbeat_s)
  double write_s = 0.7;  // background write: parts are reported this long after the step
  double dt = 0.01;      // simulation clock resolution
};

struct Commit {
  int64_t step;
  double unix_s;
};

// Runs attempt `attempt` of `world` ranks from step `from` at time `t0`. The
// attempt ends at `crash_at` (the ranks die: nothing more is reported) or,
// when crash_at is 0, at `final_step` after its final checkpoint. Returns the
// commits made; `*t_end` is the time it ended.
std::vector<Commit> run_attempt(Scheduler& s, const Sim& sim, int world, int64_t from, int64_t final_step,
                                int64_t crash_at, double t0, double* t_end) {
  const std::string launch = "L" + std::to_string(s.attempt() + 1);
  for (int r = 0; r < world; ++r) s.register_worker("job", r, world, "h", launch, t0);
  EXPECT_EQ(s.state(), JobState::kRunning);
  std::vector<Commit> commits;
  std::vector<std::optional<CheckpointPlan>> known(world);
  std::vector<double> next_hb(world);
  for (int r = 0; r < world; ++r) next_hb[r] = t0 + sim.hb_s * r / world;
  int64_t taken = 0;  // newest plan id acted on
  struct Report {
    double at;
    int64_t id, step;
  };
  std::vector<Report> reports;
  int64_t step = from, last_step = from;
  double next_tick = t0;
  const int64_t end = crash_at > 0 ? crash_at : final_step;
  for (double t = t0;; t += sim.dt) {
    step = std::min<int64_t>(end, from + static_cast<int64_t>(std::floor((t - t0) * sim.rate + 1e-9)));
    const bool finished = crash_at == 0 && step == final_step;
    if (crash_at > 0 && step == crash_at) {
      *t_end = t;
      return commits;
    }
    // The trainer's agreement at each new step (and, after the last step,
    // its final-checkpoint wait loop at the same step).
    std::vector<int64_t> ks;
    for (int64_t k = last_step + 1; k <= step; ++k) ks.push_back(k);
    if (finished && ks.empty()) ks.push_back(step);
    for (int64_t k : ks) {
      bool all = true;
      for (int r = 0; r < world; ++r)
        all = all && known[r] && known[r]->id == known[0]->id && known[r]->step <= k && known[r]->id > taken;
      if (all) {
        taken = known[0]->id;
        reports.push_back({t + sim.write_s, taken, k});
      }
    }
    last_step = step;
    for (auto it = reports.begin(); it != reports.end();) {
      if (it->at > t) {
        ++it;
        continue;
      }
      bool committed = false;
      for (int r = 0; r < world; ++r) {
        RankPart part;
        part.files = {{"rank-" + std::to_string(r) + ".json", std::string(64, 'a'), 1}};
        committed = s.report_part({"job", s.attempt(), r}, it->id, it->step, part, t);
      }
      EXPECT_TRUE(committed);
      commits.push_back({it->step, t});
      if (finished && it->step == final_step) {
        *t_end = t;
        return commits;
      }
      it = reports.erase(it);
    }
    for (int r = 0; r < world; ++r) {
      if (t < next_hb[r]) continue;
      next_hb[r] += sim.hb_s;
      HeartbeatInfo hb;
      hb.step = step;
      hb.final_step = finished ? final_step : 0;
      const HeartbeatResult res = s.heartbeat({"job", s.attempt(), r}, hb, t);
      if (res.has_plan && res.plan.id > taken) {
        known[r] = res.plan;
      } else if (res.action == Action::kContinue) {
        known[r].reset();
      }
    }
    if (t >= next_tick) {
      s.tick(t);
      next_tick += 1.0;
    }
    if (t > t0 + 3600) {
      ADD_FAILURE() << "attempt " << s.attempt() << " did not end (step " << step << ")";
      *t_end = t;
      return commits;
    }
  }
}

SchedulerOptions cadence_options(int64_t every_steps, double every_minutes) {
  SchedulerOptions o;
  o.job_id = "job";
  o.heartbeat_s = 2.0;
  o.heartbeat_timeout_s = 30;
  o.stall_s = 120;
  o.lease_s = 600;
  o.checkpoint_root = "/ckpt";
  o.keep = 3;
  o.every_steps = every_steps;
  o.every_minutes = every_minutes;
  return o;
}

std::vector<int64_t> steps_of(const std::vector<Commit>& commits) {
  std::vector<int64_t> out;
  for (const auto& c : commits) out.push_back(c.step);
  return out;
}

std::vector<int64_t> range(int64_t from, int64_t to, int64_t by) {
  std::vector<int64_t> out;
  for (int64_t v = from; v <= to; v += by) out.push_back(v);
  return out;
}

// The demo's job: 1265 steps, every_steps 100 -> 100, 200, ..., 1200, 1265.
TEST(SchedulerCadence, EveryStepsCommitsExactlyAtMultiplesAndTheFinalStep) {
  Scheduler s(cadence_options(100, 0), make_index({64, 64}));
  double t = 0;
  const auto commits = run_attempt(s, Sim{}, 2, 0, 1265, 0, 1000, &t);
  std::vector<int64_t> want = range(100, 1200, 100);
  want.push_back(1265);
  EXPECT_EQ(steps_of(commits), want);
}

// every_steps below the planning margin (a high step rate): one plan at a
// time, each a margin ahead of the ranks, so multiples are skipped, but every
// checkpoint still lands on a multiple, and no gap exceeds two of them.
TEST(SchedulerCadence, EveryStepsBelowTheMarginStaysOnMultiples) {
  Scheduler s(cadence_options(40, 0), make_index({64, 64}));
  Sim sim;
  sim.rate = 12.0;  // margin 2 * 2 s * 12 + 1 = 49 steps > every_steps
  double t = 0;
  const auto commits = run_attempt(s, sim, 2, 0, 500, 0, 1000, &t);
  ASSERT_GE(commits.size(), 6u);
  EXPECT_EQ(commits.back().step, 500);
  for (size_t i = 0; i + 1 < commits.size(); ++i) {
    EXPECT_EQ(commits[i].step % 40, 0) << "commit at step " << commits[i].step;
    const int64_t gap = commits[i].step - (i > 0 ? commits[i - 1].step : 0);
    EXPECT_TRUE(gap == 40 || gap == 80) << "gap " << gap << " before step " << commits[i].step;
  }
}

// kill -9 of the attempt at step 730, relaunch with the same world size
// from the commit at 700: the cadence continues at 800.
TEST(SchedulerCadence, EveryStepsContinuesAcrossARelaunch) {
  Scheduler s(cadence_options(100, 0), make_index({64, 64}));
  double t = 0;
  auto first = run_attempt(s, Sim{}, 2, 0, 1265, 730, 1000, &t);
  EXPECT_EQ(steps_of(first), range(100, 700, 100));
  ASSERT_NE(s.latest_committed(), nullptr);
  const int64_t resume = s.latest_committed()->step;
  auto second = run_attempt(s, Sim{}, 2, resume, 1265, 0, t + 5, &t);
  std::vector<int64_t> want = range(800, 1200, 100);
  want.push_back(1265);
  EXPECT_EQ(steps_of(second), want);
}

// Relaunch with 1 rank instead of 2: the worker rescales the committed step
// to the new global batch (x2); the cadence is in the new numbering.
TEST(SchedulerCadence, EveryStepsAfterAWorldSizeChangeUsesTheNewNumbering) {
  Scheduler s(cadence_options(100, 0), make_index({64, 64}));
  double t = 0;
  auto first = run_attempt(s, Sim{}, 2, 0, 1000, 450, 1000, &t);
  EXPECT_EQ(steps_of(first), range(100, 400, 100));
  const int64_t resume = 2 * s.latest_committed()->step;  // 800
  auto second = run_attempt(s, Sim{}, 1, resume, 1050, 0, t + 5, &t);
  EXPECT_EQ(steps_of(second), (std::vector<int64_t>{900, 1000, 1050}));
}

// every_minutes: each checkpoint at the first step after the interval since
// the previous commit (the start of the attempt for the first), within the
// error of the rate the heartbeats measure.
TEST(SchedulerCadence, EveryMinutesAtTheFirstStepAfterTheInterval) {
  Scheduler s(cadence_options(0, 0.5), make_index({64, 64}));
  Sim sim;
  const double t0 = 1000;
  double t = 0;
  const auto commits = run_attempt(s, sim, 2, 0, 700, 0, t0, &t);
  ASSERT_GE(commits.size(), 4u);  // ~140 s of training, a checkpoint every ~30 s
  double since = t0;
  for (size_t i = 0; i + 1 < commits.size(); ++i) {
    const double due = since + 30.0;
    const auto expected = static_cast<int64_t>(std::ceil((due - t0) * sim.rate));
    EXPECT_NEAR(static_cast<double>(commits[i].step), static_cast<double>(expected), 3.0)
        << "checkpoint " << i << " due at t=" << due;
    since = commits[i].unix_s;
  }
  EXPECT_EQ(commits.back().step, 700);
  // And across a relaunch: the interval restarts with the attempt.
  const int64_t resume = s.latest_committed()->step;
  const double t1 = t + 5;
  const auto again = run_attempt(s, sim, 2, resume, 900, 0, t1, &t);
  ASSERT_GE(again.size(), 2u);
  EXPECT_NEAR(static_cast<double>(again[0].step), static_cast<double>(resume + 30 * sim.rate), 3.0);
}

}  // namespace
}  // namespace cnx::coordinator
