// Restoring the coordinator from a damaged or tampered state database: a real
// job's rows are written to a SQLite store, one row is corrupted, and the
// restore must refuse with a CheckError naming that row (never crash, never
// start with state that fails later).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "tests/coordinator/sim_util.h"

namespace cnx::coordinator {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Rows = std::map<std::string, std::string>;

SchedulerOptions opts() {
  SchedulerOptions o;
  o.job_id = "job";
  o.seed = 11;
  o.checkpoint_root = "/ckpt";
  o.keep = 2;
  return o;
}

const ShardIndex& index() {
  static const ShardIndex kIndex = test::make_index({4, 4, 4, 4});
  return kIndex;
}

// A job with 2 ranks, a lease out, checkpoint 1 committed and 2 pending
// with rank 0's part reported, persisted through a real SQLite store.
Rows job_rows(const fs::path& dir) {
  Scheduler s(opts(), index());
  const std::string db = (dir / "job.sqlite").string();
  Store store(db);
  for (int r = 0; r < 2; ++r) s.register_worker("job", r, 2, "h" + std::to_string(r), "L", 100);
  for (int r = 0; r < 2; ++r) {
    HeartbeatInfo hb;
    hb.step = 5;
    s.heartbeat({"job", 1, r}, hb, 101);
  }
  s.acquire({"job", 1, 0}, 0, 0, 101);
  const CheckpointPlan p = s.request_checkpoint("job", 102);
  for (int r = 0; r < 2; ++r) {
    RankPart part;
    part.files = {{"model.pt", std::string(64, 'a'), 1}};
    part.progress.next_position = r == 0 ? 1 : 0;
    s.report_part({"job", 1, r}, p.id, p.step, part, 103);
  }
  const CheckpointPlan pending = s.request_checkpoint("job", 104);
  store.apply(s.take_changes());
  RankPart part;
  part.files = {{"model.pt", std::string(64, 'b'), 1}};
  part.progress.next_position = 1;
  s.report_part({"job", 1, 0}, pending.id, pending.step, part, 105);  // its own row until the commit
  store.apply(s.take_changes());
  return store.load();
}

// Writes `rows` to a fresh store file, reads it back and restores from it.
void restore_from_file(const fs::path& dir, const Rows& rows) {
  const std::string db = (dir / ("t" + std::to_string(std::rand()) + ".sqlite")).string();
  {
    Store store(db);
    Changes changes;
    for (const auto& [k, v] : rows) changes[k] = v;
    store.apply(changes);
  }
  Store store(db);
  Scheduler::restore(opts(), index(), store.load(), 200);
}

// The CheckError message of restoring `rows` ("" when it restores).
std::string refusal(const fs::path& dir, const Rows& rows) {
  try {
    restore_from_file(dir, rows);
  } catch (const CheckError& e) {
    return e.what();
  }
  return "";
}

struct Tamper {
  const char* what;
  std::function<void(Rows&)> apply;
  std::string row;     // the row the message must name
  std::string needle;  // and what it must say
};

class Restore : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cnx_restore_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    rows_ = job_rows(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  json row(const std::string& key) { return json::parse(rows_.at(key)); }
  fs::path dir_;
  Rows rows_;
};

TEST_F(Restore, IntactDatabaseRestores) {
  ASSERT_TRUE(rows_.count("plan/0") && rows_.count("ckpt/1") && rows_.count("ckpt/2") && rows_.count("rank/0") &&
              rows_.count("part/2/0"));
  EXPECT_EQ(refusal(dir_, rows_), "");
}

TEST_F(Restore, EveryDamagedRowIsRefusedByName) {
  const int64_t pending = row("job").at("pending").get<int64_t>();
  ASSERT_EQ(pending, 2);
  const std::vector<Tamper> cases = {
      {"plan row with no ranks", [](Rows& r) { r["plan/0"] = R"({"world":2,"ranks":[]})"; }, "plan/0",
       "0 rank lists, expected 2"},
      {"pending checkpoint row missing",
       [](Rows& r) {
         r.erase("ckpt/2");
         r.erase("part/2/0");
       },
       "job", "pending checkpoint 2 has no row 'ckpt/2'"},
      {"unknown job state",
       [this](Rows& r) {
         json j = row("job");
         j["state"] = 42;
         r["job"] = j.dump();
       },
       "job", "unknown job state 42"},
      {"rank beyond the world size", [this](Rows& r) { r["rank/7"] = rows_.at("rank/0"); }, "rank/7",
       "outside the job's world size 2"},
      {"unknown row kind", [](Rows& r) { r["evil/1"] = "{}"; }, "evil/1", "unknown kind of row"},
      {"row id not a number", [this](Rows& r) { r["rank/x"] = rows_.at("rank/0"); }, "rank/x", "not a number"},
      {"not JSON", [](Rows& r) { r["ckpt/1"] = "{"; }, "ckpt/1", "parse error"},
      {"field of the wrong type",
       [this](Rows& r) {
         json j = row("rank/1");
         j["epoch"] = "soon";
         r["rank/1"] = j.dump();
       },
       "rank/1", "type"},
      {"plan item of a shard outside the index",
       [](Rows& r) { r["plan/0"] = R"({"world":2,"ranks":[[[99,0,10,0]],[]]})"; }, "plan/0",
       "shard 99 outside the shard index"},
      {"fresh plan of an absurd world size", [](Rows& r) { r["plan/0"] = R"({"world":1000000000,"fresh":true})"; },
       "plan/0", "fresh plan for world size 1000000000"},
      {"fresh plan of another world size", [](Rows& r) { r["plan/0"] = R"({"world":3,"fresh":true})"; }, "plan/0",
       "plan for world size 3"},
      {"lease with samples beyond its shard",
       [this](Rows& r) {
         json j = row("rank/0");
         j["leases"][0]["item"][2] = 1000;
         r["rank/0"] = j.dump();
       },
       "rank/0", "samples [0, 1000)"},
      {"committed checkpoint missing a part", [](Rows& r) { r.erase("part/1/1"); }, "ckpt/1",
       "committed with 1 parts for world size 2"},
      {"pending id points at a committed checkpoint",
       [this](Rows& r) {
         json j = row("job");
         j["pending"] = 1;
         r["job"] = j.dump();
       },
       "ckpt/1", "not in state pending"},
      {"unknown checkpoint state",
       [this](Rows& r) {
         json j = row("ckpt/1");
         j["state"] = 9;
         r["ckpt/1"] = j.dump();
       },
       "ckpt/1", "unknown checkpoint state 9"},
      {"rank position beyond its plan",
       [this](Rows& r) {
         json j = row("rank/0");
         j["next"] = 50;
         r["rank/0"] = j.dump();
       },
       "rank/0", "next position 50"},
      {"job row missing", [](Rows& r) { r.erase("job"); }, "", "the 'job' row is missing"},
      {"part of a checkpoint with no row", [this](Rows& r) { r["part/9/0"] = rows_.at("part/2/0"); }, "part/9/0",
       "which has no row 'ckpt/9'"},
      {"part stored under another rank", [this](Rows& r) { r["part/2/1"] = rows_.at("part/2/0"); }, "part/2/1",
       "part of rank 0 stored under rank 1"},
      {"part row without a rank", [this](Rows& r) { r["part/2"] = rows_.at("part/2/0"); }, "part/2",
       "expected part/<checkpoint id>/<rank>"},
  };
  for (const auto& c : cases) {
    Rows tampered = rows_;
    c.apply(tampered);
    const std::string m = refusal(dir_, tampered);
    EXPECT_NE(m, "") << c.what << ": restored";
    if (!c.row.empty()) EXPECT_NE(m.find("row '" + c.row + "'"), std::string::npos) << c.what << ": " << m;
    EXPECT_NE(m.find(c.needle), std::string::npos) << c.what << ": " << m;
  }
}

}  // namespace
}  // namespace cnx::coordinator
