// Randomized test of the data-assignment guarantees (scheduler.h): thousands
// of seeded runs of simulated workers with checkpoints, lost ranks, new
// launches with the same or another world size, and coordinator restarts
// from the durable rows. Checked in every run:
//   * each sample of each epoch is used exactly once by the work that
//     survives (committed work + the final attempt): at-most-once and
//     nothing lost, since the simulated workers never drop samples;
//   * after a failure with the same world size, every rank replays exactly
//     the samples it had used since the last commit, in the same order;
//   * calls of a fenced-off attempt are refused as stale;
//   * unused_samples stays 0 (no rank left samples behind).
// The same runs go through the host speaker protocol (register_host,
// host_heartbeat, acquire_many, shards_done, report_parts) with the ranks
// grouped into hosts of 1-3 at each launch: the guarantees are the same.
// To reproduce a failing run: SIM_SEED=<seed> SIM_DEBUG=1 prints its events
// and every sample used.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "coordinator/scheduler.h"
#include "tests/coordinator/sim_util.h"

namespace cnx::coordinator {
namespace {

using Sample = std::tuple<int64_t, int64_t, int64_t>;  // epoch, shard, sample index

struct Held {
  int64_t epoch, position;
  WorkItem item;
  int64_t consumed = 0;
};

struct SimRank {
  int64_t epoch = 0;
  int64_t next_pos = 0;
  std::vector<Held> held;
  bool finished = false;
  std::vector<Sample> since_commit;
  std::vector<Sample> replay;  // expected prefix after a same-world resume
  size_t replay_checked = 0;
};

class Sim {
 public:
  Sim(uint64_t seed, bool hosts) : rng_(seed), hosts_(hosts) {
    std::vector<int64_t> samples(pick(1, 10));
    for (auto& n : samples) n = pick(0, 12);
    index_ = test::make_index(samples);
    opts_.job_id = "job";
    opts_.seed = pick(0, 1000);
    opts_.heartbeat_timeout_s = 1e5;
    opts_.stall_s = 1e6;
    opts_.lease_s = 1e6;
    opts_.keep = pick(1, 3);
    epochs_ = pick(1, 3);
    batch_ = pick(1, 4);
    prefetch_ = pick(0, 1) == 1;
    sched_ = std::make_unique<Scheduler>(opts_, index_);
  }

  void run() {
    launch(static_cast<int>(pick(1, 4)));
    for (int iter = 0; iter < 400 && !all_finished(); ++iter) {
      now_ += 1;
      int64_t dice = pick(0, 99);
      if (dice < 84)
        step();
      else if (dice < 91)
        checkpoint();
      else if (dice < 95)
        failure();
      else
        restart();
      if (::testing::Test::HasFatalFailure()) return;
      sched_->tick(now_);
      ASSERT_EQ(sched_->state(), JobState::kRunning) << sched_->status(now_).reason;
      flush();
    }
    while (!all_finished()) {
      step();
      if (::testing::Test::HasFatalFailure()) return;
      flush();
    }
    verify();
  }

 private:
  int64_t pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }
  WorkerRef ref(int r) const { return {"job", sched_->attempt(), r}; }
  HostRef href(int r) const { return {"job", sched_->attempt(), "host-" + std::to_string(host_of_[r])}; }
  // Per-rank or host calls, as the run's protocol says.
  AcquireResult do_acquire(int r, int64_t epoch, int64_t position) {
    if (!hosts_) return sched_->acquire(ref(r), epoch, position, now_);
    auto v = sched_->acquire_many(href(r), {{r, epoch, position}}, now_);
    EXPECT_EQ(v.size(), 1u);
    return v.at(0);
  }
  void do_done(int r, int64_t epoch, int64_t position, int64_t consumed) {
    if (!hosts_)
      sched_->shard_done(ref(r), epoch, position, consumed, now_);
    else
      sched_->shards_done(href(r), {{r, epoch, position, consumed}}, now_);
  }
  HeartbeatResult do_beat(int r, const HeartbeatInfo& hb) {
    if (!hosts_) return sched_->heartbeat(ref(r), hb, now_);
    return sched_->host_heartbeat(href(r), {{r, hb}}, now_);
  }
  bool all_finished() const {
    return std::all_of(ranks_.begin(), ranks_.end(), [](const SimRank& r) { return r.finished; });
  }
  void flush() {
    for (auto& [k, v] : sched_->take_changes()) {
      if (v)
        rows_[k] = *v;
      else
        rows_.erase(k);
    }
    sched_->take_deletions();
    for (auto& e : sched_->take_events())
      if (std::getenv("SIM_DEBUG")) std::printf("%s\n", e.c_str());
  }

