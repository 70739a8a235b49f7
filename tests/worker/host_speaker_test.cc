// The worker's host speaker (worker/host_speaker.h) against an in-process
// coordinator: the election, leases identical to the per-rank protocol's
// (lease by lease), one parts report per host committing a checkpoint, the
// per-rank fallback for a coordinator without host calls, and a local rank
// whose speaker is gone.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "coordinator/client.h"
#include "coordinator/service.h"
#include "tests/coordinator/loopback_util.h"
#include "worker/coordinator_voice.h"
#include "worker/host_relay.h"
#include "worker/host_speaker.h"

namespace cnx::worker {
namespace {

namespace pb = cnx::v1;
namespace ct = cnx::coordinator::test;

std::string entry(const std::string& key, const std::string& adv, int lr, int ls) {
  return key + "\t" + adv + "\t" + std::to_string(lr) + "\t" + std::to_string(ls);
}

TEST(Relay, FramesRoundTripAndAFrozenServerTimesOut) {
  const std::string name = "cnx-relay-test-" + std::to_string(::getpid());
  std::atomic<int> closed{0};
  relay::RelayServer server(
      name,
      [](const relay::Frame& f, int64_t) {
        if (f.kind == 'S') std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // frozen
        return relay::Frame{static_cast<char>(f.kind + 1), f.body + "!"};
      },
      [&](int64_t) { ++closed; });
  EXPECT_THROW(relay::RelayServer(name, nullptr, nullptr), relay::RelayError);  // the name is taken
  {
    relay::RelayClient c(name, 5);
    const std::string big(3 << 20, 'x');
    const relay::Frame r = c.call(relay::Frame{'a', big}, 5);
    EXPECT_EQ(r.kind, 'b');
    EXPECT_EQ(r.body, big + "!");
    try {
      c.call(relay::Frame{'S', ""}, 0.2);
      ADD_FAILURE() << "no timeout";
    } catch (const relay::RelayError& e) {
      EXPECT_NE(std::string(e.what()).find("no reply in time"), std::string::npos) << e.what();
    }
    EXPECT_THROW(c.call(relay::Frame{'a', ""}), relay::RelayError);  // out of step for good
  }
  relay::RelayClient d(name, 5);  // a new connection works
  EXPECT_EQ(d.call(relay::Frame{'a', "x"}).body, "x!");
  for (int i = 0; i < 50 && closed.load() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_GE(closed.load(), 1);
  EXPECT_THROW(relay::RelayClient("cnx-relay-test-nobody-listens", 0.2), relay::RelayError);
}

TEST(PlanHosts, GroupsRanksByMachineAndElectsLocalRankZero) {
  // Two hosts, ranks placed round-robin (0, 2 on a; 1, 3 on b).
  const std::vector<std::string> e = {entry("a|ns1", "10.0.0.1", 0, 2), entry("b|ns1", "10.0.0.2", 1, 2),
                                      entry("a|ns1", "10.0.0.1", 1, 2), entry("b|ns1", "10.0.0.2", 0, 2)};
  const HostPlan p0 = plan_hosts(e, 0), p1 = plan_hosts(e, 1);
  ASSERT_TRUE(p0.valid) << p0.why;
  EXPECT_EQ(p0.ranks, (std::vector<int>{0, 2}));
  EXPECT_EQ(p0.speaker, 0);
  EXPECT_EQ(p0.host, "10.0.0.1");
  EXPECT_EQ(p0.hosts, 2);
  EXPECT_EQ(p1.ranks, (std::vector<int>{1, 3}));
  EXPECT_EQ(p1.speaker, 3);  // local rank 0 of host b, not its lowest rank
  EXPECT_EQ(p1.host, "10.0.0.2");
}

TEST(PlanHosts, SameAdvertisedNameOnTwoHostsIsMadeUnique) {
  // Two network namespaces of one machine, both advertising its hostname.
  const std::vector<std::string> e = {entry("m|ns1", "m", 0, 1), entry("m|ns2", "m", 0, 1)};
  EXPECT_EQ(plan_hosts(e, 0).host, "m/r0");
  EXPECT_EQ(plan_hosts(e, 1).host, "m/r1");
}

TEST(PlanHosts, InconsistentLocalRanksAreRefusedWithTheReason) {
  // Two MPI nodes that look like one machine: local ranks 0, 1, 0, 1 of size 2.
  const std::vector<std::string> e = {entry("m|ns", "m", 0, 2), entry("m|ns", "m", 1, 2), entry("m|ns", "m", 0, 2),
                                      entry("m|ns", "m", 1, 2)};
  const HostPlan p = plan_hosts(e, 0);
  EXPECT_FALSE(p.valid);
  EXPECT_NE(p.why.find("4 ranks share its machine"), std::string::npos) << p.why;
  EXPECT_FALSE(plan_hosts({"garbage"}, 0).valid);
}

TEST(PlanHosts, ThisProcessEntryParses) {
  const HostPlan p = plan_hosts({host_entry("", 0, 1)}, 0);
  ASSERT_TRUE(p.valid) << p.why;
  EXPECT_EQ(p.ranks, std::vector<int>{0});
  EXPECT_FALSE(p.host.empty());
}

// Calls per method (all codes).
struct Counter : coordinator::RpcObserver {
  std::mutex mu;
  std::map<std::string, int> calls;
  void on_rpc(std::string_view method, grpc::StatusCode, double) override {
    std::lock_guard<std::mutex> lock(mu);
    calls[std::string(method)]++;
  }
  int operator[](const std::string& m) {
    std::lock_guard<std::mutex> lock(mu);
    return calls[m];
  }
};

// A coordinator in this process for one job of `world` ranks.
struct Job {
  ct::JobDir dir;
  std::unique_ptr<coordinator::CoordinatorServer> server;
  explicit Job(const std::string& name) : dir(name, 12) {
    server = std::make_unique<coordinator::CoordinatorServer>(dir.options());
  }
  LinkOptions link() const {
    LinkOptions o;
    o.target = "127.0.0.1:" + std::to_string(server->port());
    o.token = ct::kToken;
    o.unreachable_s = 10;
    return o;
  }
};

HostVoiceOptions host_options(const Job& job, const std::string& launch, int world, const std::vector<int>& ranks,
                              const std::string& host) {
  HostVoiceOptions o;
  o.link = job.link();
  o.job_id = "itest";
  o.launch_id = launch;
  o.world = world;
  o.plan.valid = true;
  o.plan.ranks = ranks;
  o.plan.speaker = ranks.front();
  o.plan.host = host;
  o.plan.hosts = 2;
  o.ask_ahead = 2;  // several rounds per epoch
  o.final_wait_s = 2;
  return o;
}

// Registers every voice (rank i = voices[i]) at once; returns the replies.
std::vector<pb::RegisterReply> register_all(std::vector<std::unique_ptr<CoordinatorVoice>>& voices,
                                            const std::string& launch) {
  std::vector<std::future<pb::RegisterReply>> f;
  const int world = static_cast<int>(voices.size());
  for (int r = 0; r < world; ++r)
    f.push_back(
        std::async(std::launch::async, [&, r] { return voices[r]->register_rank("itest", r, world, "h", launch); }));
  std::vector<pb::RegisterReply> out;
  for (auto& x : f) out.push_back(x.get());
  return out;
}

// Every rank's sequence of epoch `e`: "shard:start-end" per item.
std::vector<std::vector<std::string>> sequences(std::vector<std::unique_ptr<CoordinatorVoice>>& voices, int64_t e) {
  std::vector<std::future<std::vector<std::string>>> f;
  for (auto& v : voices)
    f.push_back(std::async(std::launch::async, [&v, e] {
      std::vector<std::string> items;
      for (int64_t p = 0;; ++p) {
        const pb::AcquireShardReply g = v->acquire(e, p);
        if (g.end_of_epoch()) break;
        EXPECT_EQ(g.lease().position(), p);
        items.push_back(std::to_string(g.lease().shard_id()) + ":" + std::to_string(g.lease().start()) + "-" +
                        std::to_string(g.lease().end()));
        v->done(e, p, g.lease().end() - g.lease().start());
      }
      return items;
    }));
  std::vector<std::vector<std::string>> out;
  for (auto& x : f) out.push_back(x.get());
  return out;
}

pb::HeartbeatRequest beat(int64_t step) {
  pb::HeartbeatRequest q;
  q.set_step(step);
  q.set_status(pb::WORKER_RUNNING);
  return q;
}

TEST(HostSpeaker, LeasesEqualThePerRankProtocolAndOnePartsReportPerHostCommits) {
  // Reference: 3 ranks on their own.
  Job ref("hs_ref");
  Counter ref_calls, calls;
  ref.server->service().set_observer(&ref_calls);
  std::vector<std::unique_ptr<CoordinatorVoice>> per_rank;
  for (int r = 0; r < 3; ++r) per_rank.push_back(make_rank_voice(ref.link()));
  register_all(per_rank, "L1");
  // Host A speaks for ranks 0 and 1 (speaker 0), host B for rank 2.
  Job job("hs_host");
  job.server->service().set_observer(&calls);
  std::vector<std::unique_ptr<CoordinatorVoice>> hosted;
  hosted.push_back(make_host_voice(host_options(job, "L1", 3, {0, 1}, "a"), 0));
  hosted.push_back(make_host_voice(host_options(job, "L1", 3, {0, 1}, "a"), 1));
  hosted.push_back(make_host_voice(host_options(job, "L1", 3, {2}, "b"), 2));
  const auto regs = register_all(hosted, "L1");
  for (const auto& r : regs) EXPECT_EQ(r.attempt(), 1);
  EXPECT_NE(hosted[0]->describe().find("speaker of host 'a'"), std::string::npos) << hosted[0]->describe();
  EXPECT_NE(hosted[1]->describe().find("through the speaker"), std::string::npos) << hosted[1]->describe();
  for (auto& v : hosted) v->heartbeat(beat(0));
  for (int64_t e = 0; e < 2; ++e) {
    const auto want = sequences(per_rank, e), got = sequences(hosted, e);
    EXPECT_EQ(got, want) << "epoch " << e;
    EXPECT_FALSE(got[0].empty());
  }
  // One voice per host: no per-rank call, and far fewer lease calls (12
  // shards over 3 ranks: 4 items + the end per rank and epoch = 15 per-rank
  // calls; ask-ahead 2: 3 rounds per host and epoch).
  for (auto& v : hosted) v->heartbeat(beat(5));
  for (const char* m : {"Register", "Heartbeat", "AcquireShard", "ReportShardDone"}) EXPECT_EQ(calls[m], 0) << m;
  EXPECT_EQ(ref_calls["AcquireShard"], 2 * 15);
  EXPECT_EQ(calls["RegisterHost"], 2);
  EXPECT_LE(calls["AcquireShards"], 2 * 2 * 3);
  EXPECT_GE(calls["AcquireShards"], 2 * 2 * 3 - 2);  // a member may fetch its own first round
  EXPECT_EQ(ref_calls["ReportShardDone"], 2 * 12);
  EXPECT_LE(calls["ReportShardsDone"], 3);  // the rest travel with AcquireShards
  coordinator::CoordinatorClient ctl(ct::client_options(job.link().target));
  // A checkpoint plan reaches every rank through the heartbeat replies.
  ctl.request_checkpoint("itest");
  int64_t plan = 0, step = 0;
  for (int i = 0; i < 100 && plan == 0; ++i) {
    for (auto& v : hosted) {
      const pb::HeartbeatReply rep = v->heartbeat(beat(6));
      if (rep.has_checkpoint() && rep.checkpoint().id() > 0) {
        plan = rep.checkpoint().id();
        step = rep.checkpoint().step();
      }
    }
  }
  ASSERT_GT(plan, 0);
  std::vector<std::future<bool>> parts;
  for (int r = 0; r < 3; ++r)
    parts.push_back(std::async(std::launch::async, [&, r] {
      pb::CheckpointPartRequest q;
      q.set_plan_id(plan);
      q.set_step(step);
      q.mutable_progress()->set_epoch(1);
      q.set_data_cursor("rank " + std::to_string(r));
      return hosted[r]->report_part(q).committed();
    }));
  int committed = 0;
  for (auto& p : parts) committed += p.get() ? 1 : 0;
  // Host a's two parts travel in one call: both ranks get its answer.
  EXPECT_TRUE(committed == 1 || committed == 2) << committed;
  const pb::LatestCheckpointReply latest = ctl.latest_checkpoint("itest");
  ASSERT_TRUE(latest.found());
  EXPECT_EQ(latest.checkpoint().step(), step);
  EXPECT_EQ(latest.checkpoint().parts_size(), 3);
  const pb::StatusReply st = ctl.status("itest");
  EXPECT_EQ(st.state(), pb::JOB_RUNNING);
  EXPECT_EQ(st.shards_done(), 2 * 12);  // every done report arrived
  EXPECT_EQ(calls["ReportCheckpointPart"], 0);
  EXPECT_EQ(calls["ReportCheckpointParts"], 2);
  job.server->service().set_observer(nullptr);
  ref.server->service().set_observer(nullptr);
}

// Answers Register and Heartbeat only: an older coordinator without host calls.
class OldCoordinator final : public pb::Coordinator::Service {
 public:
  grpc::Status Register(grpc::ServerContext*, const pb::RegisterRequest* q, pb::RegisterReply* rep) override {
    ++registered;
    rep->set_attempt(1);
    rep->set_world_size(q->world_size());
    rep->set_state(pb::JOB_RUNNING);
    rep->set_heartbeat_s(0.1);
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const pb::HeartbeatRequest*, pb::HeartbeatReply* rep) override {
    rep->set_state(pb::JOB_RUNNING);
    rep->set_action(pb::ACTION_CONTINUE);
    return grpc::Status::OK;
  }
  std::atomic<int> registered{0};
};

struct OldServer {
  OldCoordinator service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  OldServer() {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&service);
    server = b.BuildAndStart();
  }
};

TEST(HostSpeaker, OlderCoordinatorWithoutHostCallsGetsPerRankCalls) {
  OldServer old;
  Job unused("hs_old");  // for its options only
  auto o = host_options(unused, "L2", 2, {0, 1}, "a");
  o.link.target = "127.0.0.1:" + std::to_string(old.port);
  std::vector<std::unique_ptr<CoordinatorVoice>> v;
  v.push_back(make_host_voice(o, 0));
  v.push_back(make_host_voice(o, 1));
  register_all(v, "L2");
  EXPECT_EQ(old.service.registered.load(), 2);  // each rank registered itself
  EXPECT_NE(v[0]->describe().find("per-rank"), std::string::npos) << v[0]->describe();
  EXPECT_NE(v[1]->describe().find("per-rank"), std::string::npos) << v[1]->describe();
  EXPECT_EQ(v[1]->heartbeat(beat(1)).action(), pb::ACTION_CONTINUE);

  // coordinator.protocol: host refuses to fall back, naming the key.
  OldServer old2;
  o.link.target = "127.0.0.1:" + std::to_string(old2.port);
  o.launch_id = "L3";
  o.strict = true;
  std::vector<std::unique_ptr<CoordinatorVoice>> s;
  s.push_back(make_host_voice(o, 0));
  s.push_back(make_host_voice(o, 1));
  for (int r = 0; r < 2; ++r) {
    try {
      s[r]->register_rank("itest", r, 2, "h", "L3");
      ADD_FAILURE() << "rank " << r << " registered through a coordinator without host calls";
    } catch (const coordinator::RpcError& e) {
      EXPECT_NE(std::string(e.what()).find("coordinator.protocol"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(old2.service.registered.load(), 0);
}

TEST(HostSpeaker, ALocalRankWhoseSpeakerIsGoneStops) {
  Job job("hs_gone");
  std::vector<std::unique_ptr<CoordinatorVoice>> v;
  v.push_back(make_host_voice(host_options(job, "L4", 2, {0, 1}, "a"), 0));
  v.push_back(make_host_voice(host_options(job, "L4", 2, {0, 1}, "a"), 1));
  register_all(v, "L4");
  EXPECT_EQ(v[1]->heartbeat(beat(1)).state(), pb::JOB_WAITING);  // the speaker has not beaten yet
  v[0]->heartbeat(beat(1));
  EXPECT_EQ(v[1]->heartbeat(beat(2)).state(), pb::JOB_RUNNING);
  v[0].reset();  // the speaker's process ends
  EXPECT_THROW(v[1]->heartbeat(beat(3)), CoordinatorUnreachable);
  EXPECT_THROW(v[1]->acquire(0, 0), CoordinatorUnreachable);
}

}  // namespace
}  // namespace cnx::worker
