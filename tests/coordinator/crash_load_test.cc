// Crash under load: a few thousand simulated workers drive a real
// cnx-coordinator process (heartbeats, shard leases, checkpoint parts); it
// is killed with SIGKILL at a random moment and restarted. Every write the
// coordinator acknowledged is kept in a client-side ledger; afterwards the
// coordinator's state must hold every acknowledged write (none lost) and
// nothing the clients did not ask for (none invented), and the clients
// re-register and carry on. Prints the recovery time (restart to the first
// successful call). The second test does the same with host speakers
// (docs/protocols.md, "Host speaker"): H hosts of 8 ranks, one voice each.
//
//   env CNX_CRASH_WORKERS (default 2000), CNX_CRASH_HOSTS (default 250, x 8
//   ranks), CNX_CRASH_SEED (default: random).
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

// One round of host speaker `c` for its ranks: a heartbeat for all of them
// (and their parts, in one call, when asked), then one AcquireShards that
// reports the open leases done and asks the next item of the other ranks.
void act_host(CoordinatorClient& c, const std::vector<int>& ranks, std::vector<RankLedger>& ledgers, Ledger& ledger,
              int64_t step) {
  pb::HostHeartbeatRequest hb;
  for (int r : ranks) {
    auto* b = hb.add_ranks();
    b->set_rank(r);
    b->set_step(step);
    b->set_epoch(ledgers[r].epoch);
  }
  const pb::HeartbeatReply rep = c.host_heartbeat(hb);
  ASSERT_TRUE(rep.action() == pb::ACTION_CONTINUE || rep.action() == pb::ACTION_CHECKPOINT)
      << "host " << c.host().host() << ": action " << rep.action() << " (" << rep.reason() << ")";
  if (rep.action() == pb::ACTION_CHECKPOINT && rep.checkpoint().id() != ledgers[ranks[0]].reported_plan) {
    pb::CheckpointPartsRequest parts;
    parts.set_plan_id(rep.checkpoint().id());
    parts.set_step(rep.checkpoint().step());
    for (int r : ranks) {
      auto* p = parts.add_parts();
      p->set_rank(r);
      auto* f = p->add_files();
      f->set_path("rank-" + std::to_string(r) + ".bin");
      f->set_sha256(std::string(64, 'c'));
      f->set_bytes(step);
      *p->mutable_progress() = ledgers[r].progress();
      p->set_data_cursor("cursor-" + std::to_string(r) + "-" + std::to_string(step));
    }
    const bool committed = c.report_checkpoint_parts(parts).committed();
    for (const auto& p : parts.parts()) {
      ledgers[p.rank()].reported_plan = rep.checkpoint().id();
      ledgers[p.rank()].sent[rep.checkpoint().id()] = p.progress();
    }
    if (committed) {
      std::lock_guard<std::mutex> lock(ledger.mu);
      ledger.committed[rep.checkpoint().id()] = rep.checkpoint().step();
    }
  }
  pb::AcquireShardsRequest req;
  std::vector<int> asking;
  for (int r : ranks) {
    const RankLedger& l = ledgers[r];
    if (l.open) {
      auto* d = req.add_done();
      d->set_rank(r);
      d->set_epoch(l.epoch);
      d->set_position(l.next - 1);
      d->set_consumed(l.lease.end() - l.lease.start());
      continue;
    }
    auto* a = req.add_asks();
    a->set_rank(r);
    a->set_epoch(l.exhausted ? l.epoch + 1 : l.epoch);
    a->set_position(l.exhausted ? 0 : l.next);
    asking.push_back(r);
  }
  const pb::AcquireShardsReply got = c.acquire_shards(req);
  for (const auto& d : req.done()) {
    ledgers[d.rank()].open = false;
    ++ledgers[d.rank()].done;
  }
  ASSERT_EQ(got.grants_size(), static_cast<int>(asking.size()));
  for (size_t i = 0; i < asking.size(); ++i) {
    RankLedger& l = ledgers[asking[i]];
    const pb::AcquireShardReply& a = got.grants(static_cast<int>(i));
    const pb::ShardAsk& ask = req.asks(static_cast<int>(i));
    if (a.end_of_epoch()) {
      ASSERT_EQ(ask.epoch(), l.epoch) << "a new epoch without items";
      l.exhausted = true;
      continue;
    }
    ASSERT_EQ(a.lease().position(), ask.position());
    if (ask.epoch() != l.epoch) {
      l.epoch = ask.epoch();
      l.next = 0;
      l.exhausted = false;
    }
    ++l.next;
    l.open = true;
    l.lease = a.lease();
  }
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
  EXPECT_EQ(st.checkpoints_retained(), std::min<int64_t>(2, static_cast<int64_t>(ledger.committed.size())));
  EXPECT_GE(st.checkpoints_committed(), static_cast<int64_t>(ledger.committed.size()));  // all, not just the kept
  std::printf(
      "killed %.2f s into the load; recovery (restart to first successful call) %.3f s; %lld rounds, "
      "%lld leases done, %zu checkpoints committed\n",
      kill_after_s, recovery_s, static_cast<long long>(rounds.load()), static_cast<long long>(done),
      ledger.committed.size());
}