  void launch(int world) {
    const std::string id = "L" + std::to_string(++launches_);
    std::vector<int> order(world);
    for (int r = 0; r < world; ++r) order[r] = r;
    std::shuffle(order.begin(), order.end(), rng_);
    std::vector<SimRank> fresh(world);
    if (!hosts_) {
      for (int r : order) {
        auto res = sched_->register_worker("job", r, world, "h", id, now_);
        fresh[r].epoch = res.start_epoch;
      }
    } else {
      // Hosts of 1-3 ranks (not necessarily consecutive), registering in random order.
      host_of_.assign(world, 0);
      std::vector<std::vector<int>> hosts;
      for (size_t i = 0; i < order.size();) {
        const size_t n = std::min(order.size() - i, static_cast<size_t>(pick(1, 3)));
        hosts.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(i),
                           order.begin() + static_cast<std::ptrdiff_t>(i + n));
        i += n;
      }
      std::shuffle(hosts.begin(), hosts.end(), rng_);
      for (size_t h = 0; h < hosts.size(); ++h) {
        for (int r : hosts[h]) host_of_[r] = static_cast<int>(h);
        auto res = sched_->register_host("job", hosts[h], world, "host-" + std::to_string(h), id, now_);
        for (size_t i = 0; i < hosts[h].size(); ++i) fresh[hosts[h][i]].epoch = res.start_epochs[i];
      }
      hosts_list_ = std::move(hosts);
    }
    ASSERT_EQ(sched_->state(), JobState::kRunning);
    if (static_cast<int>(ranks_.size()) == world)
      for (int r = 0; r < world; ++r) fresh[r].replay = ranks_[r].since_commit;
    ranks_ = std::move(fresh);
    attempt_used_.clear();
  }

  // Take one lease for rank r; false when the rank finished every epoch.
  bool acquire(int r) {
    SimRank& s = ranks_[r];
    for (;;) {
      AcquireResult a = do_acquire(r, s.epoch, s.next_pos);
      if (pick(0, 9) == 0) {  // a retry after a "lost reply" returns the same answer
        AcquireResult b = do_acquire(r, s.epoch, s.next_pos);
        EXPECT_EQ(a.end_of_epoch, b.end_of_epoch);
        EXPECT_EQ(a.lease.item, b.lease.item);
      }
      if (!a.end_of_epoch) {
        EXPECT_EQ(a.lease.position, s.next_pos);
        s.held.push_back({s.epoch, s.next_pos++, a.lease.item});
        return true;
      }
      if (s.epoch + 1 >= epochs_) return false;
      ++s.epoch;
      s.next_pos = 0;
    }
  }

  void step() {
    ++global_step_;
    for (int r = 0; r < static_cast<int>(ranks_.size()); ++r) {
      SimRank& s = ranks_[r];
      for (int b = 0; b < batch_ && !s.finished; ++b) {
        while (!s.held.empty() && s.held.front().consumed == s.held.front().item.size()) {
          do_done(r, s.held.front().epoch, s.held.front().position, s.held.front().consumed);
          s.held.erase(s.held.begin());
        }
        if (s.held.empty() && !acquire(r)) {
          s.finished = true;
          break;
        }
        if (s.held.front().consumed == s.held.front().item.size()) {
          --b;
          continue;
        }
        Held& h = s.held.front();
        Sample smp{h.epoch, h.item.shard, h.item.start + h.consumed++};
        if (std::getenv("SIM_DEBUG"))
          std::printf("rank %d uses e%lld s%lld #%lld (pos %lld)\n", r, (long long)std::get<0>(smp),
                      (long long)std::get<1>(smp), (long long)std::get<2>(smp), (long long)h.position);
        attempt_used_[smp]++;
        s.since_commit.push_back(smp);
        if (s.replay_checked < s.replay.size()) {
          ASSERT_EQ(smp, s.replay[s.replay_checked]) << "rank " << r << " did not replay sample " << s.replay_checked;
          ++s.replay_checked;
        }
      }
      if (prefetch_ && !s.finished && s.held.size() == 1) acquire(r);
      HeartbeatInfo hb;
      hb.step = global_step_;
      do_beat(r, hb);
    }
  }

