// Unit tests of the host speaker protocol of the Scheduler (scheduler.h,
// scheduler_host.cc): the same leases as the per-rank protocol, one voice
// per rank, two hosts claiming a rank, ask-ahead, all-or-nothing parts, one
// set of durable rows per host call, and restore.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "coordinator/scheduler.h"
#include "tests/coordinator/sim_util.h"

namespace cnx::coordinator {
namespace {

using test::make_index;

SchedulerOptions opts() {
  SchedulerOptions o;
  o.job_id = "job";
  o.seed = 11;
  o.heartbeat_timeout_s = 30;
  o.stall_s = 1000;
  o.lease_s = 600;
  o.checkpoint_root = "/ckpt";
  o.keep = 2;
  return o;
}

ShardIndex index40() {
  std::vector<int64_t> samples(40);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = 5 + static_cast<int64_t>(i % 7);
  return make_index(samples);
}

// world ranks on hosts of `per_host` consecutive ranks: host h is "node-h".
void start_hosts(Scheduler& s, int world, int per_host, const std::string& launch, double now = 100) {
  for (int h = 0; h * per_host < world; ++h) {
    std::vector<int> ranks;
    for (int r = h * per_host; r < std::min(world, (h + 1) * per_host); ++r) ranks.push_back(r);
    s.register_host("job", ranks, world, "node-" + std::to_string(h), launch, now);
  }
}

HostRef host(const Scheduler& s, int h) {
  return {"job", s.attempt(), "node-" + std::to_string(h)};
}

ErrorCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const SchedulerError& e) {
    return e.code();
  }
  ADD_FAILURE() << "no SchedulerError";
  return ErrorCode::kInvalidArgument;
}

TEST(SchedulerHost, SameLeasesAsThePerRankProtocol) {
  Scheduler per_rank(opts(), index40()), hosted(opts(), index40());
  for (int r = 0; r < 8; ++r) per_rank.register_worker("job", r, 8, "h", "L", 100);
  start_hosts(hosted, 8, 4, "L");
  ASSERT_EQ(hosted.state(), JobState::kRunning);
  for (int64_t pos = 0; pos < 6; ++pos) {
    std::vector<ShardAskInfo> asks;
    for (int r = 0; r < 4; ++r) asks.push_back({r, 0, pos});
    const auto grants = hosted.acquire_many(host(hosted, 0), asks, 101);
    ASSERT_EQ(grants.size(), 4u);
    for (int r = 0; r < 4; ++r) {
      const AcquireResult a = per_rank.acquire({"job", 1, r}, 0, pos, 101);
      EXPECT_EQ(a.end_of_epoch, grants[r].end_of_epoch) << "rank " << r << " position " << pos;
      EXPECT_EQ(a.lease.item, grants[r].lease.item) << "rank " << r << " position " << pos;
      EXPECT_EQ(a.rank_samples, grants[r].rank_samples);
      EXPECT_EQ(a.min_rank_samples, grants[r].min_rank_samples);
    }
  }
}

TEST(SchedulerHost, AsksBeyondTheEndOfASequenceAnswerEndOfEpoch) {
  Scheduler s(opts(), index40());
  start_hosts(s, 8, 8, "L");  // 40 shards over 8 ranks: 5 items each
  std::vector<ShardAskInfo> asks;
  for (int r = 0; r < 8; ++r)
    for (int64_t pos = 0; pos < 8; ++pos) asks.push_back({r, 0, pos});
  s.take_changes();
  const auto grants = s.acquire_many(host(s, 0), asks, 101);
  ASSERT_EQ(grants.size(), 64u);
  for (int r = 0; r < 8; ++r)
    for (int64_t pos = 0; pos < 8; ++pos)
      EXPECT_EQ(grants[r * 8 + pos].end_of_epoch, pos >= 5) << "rank " << r << " position " << pos;
  // The grants of all 8 ranks are one set of changes (one transaction):
  // the 8 rank rows, the epoch plan and the job row.
  const auto changes = s.take_changes();
  int rank_rows = 0;
  for (const auto& [k, v] : changes) rank_rows += k.rfind("rank/", 0) == 0;
  EXPECT_EQ(rank_rows, 8);
  ASSERT_TRUE(changes.count("plan/0"));
  EXPECT_EQ(*changes.at("plan/0"), R"({"fresh":true,"world":8})") << "a fresh plan is stored as (world, fresh)";
  // Retried as a whole (a lost reply): the same answers.
  const auto again = s.acquire_many(host(s, 0), asks, 102);
  for (size_t i = 0; i < grants.size(); ++i) {
    EXPECT_EQ(again[i].end_of_epoch, grants[i].end_of_epoch);
    EXPECT_EQ(again[i].lease.item, grants[i].lease.item);
  }
  EXPECT_EQ(s.status(102).shards_leased, 40);
}

