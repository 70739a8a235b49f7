// Crash under load: a few thousand simulated workers drive a real
// cnx-coordinator process (heartbeats, shard leases, checkpoint parts); it
// is killed with SIGKILL at a random moment and restarted. Every write the
// coordinator acknowledged is kept in a client-side ledger; afterwards the
// coordinator's state must hold every acknowledged write (none lost) and
// nothing the clients did not ask for (none invented), and the clients
// re-register and carry on. Prints the recovery time (restart to the first
// successful call).
//
//   env CNX_CRASH_WORKERS (default 2000), CNX_CRASH_SEED (default: random).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "tests/coordinator/loopback_util.h"

namespace cnx::coordinator {
namespace {

namespace pb = cnx::v1;
using Clock = std::chrono::steady_clock;
using test::client_options;
using test::JobDir;
using test::Process;

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : def;
}

// What one simulated rank holds, as acknowledged by the coordinator.
struct RankLedger {
  int64_t epoch = 0;
  int64_t next = 0;                          // leases acknowledged in `epoch`
  bool exhausted = false;                    // AcquireShard said end of epoch
  bool open = false;                         // holds the lease at next - 1, not yet done
  pb::ShardLease lease;                      // the open lease as granted
  int64_t done = 0;                          // ShardDone calls acknowledged
  int64_t reported_plan = 0;                 // the last plan it reported a part for
  std::map<int64_t, pb::RankProgress> sent;  // plan -> progress reported

