// Unit tests of the coordinator's state machine (no gRPC, no disk).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/check.h"

#include "coordinator/scheduler.h"
#include "tests/coordinator/sim_util.h"

namespace cnx::coordinator {
namespace {

using test::make_index;

SchedulerOptions opts(int64_t seed = 7) {
  SchedulerOptions o;
  o.job_id = "job";
  o.seed = seed;
  o.heartbeat_timeout_s = 30;
  o.stall_s = 120;
  o.lease_s = 600;
  o.checkpoint_root = "/ckpt";
  o.keep = 2;
  return o;
}

WorkerRef ref(const Scheduler& s, int rank) {
  return {"job", s.attempt(), rank};
}

void start(Scheduler& s, int world, const std::string& launch, double now = 100) {
  for (int r = 0; r < world; ++r) s.register_worker("job", r, world, "h" + std::to_string(r), launch, now);
}

TEST(SchedulerPlan, DeterministicPermutationDealtRoundRobin) {
  auto index = make_index({5, 0, 7, 3, 9, 4, 6});
  Scheduler a(opts(), index), b(opts(), index), c(opts(8), index);
  start(a, 3, "L");
  start(b, 3, "L");
  start(c, 3, "L");
  const EpochPlan& pa = a.plan(0);
  ASSERT_EQ(pa.ranks.size(), 3u);
  std::vector<std::pair<int64_t, int64_t>> dealt;  // (order, shard)
  for (int r = 0; r < 3; ++r)
    for (size_t k = 0; k < pa.ranks[r].size(); ++k) {
      const WorkItem& it = pa.ranks[r][k];
      EXPECT_EQ(it.order % 3, r) << "item " << k << " of rank " << r;
      EXPECT_EQ(it.order / 3, static_cast<int64_t>(k));
      EXPECT_EQ(it.start, 0);
      EXPECT_EQ(it.end, index.shards[it.shard].samples);
      dealt.push_back({it.order, it.shard});
    }
  std::set<int64_t> shards;
  for (auto& d : dealt) shards.insert(d.second);
  EXPECT_EQ(shards, (std::set<int64_t>{0, 2, 3, 4, 5, 6})) << "every non-empty shard exactly once";
  EXPECT_EQ(dealt.size(), 6u);
  EXPECT_EQ(pa.ranks, b.plan(0).ranks) << "same seed and epoch give the same plan";
  bool differs = pa.ranks != a.plan(1).ranks || pa.ranks != c.plan(0).ranks;
  EXPECT_TRUE(differs) << "epoch or seed should change the order";
}

TEST(SchedulerLifecycle, WaitingRunningAndFencing) {
  Scheduler s(opts(), make_index({4, 4, 4, 4}));
  auto r0 = s.register_worker("job", 0, 2, "a", "L1", 100);
  EXPECT_EQ(r0.attempt, 1);
  EXPECT_EQ(r0.state, JobState::kWaiting);
  EXPECT_EQ(s.heartbeat(ref(s, 0), {}, 101).action, Action::kWait);
  EXPECT_EQ(s.register_worker("job", 1, 2, "b", "L1", 101).state, JobState::kRunning);
  EXPECT_EQ(s.heartbeat(ref(s, 0), {}, 102).action, Action::kContinue);
  // Re-registering in the same launch is idempotent.
  EXPECT_EQ(s.register_worker("job", 1, 2, "b", "L1", 102).attempt, 1);
  // A new launch opens attempt 2 and fences attempt 1.
  WorkerRef old = ref(s, 0);
  EXPECT_EQ(s.register_worker("job", 0, 2, "a", "L2", 103).attempt, 2);
  try {
    s.heartbeat(old, {}, 104);
    FAIL() << "stale attempt accepted";
  } catch (const SchedulerError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kStale);
    EXPECT_NE(std::string(e.what()).find("stale attempt 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(s.acquire(old, 0, 0, 104), SchedulerError);
  // A straggler of launch L1 cannot open a third attempt.
  try {
    s.register_worker("job", 1, 2, "b", "L1", 105);
    FAIL() << "old launch accepted";
  } catch (const SchedulerError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kStale);
  }
  EXPECT_EQ(s.attempt(), 2);
}

// `fn` is refused with kInvalidArgument and a message containing `needle`.
template <typename Fn>
void expect_invalid(Fn fn, const std::string& needle) {
  try {
    fn();
    FAIL() << "accepted; expected an error mentioning " << needle;
  } catch (const SchedulerError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SchedulerLifecycle, BadArgumentsNameTheField) {
  Scheduler s(opts(), make_index({4, 4}));
  expect_invalid([&] { s.register_worker("other", 0, 1, "h", "L", 1); }, "job_id");
  expect_invalid([&] { s.register_worker("job", 3, 2, "h", "L", 1); }, "rank");
  expect_invalid([&] { s.register_worker("job", 0, 0, "h", "L", 1); }, "world_size");
  expect_invalid([&] { s.register_worker("job", 0, 1, "h", "", 1); }, "launch_id");
  start(s, 2, "L");
  expect_invalid([&] { s.register_worker("job", 0, 3, "h", "L", 1); }, "world_size");
  expect_invalid([&] { s.acquire({"job", 1, 5}, 0, 0, 1); }, "rank");
  expect_invalid([&] { s.acquire(ref(s, 0), 2, 0, 1); }, "epoch");
  expect_invalid([&] { s.acquire(ref(s, 0), 0, 3, 1); }, "position");
  expect_invalid([&] { s.shard_done(ref(s, 0), 0, 0, 1, 1); }, "no active lease");
  auto a = s.acquire(ref(s, 0), 0, 0, 1);
  expect_invalid([&] { s.shard_done(ref(s, 0), 0, 0, a.lease.item.size() + 1, 1); }, "consumed");
  HeartbeatInfo bad;
  bad.step = -1;
  expect_invalid([&] { s.heartbeat(ref(s, 0), bad, 1); }, "step");
}

TEST(SchedulerLeases, SequenceRetriesAndEpochs) {
  Scheduler s(opts(), make_index({3, 5, 2, 6}));
  start(s, 2, "L");
  const EpochPlan p0 = s.plan(0);
  auto a = s.acquire(ref(s, 1), 0, 0, 100);
  ASSERT_FALSE(a.end_of_epoch);
  EXPECT_EQ(a.lease.item, p0.ranks[1][0]);
  EXPECT_EQ(a.rank_samples, p0.rank_samples(1));
  EXPECT_EQ(a.min_rank_samples, std::min(p0.rank_samples(0), p0.rank_samples(1)));
  EXPECT_DOUBLE_EQ(a.lease.deadline_unix_s, 700);
  // Retrying the same position returns the same lease.
  auto again = s.acquire(ref(s, 1), 0, 0, 101);
  EXPECT_EQ(again.lease.item, a.lease.item);
  EXPECT_EQ(again.lease.position, 0);
  auto b = s.acquire(ref(s, 1), 0, 1, 102);
  EXPECT_EQ(b.lease.item, p0.ranks[1][1]);
  EXPECT_TRUE(s.acquire(ref(s, 1), 0, 2, 103).end_of_epoch);
  EXPECT_EQ(s.status(103).shards_leased, 2);
  s.shard_done(ref(s, 1), 0, 0, a.lease.item.size(), 104);
  s.shard_done(ref(s, 1), 0, 0, a.lease.item.size(), 104);  // retry: no-op
  s.shard_done(ref(s, 1), 0, 1, b.lease.item.size() - 1, 105);
  auto st = s.status(105);
  EXPECT_EQ(st.shards_done, 2);
  EXPECT_EQ(st.shards_leased, 0);
  EXPECT_EQ(st.unused_samples, 1);
  // Rank 0 moves to epoch 1 without leasing anything of epoch 0: all unused.
  auto c = s.acquire(ref(s, 0), 1, 0, 106);
  EXPECT_EQ(c.lease.item, s.plan(1).ranks[0][0]);
  EXPECT_EQ(s.status(106).unused_samples, 1 + p0.rank_samples(0));
}

TEST(SchedulerFailures, HeartbeatTimeoutStallAndLeaseExpiry) {
  // mode 0: rank 0 goes silent; 1: no rank's step advances; 2: steps frozen
  // and a lease shorter than the stall limit.
  const char* expected[] = {"no heartbeat", "stalled", "expired"};
  for (int mode = 0; mode < 3; ++mode) {
    SchedulerOptions o = opts();
    o.heartbeat_timeout_s = 10;
    o.stall_s = 50;
    o.lease_s = mode == 2 ? 30 : 1000;
    Scheduler s(o, make_index({4, 4, 4}));
    start(s, 2, "L", 0);
    s.acquire(ref(s, 0), 0, 0, 0);
    double t = 0;
    for (; t < 200; t += 1) {
      HeartbeatInfo hb;
      hb.step = mode == 0 ? static_cast<int64_t>(t) : 0;
      s.heartbeat(ref(s, 1), hb, t);
      if (mode != 0) s.heartbeat(ref(s, 0), hb, t);
      s.tick(t);
      if (s.state() != JobState::kRunning) break;
    }
    EXPECT_EQ(s.state(), JobState::kRestarting) << "mode " << mode;
    const double limits[] = {10, 50, 30};
    EXPECT_NEAR(t, limits[mode] + 1, 1.01) << "mode " << mode;
    const auto reason = s.status(t).reason;
    EXPECT_NE(reason.find(expected[mode]), std::string::npos) << reason;
    EXPECT_EQ(s.heartbeat(ref(s, 1), {}, t + 1).action, Action::kAbort) << "mode " << mode;
    // The failed attempt cannot come back; a new launch can.
    EXPECT_THROW(s.register_worker("job", 0, 2, "h", "L", t + 2), SchedulerError);
    EXPECT_EQ(s.register_worker("job", 0, 2, "h", "L2", t + 2).attempt, 2);
  }
}

TEST(SchedulerCheckpoint, PlanCommitRetentionAndValidation) {
  Scheduler s(opts(), make_index({4, 4, 4, 4}));
  start(s, 2, "L");
  for (int r = 0; r < 2; ++r) {
    HeartbeatInfo hb;
    hb.step = 10;
    s.heartbeat(ref(s, r), hb, 100);
  }
  s.acquire(ref(s, 0), 0, 0, 100);
  std::vector<std::string> deleted;
  for (int k = 0; k < 4; ++k) {
    CheckpointPlan p = s.request_checkpoint("job", 100 + k);
    EXPECT_GT(p.step, 10);
    EXPECT_EQ(s.request_checkpoint("job", 100 + k).id, p.id) << "pending plan returned again";
    EXPECT_EQ(p.dir.rfind("/ckpt/job/ckpt-", 0), 0u) << p.dir;
    auto hb = s.heartbeat(ref(s, 1), HeartbeatInfo{}, 100 + k);
    EXPECT_EQ(hb.action, Action::kCheckpoint);
    EXPECT_EQ(hb.plan.id, p.id);
    RankPart part;
    part.files = {{"model.safetensors", std::string(64, 'a'), 10}};
    part.progress.epoch = 0;
    part.progress.next_position = 1;
    part.progress.partial = {{0, 2}};
    EXPECT_FALSE(s.report_part(ref(s, 0), p.id, p.step + 1, part, 100 + k));
    // Rank 1 reports a different step: refused.
    RankPart p1;
    EXPECT_THROW(s.report_part(ref(s, 1), p.id, p.step + 2, p1, 100 + k), SchedulerError);
    EXPECT_TRUE(s.report_part(ref(s, 1), p.id, p.step + 1, p1, 100 + k));
    EXPECT_TRUE(s.report_part(ref(s, 1), p.id, p.step + 1, p1, 100 + k)) << "retry after commit";
    ASSERT_NE(s.latest_committed(), nullptr);
    EXPECT_EQ(s.latest_committed()->id, p.id);
    for (auto& d : s.take_deletions()) deleted.push_back(d);
  }
  EXPECT_EQ(s.status(200).checkpoints_retained, 2) << "keep = 2";
  EXPECT_EQ(s.status(200).checkpoints_committed, 4) << "every commit counts, retained or not";
  ASSERT_EQ(deleted.size(), 2u);
  EXPECT_NE(deleted[0].find("ckpt-000001"), std::string::npos);
  EXPECT_NE(deleted[1].find("ckpt-000002"), std::string::npos);

  CheckpointPlan p = s.request_checkpoint("job", 300);
  auto bad_part = [&](RankPart part, const std::string& needle) {
    try {
      s.report_part(ref(s, 0), p.id, p.step, part, 300);
      FAIL() << "accepted; expected " << needle;
    } catch (const SchedulerError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  for (const char* path : {"../escape", "/etc/passwd", "a/../../b", "", "a//b", "./x"}) {
    RankPart part;
    part.files = {{path, std::string(64, 'b'), 1}};
    bad_part(part, "files[0].path");
  }
  RankPart badsha;
  badsha.files = {{"x", "XYZ", 1}};
  bad_part(badsha, "sha256");
  RankPart badprog;
  badprog.progress.next_position = 5;
  bad_part(badprog, "next_position");
  RankPart badpartial;
  badpartial.progress.next_position = 1;
  badpartial.progress.partial = {{0, 99}};
  bad_part(badpartial, "consumed");
  try {
    s.report_part(ref(s, 0), 999, p.step, RankPart{}, 300);
    FAIL();
  } catch (const SchedulerError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
}

TEST(SchedulerCheckpoint, DrainAndPreemption) {
  Scheduler s(opts(), make_index({4, 4}));
  start(s, 1, "L");
  HeartbeatInfo hb;
  hb.step = 3;
  hb.preempted = true;
  auto r = s.heartbeat(ref(s, 0), hb, 101);
  ASSERT_EQ(r.action, Action::kCheckpoint);
  EXPECT_TRUE(s.report_part(ref(s, 0), r.plan.id, r.plan.step, RankPart{}, 102));
  EXPECT_EQ(s.state(), JobState::kStopped);
  EXPECT_EQ(s.heartbeat(ref(s, 0), {}, 103).action, Action::kDrain);

  Scheduler t(opts(), make_index({4, 4}));
  start(t, 1, "L");
  auto d = t.drain("job", /*checkpoint=*/false, 101);
  EXPECT_FALSE(d.has_plan);
  EXPECT_EQ(d.state, JobState::kStopped);
  EXPECT_EQ(t.heartbeat(ref(t, 0), {}, 103).action, Action::kDrain);
  // A new launch resumes a stopped job.
  EXPECT_EQ(t.register_worker("job", 0, 1, "h", "L2", 104).state, JobState::kRunning);
}

// The final checkpoint: a rank done with its last step asks for a plan at
// exactly that step; a pending plan beyond it is abandoned (no rank can reach
// it); nothing is planned once a checkpoint at that step is committed.
TEST(SchedulerCheckpoint, FinalCheckpointIsPlannedAtTheLastStep) {
  Scheduler s(opts(), make_index({4, 4}));
  start(s, 2, "L");
  HeartbeatInfo hb;
  hb.step = 20;
  s.heartbeat(ref(s, 0), hb, 101);
  const CheckpointPlan ahead = s.request_checkpoint("job", 101);
  ASSERT_GT(ahead.step, 20);
  hb.final_step = 20;
  auto r = s.heartbeat(ref(s, 0), hb, 102);
  ASSERT_EQ(r.action, Action::kCheckpoint);
  EXPECT_NE(r.plan.id, ahead.id);
  EXPECT_EQ(r.plan.step, 20);
  EXPECT_NE(r.plan.dir.find("step-000000020"), std::string::npos) << r.plan.dir;
  std::vector<std::string> gone = s.take_deletions();
  EXPECT_NE(std::find(gone.begin(), gone.end(), ahead.dir), gone.end()) << "the unreachable plan's folder is deleted";
  EXPECT_THROW(s.report_part(ref(s, 0), ahead.id, 20, RankPart{}, 103), SchedulerError) << "abandoned";
  // The other rank asks too: the same plan; both parts commit it.
  auto r1 = s.heartbeat(ref(s, 1), hb, 103);
  EXPECT_EQ(r1.plan.id, r.plan.id);
  EXPECT_FALSE(s.report_part(ref(s, 0), r.plan.id, 20, RankPart{}, 104));
  EXPECT_TRUE(s.report_part(ref(s, 1), r.plan.id, 20, RankPart{}, 104));
  EXPECT_EQ(s.heartbeat(ref(s, 0), hb, 105).action, Action::kContinue) << "committed: nothing more to plan";
  EXPECT_EQ(s.latest_committed()->step, 20);

  // final_step must be the step the rank reports, and not negative.
  hb.final_step = 19;
  EXPECT_THROW(s.heartbeat(ref(s, 0), hb, 106), SchedulerError);
  hb.final_step = -1;
  EXPECT_THROW(s.heartbeat(ref(s, 0), hb, 106), SchedulerError);
}

TEST(SchedulerPersistence, RestoreReproducesStateAndLeases) {
  auto index = make_index({3, 5, 2, 6, 1});
  Scheduler s(opts(), index);
  std::map<std::string, std::string> rows;
  auto flush = [&] {
    for (auto& [k, v] : s.take_changes()) {
      if (v)
        rows[k] = *v;
      else
        rows.erase(k);
    }
  };
  start(s, 2, "L");
  auto a = s.acquire(ref(s, 0), 0, 0, 100);
  HeartbeatInfo hb;
  hb.step = 4;
  s.heartbeat(ref(s, 1), hb, 100);
  CheckpointPlan p = s.request_checkpoint("job", 101);
  s.report_part(ref(s, 1), p.id, p.step, RankPart{}, 102);
  flush();
  Scheduler r = Scheduler::restore(opts(), index, rows, 500);
  EXPECT_EQ(r.attempt(), 1);
  EXPECT_EQ(r.state(), JobState::kRunning);
  auto st = r.status(500);
  EXPECT_EQ(st.shards_leased, 1);
  EXPECT_TRUE(st.checkpoint_pending);
  EXPECT_EQ(st.pending.id, p.id);
  // The held lease is intact (a retry returns it) and the plan continues.
  EXPECT_EQ(r.acquire(ref(r, 0), 0, 0, 501).lease.item, a.lease.item);
  EXPECT_EQ(r.acquire(ref(r, 0), 0, 1, 501).lease.item, s.acquire(ref(s, 0), 0, 1, 501).lease.item);
  EXPECT_TRUE(r.report_part(ref(r, 0), p.id, p.step, RankPart{}, 502));
  // A different seed or index is refused rather than silently mixed.
  EXPECT_THROW(Scheduler::restore(opts(99), index, rows, 500), CheckError);
  EXPECT_THROW(Scheduler::restore(opts(), make_index({1}), rows, 500), CheckError);
}

TEST(SchedulerPersistence, StepsMadeWhileDownDoNotInflateTheRate) {
  // Ranks keep training while the coordinator is down. The first heartbeat
  // after the restore reports those steps; dividing them by the time since
  // the restore would give a huge rate and plan the next checkpoint far ahead.
  auto index = make_index({4, 4});
  SchedulerOptions o = opts();
  o.heartbeat_s = 1.0;
  Scheduler s(o, index);
  std::map<std::string, std::string> rows;
  start(s, 1, "L");
  HeartbeatInfo hb;
  hb.step = 10;
  s.heartbeat(ref(s, 0), hb, 100);
  hb.step = 11;
  s.heartbeat(ref(s, 0), hb, 101);  // 1 step/s
  for (auto& [k, v] : s.take_changes())
    if (v) rows[k] = *v;
  Scheduler r = Scheduler::restore(o, index, rows, 200);
  hb.step = 100;  // 89 steps made during the 99 s outage
  r.heartbeat(ref(r, 0), hb, 200.5);
  CheckpointPlan p = r.request_checkpoint("job", 200.6);
  // Rate unknown right after the restore: margin 1, not 2 * 178 steps/s.
  EXPECT_LE(p.step, 100 + 3) << "planned at step " << p.step;
  hb.step = 101;
  r.heartbeat(ref(r, 0), hb, 201.5);  // a measured rate again: 1 step/s
  EXPECT_EQ(r.status(201.6).ranks.at(0).step, 101);
}

// A token holder's huge numbers: refused by range, and every plan stays at a
// positive step ahead of the ranks (the unchecked sum once went negative).
TEST(SchedulerBounds, HugeStepsAreRefusedAndPlansNeverOverflow) {
  SchedulerOptions o = opts();
  o.every_steps = 5;
  Scheduler s(o, make_index({4, 4}));
  start(s, 2, "L");
  for (int64_t big : {INT64_MAX, INT64_MAX - 1, kMaxStep + 1}) {
    HeartbeatInfo hb;
    hb.step = big;
    expect_invalid([&] { s.heartbeat(ref(s, 0), hb, 101); }, "step: " + std::to_string(big) + " out of range");
    hb.step = 1;
    hb.epoch = big;
    expect_invalid([&] { s.heartbeat(ref(s, 0), hb, 101); }, "epoch");
    hb.epoch = 0;
    hb.final_step = big;
    expect_invalid([&] { s.heartbeat(ref(s, 0), hb, 101); }, "final_step");
  }
  EXPECT_EQ(s.status(101).checkpoints_committed + s.status(101).checkpoint_pending, 0)
      << "a refused heartbeat plans nothing";
  // The largest accepted step, reached in one second (rate ~1e12 steps/s):
  // the every_steps plan is capped at kMaxStep instead of wrapping around.
  HeartbeatInfo hb;
  hb.step = 1;
  s.heartbeat(ref(s, 0), hb, 102);
  hb.step = kMaxStep;
  s.heartbeat(ref(s, 0), hb, 103);
  const SchedulerStatus st = s.status(103);
  if (st.checkpoint_pending) {
    EXPECT_GE(st.pending.step, kMaxStep);
    EXPECT_GT(st.pending.step, 0);
  }
  const CheckpointPlan p = s.request_checkpoint("job", 104);
  EXPECT_GT(p.step, 0);
  EXPECT_LE(p.step, kMaxStep);
  expect_invalid([&] { s.report_part(ref(s, 0), p.id, INT64_MAX, RankPart{}, 105); }, "step");
}

TEST(SchedulerBounds, WorldSizeAndEpochsAreBounded) {
  SchedulerOptions o = opts();
  o.max_world_size = 8;
  o.max_epochs = epoch_limit(2.5);  // epochs 0..4 (ceil 3 + 2 of slack)
  EXPECT_EQ(o.max_epochs, 5);
  EXPECT_EQ(epoch_limit(0), kMaxEpoch);
  EXPECT_EQ(epoch_limit(1e300), kMaxEpoch);
  Scheduler s(o, make_index({4, 4}));
  try {
    s.register_worker("job", 0, 65536, "h", "L", 100);
    FAIL() << "world size 65536 accepted";
  } catch (const SchedulerError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("max_world_size"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s.attempt(), 0) << "a refused registration opens no attempt";
  start(s, 1, "L");
  // Walk epoch by epoch (each epoch's plan is state): stops at the limit.
  int64_t epoch = 0;
  for (; epoch < 100; ++epoch) {
    try {
      for (int64_t pos = 0;; ++pos)
        if (s.acquire(ref(s, 0), epoch, pos, 100).end_of_epoch) break;
    } catch (const SchedulerError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("epoch: 5 out of range [0, 5)"), std::string::npos) << e.what();
      break;
    }
  }
  EXPECT_EQ(epoch, 5);
  std::map<std::string, std::optional<std::string>> rows = s.take_changes();
  int plans = 0;
  for (const auto& [k, v] : rows) plans += k.rfind("plan/", 0) == 0 && v.has_value();
  EXPECT_LE(plans, 5);
}

}  // namespace
}  // namespace cnx::coordinator
