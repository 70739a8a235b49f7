// LeaseSource against the real coordinator scheduler (in process, no gRPC):
// ranks driven in lockstep like the trainer drives them (every rank moves to
// the next epoch as soon as one runs out). Oracles:
// * a job interrupted after a committed checkpoint and resumed with the same
//   world size replays the uninterrupted job's batches (keys and pixels);
// * resumed with another world size, no sample is used twice in the epoch,
//   and used + the coordinator's unused count covers the epoch exactly;
// * progress reported at a checkpoint matches the samples used.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "coordinator/scheduler.h"
#include "data/make_shards.h"
#include "data/shard_index.h"
#include "tests/data/data_fixtures.h"
#include "worker/lease_source.h"

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

using coordinator::Scheduler;

// The scheduler as a rank's LeaseClient.
class SchedulerClient final : public LeaseClient {
 public:
  SchedulerClient(Scheduler& s, int rank) : s_(s), rank_(rank) {}
  LeaseGrant acquire(int64_t epoch, int64_t position) override {
    const coordinator::AcquireResult r = s_.acquire(ref(), epoch, position, 1000);
    LeaseGrant g;
    g.end_of_epoch = r.end_of_epoch;
    if (g.end_of_epoch) return g;
    const auto& info = s_.index().shards[r.lease.item.shard];
    g.epoch = r.lease.epoch;
    g.position = r.lease.position;
    g.shard_id = r.lease.item.shard;
    g.shard_name = info.name;
    g.sha256 = info.sha256;
    g.shard_samples = info.samples;
    g.start = r.lease.item.start;
    g.end = r.lease.item.end;
    return g;
  }
  void done(int64_t epoch, int64_t position, int64_t consumed) override {
    s_.shard_done(ref(), epoch, position, consumed, 1000);
    ++dones;
  }
  coordinator::WorkerRef ref() const { return {"job", s_.attempt(), rank_}; }
  int dones = 0;

 private:
  Scheduler& s_;
  int rank_;
};

struct StepRecord {
  int64_t epoch = 0;
  std::vector<std::vector<std::string>> keys;  // per rank
  std::vector<at::Tensor> images;              // per rank
};

// A job of `world` ranks on one scheduler.
class Job {
 public:
  Job(Scheduler& s, int world, const data::DataOptions& o, const std::string& launch) {
    for (int r = 0; r < world; ++r) s.register_worker("job", r, world, "host", launch, 1000);
    EXPECT_EQ(s.state(), coordinator::JobState::kRunning);
    for (int r = 0; r < world; ++r) {
      clients.push_back(std::make_unique<SchedulerClient>(s, r));
      sources.push_back(std::make_unique<LeaseSource>(o, *clients.back()));
      sources.back()->start_epoch(0);  // as the Trainer's constructor does
    }
  }
  // One step of every rank, as Trainer::next_batch agrees on it.
  StepRecord step() {
    for (int attempt = 0; attempt < 2; ++attempt) {
      std::vector<std::optional<TrainBatch>> b;
      bool all = true;
      for (auto& s : sources) {
        b.push_back(s->next());
        all = all && b.back().has_value();
      }
      if (all) {
        StepRecord rec;
        rec.epoch = epoch;
        for (auto& x : b) {
          EXPECT_EQ(x->epoch, epoch);
          rec.keys.push_back(x->keys);
          rec.images.push_back(x->images);
        }
        return rec;
      }
      ++epoch;
      for (auto& s : sources) s->start_epoch(epoch);
    }
    ADD_FAILURE() << "epoch " << epoch << " yields no batch";
    return {};
  }
  std::vector<std::unique_ptr<SchedulerClient>> clients;
  std::vector<std::unique_ptr<LeaseSource>> sources;
  int64_t epoch = 0;
};

class LeaseSourceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = data::testing::temp_dir("lease_source");
    data::testing::make_image_folder(dir_ / "src", 4, 11);  // 44 samples
    data::MakeShardsOptions opt;
    opt.out_dir = (dir_ / "shards").string();
    opt.samples_per_shard = 6;  // 8 shards: 7 x 6 + 2
    data::make_shards_from_folder((dir_ / "src").string(), opt);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static data::DataOptions options() {
    data::DataOptions o;
    o.index_path = (dir_ / "shards" / "index.json").string();
    o.input_size = 16;
    o.batch_size = 3;
    o.num_threads = 2;
    o.seed = 9;
    return o;
  }
  static data::DataOptions small_batches() {
    data::DataOptions o = options();
    o.batch_size = 2;
    return o;
  }
  static Scheduler scheduler() {
    coordinator::SchedulerOptions so;
    so.job_id = "job";
    so.seed = 9;
    so.checkpoint_root = (dir_ / "ckpt").string();
    return Scheduler(so, data::load_index((dir_ / "shards" / "index.json").string()));
  }
  // Commits a checkpoint of every rank's lease cursor at `step`; returns the cursors.
  static std::vector<std::string> checkpoint(Scheduler& s, Job& job, int64_t step) {
    const coordinator::CheckpointPlan p = s.request_checkpoint("job", 1000);
    std::vector<std::string> cursors;
    bool committed = false;
    for (size_t r = 0; r < job.sources.size(); ++r) {
      cursors.push_back(job.sources[r]->cursor());
      const LeaseProgress lp = LeaseCursor::from_string(cursors.back()).progress();
      coordinator::RankPart part;
      part.progress.epoch = lp.epoch;
      part.progress.next_position = lp.next_position;
      for (const auto& x : lp.partial) part.progress.partial.push_back({x.position, x.consumed, lp.epoch});
      part.data_cursor = cursors.back();
      committed = s.report_part(job.clients[r]->ref(), p.id, std::max(step, p.step), part, 1000);
    }
    EXPECT_TRUE(committed);
    return cursors;
  }

  static fs::path dir_;
};
fs::path LeaseSourceTest::dir_;

TEST_F(LeaseSourceTest, ResumeWithTheSameWorldSizeReplaysTheSameBatches) {
  constexpr int kSteps = 20, kCheckpoint = 9, kLost = 3;  // steps 10..12 are lost and redone
  Scheduler ref_s = scheduler();
  Job ref(ref_s, 2, options(), "ref");
  std::vector<StepRecord> want;
  for (int i = 0; i < kSteps; ++i) want.push_back(ref.step());
  ASSERT_GE(want.back().epoch, 2) << "the run must cross epoch boundaries";

  // Every sample at most once per epoch in the reference, and per rank the
  // leases it reported done cover what it read.
  std::map<int64_t, std::multiset<std::string>> per_epoch;
  for (const auto& rec : want)
    for (const auto& ks : rec.keys) per_epoch[rec.epoch].insert(ks.begin(), ks.end());
  for (const auto& [e, keys] : per_epoch)
    EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size()) << "epoch " << e;

  Scheduler s = scheduler();
  std::vector<std::string> cursors;
  {
    Job first(s, 2, options(), "first");
    for (int i = 0; i < kCheckpoint; ++i) {
      const StepRecord got = first.step();
      ASSERT_EQ(got.keys, want[i].keys) << "step " << i + 1;
    }
    cursors = checkpoint(s, first, kCheckpoint);
    for (int i = 0; i < kLost; ++i) first.step();  // work after the commit, lost with the attempt
  }
  Job second(s, 2, options(), "second");
  for (size_t r = 0; r < 2; ++r) {
    second.sources[r]->restore(cursors[r]);
    second.epoch = LeaseCursor::from_string(cursors[r]).epoch;
  }
  for (int i = kCheckpoint; i < kSteps; ++i) {
    const StepRecord got = second.step();
    ASSERT_EQ(got.epoch, want[i].epoch) << "step " << i + 1;
    ASSERT_EQ(got.keys, want[i].keys) << "step " << i + 1;
    for (size_t r = 0; r < 2; ++r)
      EXPECT_TRUE(at::equal(got.images[r], want[i].images[r])) << "step " << i + 1 << " rank " << r << ": pixels";
  }
}