  pb::RankProgress progress() const {
    pb::RankProgress p;
    p.set_epoch(epoch);
    p.set_next_position(next);
    if (open) {
      auto* ip = p.add_partial();
      ip->set_position(next - 1);
      ip->set_consumed(0);
      ip->set_epoch(epoch);
    }
    return p;
  }
};

struct Ledger {
  std::mutex mu;
  std::map<int64_t, int64_t> committed;  // plan id -> step, acknowledged as committed
};

// One action for rank r: heartbeat (and its checkpoint part when asked),
// then one lease step (done if holding one, else acquire).
void act(CoordinatorClient& c, RankLedger& l, Ledger& ledger, int64_t step) {
  pb::HeartbeatRequest hb;
  hb.set_step(step);
  hb.set_epoch(l.epoch);
  const pb::HeartbeatReply rep = c.heartbeat(hb);
  ASSERT_TRUE(rep.action() == pb::ACTION_CONTINUE || rep.action() == pb::ACTION_CHECKPOINT)
      << "rank " << c.worker().rank() << ": action " << rep.action() << " (" << rep.reason() << ")";
  if (rep.action() == pb::ACTION_CHECKPOINT && rep.checkpoint().id() != l.reported_plan) {
    pb::CheckpointPartRequest part;
    part.set_plan_id(rep.checkpoint().id());
    part.set_step(rep.checkpoint().step());
    auto* f = part.add_files();
    f->set_path("rank-" + std::to_string(c.worker().rank()) + ".bin");
    f->set_sha256(std::string(64, 'c'));
    f->set_bytes(step);
    *part.mutable_progress() = l.progress();
    part.set_data_cursor("cursor-" + std::to_string(c.worker().rank()) + "-" + std::to_string(step));
    const bool committed = c.report_checkpoint_part(part).committed();
    l.reported_plan = rep.checkpoint().id();
    l.sent[l.reported_plan] = part.progress();
    if (committed) {
      std::lock_guard<std::mutex> lock(ledger.mu);
      ledger.committed[rep.checkpoint().id()] = rep.checkpoint().step();
    }
  }
  if (l.open) {
    c.report_shard_done(l.epoch, l.next - 1, l.lease.end() - l.lease.start());
    l.open = false;
    ++l.done;
    return;
  }
  const int64_t e = l.exhausted ? l.epoch + 1 : l.epoch;
  const int64_t pos = l.exhausted ? 0 : l.next;
  const pb::AcquireShardReply a = c.acquire_shard(e, pos);
  if (a.end_of_epoch()) {
    ASSERT_EQ(e, l.epoch) << "a new epoch without items";
    l.exhausted = true;
    return;
  }
  ASSERT_EQ(a.lease().position(), pos);
  if (e != l.epoch) {
    l.epoch = e;
    l.next = 0;
    l.exhausted = false;
  }
  ++l.next;
  l.open = true;
  l.lease = a.lease();
}

TEST(CrashUnderLoad, Kill9KeepsEveryAcknowledgedWriteAndNothingElse) {
  const int workers = env_int("CNX_CRASH_WORKERS", 2000);
  const unsigned seed =
      static_cast<unsigned>(env_int("CNX_CRASH_SEED", static_cast<int>(std::random_device{}() % 100000)));
  std::printf("workers %d, seed %u (CNX_CRASH_SEED=%u reproduces the kill moment)\n", workers, seed, seed);
  std::fflush(stdout);  // before fork(): the child must not inherit the buffer
  std::mt19937 rng(seed);
  JobDir job("crash", 3 * workers);  // 3 leases per rank per epoch
  Process coord(job);
  coord.start();

  const int threads = 32;
  std::vector<std::unique_ptr<CoordinatorClient>> clients(workers);
  std::vector<RankLedger> ledgers(workers);
  Ledger ledger;
  {
    std::vector<std::thread> reg;
    for (int t = 0; t < threads; ++t)
      reg.emplace_back([&, t] {
        for (int w = t; w < workers; w += threads) {
          clients[w] = std::make_unique<CoordinatorClient>(client_options(job.target()));
          clients[w]->register_worker("itest", w, workers, "sim-" + std::to_string(w), "launch-1");
        }
      });
    for (auto& th : reg) th.join();
  }
  CoordinatorClient ctl(client_options(job.target()));
  ASSERT_EQ(ctl.status("itest").state(), pb::JOB_RUNNING);

  // Load: each thread drives its ranks round by round (about one round per
  // second, each rank one heartbeat and one lease call per round).
  std::atomic<bool> stop{false};
  std::atomic<int64_t> rounds{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int64_t step = 1; !stop.load(); ++step) {
        const auto next_round = Clock::now() + std::chrono::milliseconds(1000);
        for (int w = t; w < workers && !stop.load(); w += threads) {
          act(*clients[w], ledgers[w], ledger, step);
          if (::testing::Test::HasFatalFailure()) {
            stop = true;
            return;
          }
        }
        ++rounds;
        std::this_thread::sleep_until(next_round);
      }
    });
  // A checkpoint before the kill, one after; the kill lands at a random moment.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ctl.request_checkpoint("itest");
  const double kill_after_s = std::uniform_real_distribution<double>(1.0, 4.0)(rng);
  std::this_thread::sleep_for(std::chrono::duration<double>(kill_after_s));
  coord.kill9();
  const auto restarted = Clock::now();
  coord.start();
  ClientOptions probe_options = client_options(job.target());
  probe_options.deadline_s = 0.2;
  probe_options.backoff_max_s = 0.05;
  CoordinatorClient probe(probe_options);
  probe.status("itest");
  const double recovery_s = std::chrono::duration<double>(Clock::now() - restarted).count();
  // Carry on until a checkpoint requested after the restart (or the one
  // still pending from before the kill) is committed; bounded.
  const int64_t plan = ctl.request_checkpoint("itest").plan().id();
  const auto give_up = Clock::now() + std::chrono::seconds(90);
  auto committed = [&] {
    std::lock_guard<std::mutex> lock(ledger.mu);
    return !ledger.committed.empty() && ledger.committed.rbegin()->first >= plan;
  };
  while (!committed() && Clock::now() < give_up && !stop.load())
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop = true;
  for (auto& th : pool) th.join();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());

  // Every rank re-registers with its launch: same attempt, its own epoch.
  for (int w = 0; w < workers; ++w) {
    const pb::RegisterReply r =
        clients[w]->register_worker("itest", w, workers, "sim-" + std::to_string(w), "launch-1");
    ASSERT_EQ(r.attempt(), 1);
    ASSERT_EQ(r.start_epoch(), ledgers[w].epoch) << "rank " << w;
  }
  // None lost, none invented.
  const pb::StatusReply st = ctl.status("itest");
  ASSERT_EQ(st.state(), pb::JOB_RUNNING) << st.reason();
  ASSERT_EQ(st.attempt(), 1);
  int64_t done = 0, open = 0;
  for (const auto& l : ledgers) {
    done += l.done;
    open += l.open;
  }
  EXPECT_EQ(st.shards_done(), done) << "acknowledged ShardDone calls vs the coordinator's count";
  EXPECT_EQ(st.shards_leased(), open) << "leases held per the ledger vs the coordinator";
  for (int w = 0; w < workers; ++w) {
    const RankLedger& l = ledgers[w];
    ASSERT_EQ(st.ranks(w).leases_held(), l.open ? 1 : 0) << "rank " << w;
    if (l.open) {
      // The acknowledged lease is still held, unchanged.
      const pb::ShardLease again = clients[w]->acquire_shard(l.epoch, l.next - 1).lease();
      EXPECT_EQ(again.shard_id(), l.lease.shard_id()) << "rank " << w;
      EXPECT_EQ(again.start(), l.lease.start()) << "rank " << w;
      EXPECT_EQ(again.end(), l.lease.end()) << "rank " << w;
    }
    // The coordinator's next position is the ledger's: asking one beyond is refused, naming it.
    try {
      clients[w]->acquire_shard(l.epoch, l.next + 1);
      ADD_FAILURE() << "rank " << w << ": position " << l.next + 1 << " granted out of order";
    } catch (const RpcError& e) {
      const std::string want = "next position in epoch " + std::to_string(l.epoch) + " is " + std::to_string(l.next);
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << "rank " << w << ": " << e.what();
    }
  }
  // Checkpoints: the newest acknowledged commit is the latest, with the
  // progress every rank reported for it.
  int reported = 0;
  for (const auto& l : ledgers) reported += !l.sent.empty();
  ASSERT_FALSE(ledger.committed.empty()) << "no checkpoint committed during the run (pending: "
                                         << st.checkpoint_pending() << " plan " << st.pending().id() << ", " << reported
                                         << " ranks reported a part)";
  const auto [last_id, last_step] = *ledger.committed.rbegin();
  const pb::LatestCheckpointReply latest = ctl.latest_checkpoint("itest");
  ASSERT_TRUE(latest.found());
  EXPECT_EQ(latest.checkpoint().id(), last_id);
  EXPECT_EQ(latest.checkpoint().step(), last_step);
  ASSERT_EQ(latest.checkpoint().parts_size(), workers);
  for (const auto& p : latest.checkpoint().parts()) {
    const auto& sent = ledgers[p.rank()].sent;
    auto it = sent.find(last_id);
    ASSERT_NE(it, sent.end()) << "rank " << p.rank() << " has a part it never reported";
    EXPECT_EQ(p.progress().SerializeAsString(), it->second.SerializeAsString()) << "rank " << p.rank();
  }
  // Retention keeps the newest 2 (checkpoint.keep in the test's config).
  EXPECT_EQ(st.checkpoints_committed(), std::min<int64_t>(2, static_cast<int64_t>(ledger.committed.size())));
  std::printf(
      "killed %.2f s into the load; recovery (restart to first successful call) %.3f s; %lld rounds, "
      "%lld leases done, %zu checkpoints committed\n",
      kill_after_s, recovery_s, static_cast<long long>(rounds.load()), static_cast<long long>(done),
      ledger.committed.size());
}

}  // namespace
}  // namespace cnx::coordinator