  void checkpoint() {
    CheckpointPlan p = sched_->request_checkpoint("job", now_);
    std::vector<int> order(ranks_.size());
    for (size_t r = 0; r < order.size(); ++r) order[r] = static_cast<int>(r);
    std::shuffle(order.begin(), order.end(), rng_);
    bool committed = false;
    auto part_of = [&](int r) {
      RankPart part;
      part.rank = r;
      part.progress.epoch = ranks_[r].epoch;
      part.progress.next_position = ranks_[r].next_pos;
      for (const Held& h : ranks_[r].held)
        if (h.consumed < h.item.size()) part.progress.partial.push_back({h.position, h.consumed, h.epoch});
      return part;
    };
    const int64_t step = std::max(p.step, global_step_);
    if (!hosts_) {
      for (int r : order) committed = sched_->report_part(ref(r), p.id, step, part_of(r), now_);
    } else {
      std::vector<size_t> hosts(hosts_list_.size());
      for (size_t h = 0; h < hosts.size(); ++h) hosts[h] = h;
      std::shuffle(hosts.begin(), hosts.end(), rng_);
      for (size_t h : hosts) {
        std::vector<RankPart> parts;
        for (int r : hosts_list_[h]) parts.push_back(part_of(r));
        const int r0 = hosts_list_[h].front();
        committed = sched_->report_parts(href(r0), p.id, step, parts, now_);
        if (pick(0, 9) == 0) {  // a retry after a lost reply is accepted
          EXPECT_EQ(sched_->report_parts(href(r0), p.id, step, parts, now_), committed);
        }
      }
    }
    ASSERT_TRUE(committed);
    for (auto& [smp, n] : attempt_used_) committed_used_[smp] += n;
    attempt_used_.clear();
    for (auto& s : ranks_) s.since_commit.clear();
  }

  void failure() {
    const WorkerRef old = ref(0);
    const HostRef old_host = hosts_ ? href(0) : HostRef{};
    if (pick(0, 1) == 0) {
      // A rank goes silent: the heartbeat timeout fails the attempt.
      now_ += opts_.heartbeat_timeout_s + 1;
      for (size_t r = 1; r < ranks_.size(); ++r) do_beat(static_cast<int>(r), {});
      sched_->tick(now_);
      ASSERT_EQ(sched_->state(), JobState::kRestarting);
      EXPECT_EQ(do_beat(0, {}).action, Action::kAbort);
    }
    const int world = pick(0, 1) == 0 ? static_cast<int>(ranks_.size()) : static_cast<int>(pick(1, 4));
    launch(world);
    if (::testing::Test::HasFatalFailure()) return;
    try {
      if (hosts_)
        sched_->acquire_many(old_host, {{0, 0, 0}}, now_);
      else
        sched_->acquire(old, 0, 0, now_);
      ADD_FAILURE() << "a call of the fenced attempt was accepted";
    } catch (const SchedulerError& e) {
      EXPECT_EQ(e.code(), ErrorCode::kStale);
    }
  }

  void restart() {
    flush();
    sched_ = std::make_unique<Scheduler>(Scheduler::restore(opts_, index_, rows_, now_));
  }

  void verify() {
    std::map<Sample, int> used = committed_used_;
    for (auto& [smp, n] : attempt_used_) used[smp] += n;
    for (int64_t e = 0; e < epochs_; ++e)
      for (size_t sh = 0; sh < index_.shards.size(); ++sh)
        for (int64_t i = 0; i < index_.shards[sh].samples; ++i) {
          auto it = used.find({e, static_cast<int64_t>(sh), i});
          const int n = it == used.end() ? 0 : it->second;
          ASSERT_EQ(n, 1) << "epoch " << e << " shard " << sh << " sample " << i << " used " << n << " times";
        }
    for (auto& [smp, n] : used) ASSERT_LT(std::get<0>(smp), epochs_);
    EXPECT_EQ(sched_->status(now_).unused_samples, 0);
    for (size_t r = 0; r < ranks_.size(); ++r)
      EXPECT_EQ(ranks_[r].replay_checked, ranks_[r].replay.size()) << "rank " << r << " replay incomplete";
  }

  std::mt19937_64 rng_;
  bool hosts_ = false;
  std::vector<int> host_of_;                  // rank -> host (host protocol)
  std::vector<std::vector<int>> hosts_list_;  // host -> its ranks
  ShardIndex index_;
  SchedulerOptions opts_;
  std::unique_ptr<Scheduler> sched_;
  std::map<std::string, std::string> rows_;
  std::vector<SimRank> ranks_;
  std::map<Sample, int> committed_used_, attempt_used_;
  int64_t epochs_ = 1, batch_ = 1, global_step_ = 0;
  bool prefetch_ = false;
  int launches_ = 0;
  double now_ = 1000;
};

void run_seeds(int runs, bool hosts) {
  const int only = std::getenv("SIM_SEED") ? std::atoi(std::getenv("SIM_SEED")) : -1;
  for (int seed = 0; seed < runs; ++seed) {
    if (only >= 0 && seed != only) continue;
    SCOPED_TRACE("seed " + std::to_string(seed));
    Sim sim(static_cast<uint64_t>(seed), hosts);
    sim.run();
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(SchedulerRandom, AtMostOnceAndReplayAcrossFailuresAndRestarts) {
  run_seeds(3000, false);
}

// The same guarantees through the host speaker protocol.
TEST(SchedulerRandom, HostSpeakersKeepTheGuarantees) {
  run_seeds(1500, true);
}

}  // namespace
}  // namespace cnx::coordinator