// The same with host speakers: H hosts x 8 ranks, one connection per host.
TEST(CrashUnderLoad, HostSpeakersKeepEveryAcknowledgedWriteAndNothingElse) {
  const int hosts = env_int("CNX_CRASH_HOSTS", 250), per_host = 8, workers = hosts * per_host;
  const unsigned seed =
      static_cast<unsigned>(env_int("CNX_CRASH_SEED", static_cast<int>(std::random_device{}() % 100000)));
  std::printf("hosts %d x %d ranks, seed %u (CNX_CRASH_SEED=%u reproduces the kill moment)\n", hosts, per_host, seed,
              seed);
  std::fflush(stdout);
  std::mt19937 rng(seed);
  JobDir job("crash_hosts", 3 * workers, ", max_world_size: 65536");
  Process coord(job);
  coord.start();

  const int threads = 32;
  std::vector<std::unique_ptr<CoordinatorClient>> clients(hosts);
  std::vector<std::vector<int>> ranks(hosts);
  std::vector<RankLedger> ledgers(workers);
  Ledger ledger;
  auto register_host = [&](int h) {
    return clients[h]->register_host("itest", ranks[h], workers, "node-" + std::to_string(h), "launch-1");
  };
  const auto launched = Clock::now();
  {
    std::vector<std::thread> reg;
    for (int t = 0; t < threads; ++t)
      reg.emplace_back([&, t] {
        for (int h = t; h < hosts; h += threads) {
          for (int r = h * per_host; r < (h + 1) * per_host; ++r) ranks[h].push_back(r);
          clients[h] = std::make_unique<CoordinatorClient>(client_options(job.target()));
          register_host(h);
        }
      });
    for (auto& th : reg) th.join();
  }
  const double register_s = std::chrono::duration<double>(Clock::now() - launched).count();
  CoordinatorClient ctl(client_options(job.target()));
  ASSERT_EQ(ctl.status("itest").state(), pb::JOB_RUNNING);

  std::atomic<bool> stop{false};
  std::atomic<int64_t> rounds{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int64_t step = 1; !stop.load(); ++step) {
        const auto next_round = Clock::now() + std::chrono::milliseconds(1000);
        for (int h = t; h < hosts && !stop.load(); h += threads) {
          act_host(*clients[h], ranks[h], ledgers, ledger, step);
          if (::testing::Test::HasFatalFailure()) {
            stop = true;
            return;
          }
        }
        ++rounds;
        std::this_thread::sleep_until(next_round);
      }
    });
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

  // Every host re-registers with its launch: same attempt, each rank its own epoch.
  const auto reregister = Clock::now();
  for (int h = 0; h < hosts; ++h) {
    const pb::RegisterHostReply r = register_host(h);
    ASSERT_EQ(r.attempt(), 1);
    ASSERT_EQ(r.ranks_size(), per_host);
    for (const auto& x : r.ranks()) ASSERT_EQ(x.start_epoch(), ledgers[x.rank()].epoch) << "rank " << x.rank();
  }
  const double reregister_s = std::chrono::duration<double>(Clock::now() - reregister).count();
  const pb::StatusReply st = ctl.status("itest");
  ASSERT_EQ(st.state(), pb::JOB_RUNNING) << st.reason();
  ASSERT_EQ(st.attempt(), 1);
  int64_t done = 0, open = 0;
  for (const auto& l : ledgers) {
    done += l.done;
    open += l.open;
  }
  EXPECT_EQ(st.shards_done(), done) << "acknowledged done items vs the coordinator's count";
  EXPECT_EQ(st.shards_leased(), open) << "leases held per the ledger vs the coordinator";
  for (int h = 0; h < hosts; ++h) {
    pb::AcquireShardsRequest again;
    for (int r : ranks[h]) {
      const RankLedger& l = ledgers[r];
      ASSERT_EQ(st.ranks(r).leases_held(), l.open ? 1 : 0) << "rank " << r;
      ASSERT_EQ(st.ranks(r).host(), "node-" + std::to_string(h)) << "rank " << r;
      if (!l.open) continue;
      auto* a = again.add_asks();
      a->set_rank(r);
      a->set_epoch(l.epoch);
      a->set_position(l.next - 1);
    }
    if (again.asks_size() > 0) {
      // The acknowledged leases are still held, unchanged.
      const pb::AcquireShardsReply got = clients[h]->acquire_shards(again);
      for (int i = 0; i < again.asks_size(); ++i) {
        const RankLedger& l = ledgers[again.asks(i).rank()];
        EXPECT_EQ(got.grants(i).lease().shard_id(), l.lease.shard_id()) << "rank " << again.asks(i).rank();
        EXPECT_EQ(got.grants(i).lease().start(), l.lease.start());
        EXPECT_EQ(got.grants(i).lease().end(), l.lease.end());
      }
    }
    // The coordinator's next position is the ledger's: one beyond is refused, naming it.
    const int r = ranks[h][0];
    pb::AcquireShardsRequest beyond;
    auto* a = beyond.add_asks();
    a->set_rank(r);
    a->set_epoch(ledgers[r].epoch);
    a->set_position(ledgers[r].next + 1);
    try {
      clients[h]->acquire_shards(beyond);
      ADD_FAILURE() << "rank " << r << ": position " << ledgers[r].next + 1 << " granted out of order";
    } catch (const RpcError& e) {
      const std::string want =
          "next position in epoch " + std::to_string(ledgers[r].epoch) + " is " + std::to_string(ledgers[r].next);
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << "rank " << r << ": " << e.what();
    }
  }
  ASSERT_FALSE(ledger.committed.empty()) << "no checkpoint committed during the run";
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
  EXPECT_EQ(st.checkpoints_committed(), std::min<int64_t>(2, static_cast<int64_t>(ledger.committed.size())));
  std::printf(
      "%d hosts x %d ranks: launch to every host registered %.2f s; killed %.2f s into the load; recovery "
      "(restart to first successful call) %.3f s; every host re-registered in %.2f s; %lld rounds, %lld leases "
      "done, %zu checkpoints committed\n",
      hosts, per_host, register_s, kill_after_s, recovery_s, reregister_s, static_cast<long long>(rounds.load()),
      static_cast<long long>(done), ledger.committed.size());
}

}  // namespace
}  // namespace cnx::coordinator