TEST(SchedulerHost, OneVoicePerRankAndTwoHostsClaimingARank) {
  Scheduler s(opts(), index40());
  s.register_host("job", {0, 1, 2}, 6, "node-a", "L", 100);
  // Host b claims rank 2, which host a holds: refused as a whole.
  try {
    s.register_host("job", {2, 3}, 6, "node-b", "L", 100);
    FAIL() << "a second claim of rank 2 was accepted";
  } catch (const SchedulerError& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_NE(std::string(e.what()).find("rank 2 is already registered by host 'node-a'"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(s.status(100).ranks[3].registered) << "none of the refused host's ranks is registered";
  // A per-rank registration of a hosted rank is refused too; the speaker
  // registering again (restart) is idempotent.
  EXPECT_EQ(code_of([&] { s.register_worker("job", 1, 6, "node-a", "L", 100); }), ErrorCode::kFailedPrecondition);
  s.register_host("job", {0, 1, 2}, 6, "node-a", "L", 101);
  s.register_host("job", {3, 4}, 6, "node-b", "L", 101);
  s.register_worker("job", 5, 6, "solo", "L", 101);
  ASSERT_EQ(s.state(), JobState::kRunning);
  const HostRef a{"job", 1, "node-a"}, b{"job", 1, "node-b"};
  // Each rank is served by its own voice only.
  EXPECT_EQ(code_of([&] { s.heartbeat({"job", 1, 0}, {}, 102); }), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(code_of([&] { s.host_heartbeat(a, {{5, {}}}, 102); }), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(code_of([&] { s.acquire_many(b, {{0, 0, 0}}, 102); }), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(code_of([&] { s.host_heartbeat(a, {{0, {}}, {0, {}}}, 102); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.heartbeat({"job", 1, 5}, {}, 102).action, Action::kContinue);
  EXPECT_EQ(s.host_heartbeat(a, {{0, {}}, {1, {}}, {2, {}}}, 102).action, Action::kContinue);
  // A new launch fences the old speakers.
  s.register_host("job", {0, 1, 2}, 6, "node-a", "L2", 103);
  EXPECT_EQ(code_of([&] { s.host_heartbeat(b, {{3, {}}}, 103); }), ErrorCode::kStale);
}

TEST(SchedulerHost, ARankTheSpeakerLeavesOutTimesOut) {
  Scheduler s(opts(), index40());
  start_hosts(s, 4, 2, "L");
  HeartbeatInfo hb;
  hb.step = 1;
  for (double t = 101; t < 140; t += 5) {
    s.host_heartbeat(host(s, 0), {{0, hb}, {1, hb}}, t);
    s.host_heartbeat(host(s, 1), {{2, hb}}, t);  // rank 3 is not reported
    ++hb.step;
    s.tick(t);
  }
  EXPECT_EQ(s.state(), JobState::kRestarting);
  EXPECT_NE(s.status(140).reason.find("rank 3 lost"), std::string::npos) << s.status(140).reason;
  EXPECT_EQ(s.host_heartbeat(host(s, 0), {{0, hb}, {1, hb}}, 141).action, Action::kAbort);
}

TEST(SchedulerHost, PartsOfAHostAreRecordedTogetherOrNotAtAll) {
  Scheduler s(opts(), index40());
  start_hosts(s, 4, 2, "L");
  const CheckpointPlan p = s.request_checkpoint("job", 101);
  RankPart good;
  good.files = {{"rank.bin", std::string(64, 'a'), 3}};
  RankPart bad = good;
  bad.files[0].path = "../escape";
  good.rank = 0;
  bad.rank = 1;
  EXPECT_EQ(code_of([&] { s.report_parts(host(s, 0), p.id, p.step, {good, bad}, 102); }), ErrorCode::kInvalidArgument);
  s.take_changes();
  bad.files[0].path = "ok.bin";
  EXPECT_FALSE(s.report_parts(host(s, 0), p.id, p.step, {good, bad}, 103));
  int part_rows = 0;
  for (const auto& [k, v] : s.take_changes()) part_rows += k.rfind("part/", 0) == 0;
  EXPECT_EQ(part_rows, 2) << "the host's two parts, in one set of changes";
  // Another host at another step is refused; at the same step it commits.
  RankPart p2 = good, p3 = good;
  p2.rank = 2;
  p3.rank = 3;
  EXPECT_EQ(code_of([&] { s.report_parts(host(s, 1), p.id, p.step + 1, {p2, p3}, 104); }), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(s.report_parts(host(s, 1), p.id, p.step, {p2, p3}, 104));
  // The commit rewrites O(1) bytes: the parts stay rows of their own and a
  // fresh plan is stored as (world, fresh), neither copied into the checkpoint row.
  const auto changes = s.take_changes();
  ASSERT_TRUE(changes.count("ckpt/" + std::to_string(p.id)));
  EXPECT_LT(changes.at("ckpt/" + std::to_string(p.id))->size(), 400u) << *changes.at("ckpt/" + std::to_string(p.id));
  EXPECT_TRUE(s.report_parts(host(s, 1), p.id, p.step, {p2, p3}, 105)) << "a retry after the commit";
  ASSERT_NE(s.latest_committed(), nullptr);
  EXPECT_EQ(s.latest_committed()->parts.size(), 4u);
}

TEST(SchedulerHost, RestoreKeepsTheHostsAndTheirVoice) {
  Scheduler s(opts(), index40());
  start_hosts(s, 4, 2, "L");
  s.acquire_many(host(s, 1), {{2, 0, 0}, {3, 0, 0}}, 101);
  std::map<std::string, std::string> rows;
  for (auto& [k, v] : s.take_changes())
    if (v) rows[k] = *v;
  Scheduler r = Scheduler::restore(opts(), index40(), rows, 200);
  EXPECT_EQ(r.state(), JobState::kRunning);
  const auto again = r.acquire_many(host(r, 1), {{2, 0, 0}, {3, 0, 1}}, 201);
  EXPECT_FALSE(again[0].end_of_epoch);
  EXPECT_EQ(code_of([&] { r.acquire({"job", 1, 2}, 0, 1, 201); }), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.status(201).shards_leased, 3);
  // The speaker re-registers after the restart, as before.
  EXPECT_EQ(r.register_host("job", {2, 3}, 4, "node-1", "L", 202).attempt, 1);
}

TEST(SchedulerHost, PartsEmbeddedByAnOlderCoordinatorMoveToTheirOwnRows) {
  Scheduler s(opts(), index40());
  start_hosts(s, 2, 2, "L");
  const CheckpointPlan p = s.request_checkpoint("job", 101);
  RankPart a, b;
  a.rank = 0;
  b.rank = 1;
  a.files = b.files = {{"rank.bin", std::string(64, 'a'), 3}};
  ASSERT_TRUE(s.report_parts(host(s, 0), p.id, p.step, {a, b}, 102));
  std::map<std::string, std::string> rows;
  for (auto& [k, v] : s.take_changes())
    if (v) rows[k] = *v;
  // The old layout: the parts inside the checkpoint row, no part rows.
  const std::string ckpt = "ckpt/" + std::to_string(p.id);
  auto j = nlohmann::json::parse(rows.at(ckpt));
  j["parts"] = nlohmann::json::array({nlohmann::json::parse(rows.at("part/" + std::to_string(p.id) + "/0")),
                                      nlohmann::json::parse(rows.at("part/" + std::to_string(p.id) + "/1"))});
  rows[ckpt] = j.dump();
  rows.erase("part/" + std::to_string(p.id) + "/0");
  rows.erase("part/" + std::to_string(p.id) + "/1");
  Scheduler r = Scheduler::restore(opts(), index40(), rows, 200);
  ASSERT_NE(r.latest_committed(), nullptr);
  EXPECT_EQ(r.latest_committed()->parts.size(), 2u);
  const auto changes = r.take_changes();
  EXPECT_TRUE(changes.count("part/" + std::to_string(p.id) + "/0") &&
              changes.count("part/" + std::to_string(p.id) + "/1"))
      << "the embedded parts are written as rows of their own";
}

}  // namespace
}  // namespace cnx::coordinator