TEST_F(LeaseSourceTest, ResumeWithAnotherWorldSizeUsesNoSampleTwice) {
  for (int new_world : {1, 3}) {
    SCOPED_TRACE("2 ranks -> " + std::to_string(new_world));
    Scheduler s = scheduler();
    std::multiset<std::string> used;  // epoch 0
    std::vector<std::string> cursors;
    {
      Job first(s, 2, small_batches(), "first");
      for (int i = 0; i < 4; ++i) {
        const StepRecord rec = first.step();
        ASSERT_EQ(rec.epoch, 0);
        for (const auto& ks : rec.keys) used.insert(ks.begin(), ks.end());
      }
      cursors = checkpoint(s, first, 4);
      // The reported progress accounts for every used sample.
      int64_t consumed = 0;
      for (const auto& c : cursors) consumed += LeaseCursor::from_string(c).consumed;
      EXPECT_EQ(consumed, static_cast<int64_t>(used.size()));
      first.step();  // lost
    }
    Job second(s, new_world, small_batches(), "second");
    for (auto& src : second.sources) src->start_epoch(0);  // Trainer::load_checkpoint with another world size
    int64_t steps_in_epoch0 = 0;
    for (;;) {
      const StepRecord rec = second.step();
      if (rec.epoch != 0) break;
      ++steps_in_epoch0;
      for (const auto& ks : rec.keys) used.insert(ks.begin(), ks.end());
    }
    EXPECT_GT(steps_in_epoch0, 0);
    EXPECT_EQ(std::set<std::string>(used.begin(), used.end()).size(), used.size()) << "a sample was used twice";
    // Every sample of epoch 0 is either used or counted unused by the coordinator.
    EXPECT_EQ(static_cast<int64_t>(used.size()) + s.status(1000).unused_samples, 44);
    EXPECT_LT(s.status(1000).unused_samples, 44 / 2);
  }
}

TEST_F(LeaseSourceTest, ProgressAndCursorRoundTrip) {
  LeaseCursor c;
  c.epoch = 3;
  c.items = {{4, 0, 6}, {1, 2, 6}, {7, 0, 2}};
  c.consumed = 8;  // item 0 used up, item 1 used 2 of 4
  c.delivered = 6;
  c.batches = 2;
  const LeaseProgress p = c.progress();
  EXPECT_EQ(p.epoch, 3);
  EXPECT_EQ(p.next_position, 2);
  ASSERT_EQ(p.partial.size(), 1u);
  EXPECT_EQ(p.partial[0].position, 1);
  EXPECT_EQ(p.partial[0].consumed, 2);
  EXPECT_EQ(c.used_of(0), 6);
  EXPECT_EQ(c.used_of(1), 2);
  EXPECT_EQ(c.used_of(2), 0);
  c.consumed = 10;  // exactly at the end of item 1: nothing partial
  EXPECT_EQ(c.progress().next_position, 2);
  EXPECT_TRUE(c.progress().partial.empty());
  c.consumed = 0;
  EXPECT_EQ(c.progress().next_position, 0);
  c.consumed = 8;

  const LeaseCursor back = LeaseCursor::from_string(c.to_string());
  EXPECT_EQ(back.to_string(), c.to_string());
  EXPECT_TRUE(LeaseCursor::is_lease_cursor(c.to_string()));
  EXPECT_FALSE(LeaseCursor::is_lease_cursor("{\"kind\":\"shards\",\"epoch\":0}"));
  EXPECT_THROW(LeaseCursor::from_string("{\"kind\":\"shards\"}"), std::invalid_argument);
  EXPECT_THROW(LeaseCursor::from_string("not json"), std::invalid_argument);
  c.consumed = 13;  // past the items (12 samples)
  EXPECT_THROW(LeaseCursor::from_string(c.to_string()), std::invalid_argument);

  // A LeaseSource refuses a cursor of the static split (no coordinator) with a clear error.
  Scheduler s = scheduler();
  Job job(s, 1, options(), "x");
  try {
    job.sources[0]->restore("{\"kind\":\"shards\",\"epoch\":0,\"pipeline\":\"\"}");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("without --coordinator"), std::string::npos) << e.what();
  }
}

TEST_F(LeaseSourceTest, LeaseFromAnotherIndexIsRefused) {
  // A coordinator whose index differs (renamed shard) is detected on acquisition.
  coordinator::SchedulerOptions so;
  so.job_id = "job";
  data::ShardIndex idx = data::load_index((dir_ / "shards" / "index.json").string());
  for (auto& sh : idx.shards) sh.name = "other-" + sh.name;
  Scheduler s(so, idx);
  Job job(s, 1, options(), "x");
  try {
    job.sources[0]->next();
    FAIL() << "expected DataError";
  } catch (const data::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("same shard index"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cnx::worker
