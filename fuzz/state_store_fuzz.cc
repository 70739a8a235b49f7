// Fuzz target: restoring the coordinator from a damaged or tampered state
// database (coordinator/store.h, Scheduler::restore), as CoordinatorServer
// does at start: the input is the SQLite file.
//
// Contract: cnx::CheckError (the coordinator refuses to start, naming the
// database or the row), or a scheduler that then serves: status, timers,
// registrations of the whole world, leases, shard reports, checkpoint plans
// and drains answer or throw SchedulerError (a client error), never crash or
// throw anything else, and its state after all that restores again.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "common/check.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "data/shard_index.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace co = cnx::coordinator;
namespace fs = std::filesystem;

// The job of the seed databases (fuzz/make_corpus.cc writes them with the
// same options and index).
co::SchedulerOptions options() {
  co::SchedulerOptions o;
  o.job_id = "fuzz-job";
  o.seed = 5;
  o.max_epochs = 4;
  o.checkpoint_root = "/ckpt";
  o.every_steps = 3;
  o.keep = 2;
  return o;
}

cnx::data::ShardIndex index() {
  cnx::data::ShardIndex idx;
  for (int i = 0; i < 4; ++i) {
    cnx::data::ShardInfo s;
    s.name = "train-" + std::to_string(i) + ".tar";
    s.samples = 3 + i;
    s.sha256 = std::string(64, 'a' + i);
    idx.shards.push_back(s);
    idx.total_samples += s.samples;
  }
  return idx;
}

// Runs every kind of call against a restored scheduler; SchedulerError is a
// refusal the client sees, anything else escapes (a finding).
void exercise(co::Scheduler& s, double now) {
  auto refused = [](auto&& f) {
    try {
      f();
    } catch (const co::SchedulerError&) {
    }
  };
  s.status(now);
  s.latest_committed();
  s.tick(now + 1);
  const int world = std::max(1, std::min(8, s.status(now).world_size));
  int64_t attempt = s.attempt();
  for (int r = 0; r < world; ++r)
    refused([&] { attempt = s.register_worker("fuzz-job", r, world, "h", "L2", now + 2).attempt; });
  for (int r = 0; r < world; ++r) {
    const co::WorkerRef ref{"fuzz-job", attempt, r};
    refused([&] {
      co::HeartbeatInfo hb;
      hb.step = 4;
      s.heartbeat(ref, hb, now + 3);
    });
    for (int64_t pos = 0; pos < 3; ++pos) {
      refused([&] {
        const co::AcquireResult a = s.acquire(ref, s.status(now + 3).epoch, pos, now + 3);
        if (!a.end_of_epoch) s.shard_done(ref, a.lease.epoch, pos, a.lease.item.size(), now + 4);
      });
    }
  }
  refused([&] {
    const co::CheckpointPlan p = s.request_checkpoint("fuzz-job", now + 5);
    for (int r = 0; r < world; ++r) {
      co::RankPart part;
      part.files = {{"model.pt", std::string(64, 'e'), 10}};
      refused([&] { s.report_part({"fuzz-job", attempt, r}, p.id, p.step, part, now + 6); });
    }
  });
  s.tick(now + 1e5);  // every timeout fires
  s.status(now + 1e5);
  refused([&] { s.drain("fuzz-job", true, now + 1e5 + 1); });
  s.take_deletions();
  s.take_events();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string db = cnx::fuzz::scratch_dir() + "/state.sqlite";
  for (const char* suffix : {"-wal", "-shm"}) fs::remove(db + suffix);
  cnx::fuzz::write_file(db, data, size);
  std::map<std::string, std::string> rows;
  std::optional<co::Scheduler> s;
  const double now = 1.8e9;
  try {
    co::Store store(db);
    rows = store.load();
    s.emplace(co::Scheduler::restore(options(), index(), rows, now));
  } catch (const cnx::CheckError&) {
    return 0;
  }
  exercise(*s, now);
  // Rows as the store would hold them after these calls.
  for (auto& [key, value] : s->take_changes()) {
    if (value)
      rows[key] = *value;
    else
      rows.erase(key);
  }
  try {
    co::Scheduler::restore(options(), index(), rows, now + 2e5);
  } catch (const cnx::CheckError& e) {
    FUZZ_REQUIRE(false, std::string("the state after serving does not restore: ") + e.what());
  }
  return 0;
}
