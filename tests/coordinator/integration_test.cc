// The coordinator on loopback: the real cnx-coordinator process (killed with
// SIGKILL and restarted) and in-process servers for auth, validation and TLS.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/generic/generic_stub.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "coordinator/client.h"
#include "coordinator/service.h"
#include "tests/coordinator/loopback_util.h"

namespace cnx::coordinator {
namespace {

namespace fs = std::filesystem;
namespace pb = cnx::v1;
using test::client_options;
using test::JobDir;
using test::kToken;
using test::Process;
using test::write_file;

pb::CheckpointPartRequest part(int64_t plan, int64_t step, const pb::RankProgress& progress) {
  pb::CheckpointPartRequest req;
  req.set_plan_id(plan);
  req.set_step(step);
  auto* f = req.add_files();
  f->set_path("rank.bin");
  f->set_sha256(std::string(64, 'd'));
  f->set_bytes(1);
  *req.mutable_progress() = progress;
  req.set_data_cursor(std::string("\x00\x01\xff", 3));
  return req;
}

TEST(CoordinatorProcess, EpochsSurviveKill9WithLeasesIntact) {
  JobDir job("kill");
  Process coord(job);
  coord.start();
  const int world = 3;
  std::vector<std::unique_ptr<CoordinatorClient>> w;
  for (int r = 0; r < world; ++r) {
    w.push_back(std::make_unique<CoordinatorClient>(client_options(job.target())));
    auto rep = w[r]->register_worker("itest", r, world, "host" + std::to_string(r), "launch-1");
    EXPECT_EQ(rep.attempt(), 1);
  }
  std::map<int, std::vector<int64_t>> got;  // rank -> shard ids, epoch 0
  std::vector<int64_t> pos(world, 0);
  // Each rank takes one lease and finishes it; then each takes another.
  for (int round = 0; round < 2; ++round)
    for (int r = 0; r < world; ++r) {
      auto a = w[r]->acquire_shard(0, pos[r]);
      ASSERT_FALSE(a.end_of_epoch());
      got[r].push_back(a.lease().shard_id());
      ++pos[r];
      if (round == 0) w[r]->report_shard_done(0, a.lease().position(), a.lease().end() - a.lease().start());
    }
  pb::HeartbeatRequest hb;
  hb.set_step(7);
  for (auto& c : w) EXPECT_EQ(c->heartbeat(hb).action(), pb::ACTION_CONTINUE);
  // Commit a checkpoint: progress = one lease used, the second half-used.
  CoordinatorClient ctl(client_options(job.target()));
  auto plan = ctl.request_checkpoint("itest").plan();
  EXPECT_GT(plan.step(), 7);
  EXPECT_EQ(w[0]->heartbeat(hb).action(), pb::ACTION_CHECKPOINT);
  for (int r = 0; r < world; ++r) {
    pb::RankProgress p;
    p.set_epoch(0);
    p.set_next_position(2);
    auto* ip = p.add_partial();
    ip->set_position(1);
    ip->set_consumed(3);
    ip->set_epoch(0);
    EXPECT_EQ(w[r]->report_checkpoint_part(part(plan.id(), plan.step(), p)).committed(), r == world - 1);
  }
  auto before = ctl.status("itest");
  EXPECT_EQ(before.shards_leased(), 3);
  EXPECT_EQ(before.checkpoints_committed(), 1);

  // kill -9 mid-epoch, then restart. A heartbeat sent while it is down is
  // retried with backoff and answered by the restarted coordinator.
  coord.kill9();
  std::thread late([&] { EXPECT_EQ(w[1]->heartbeat(hb).action(), pb::ACTION_CONTINUE); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  coord.start();
  late.join();
  auto after = ctl.status("itest");
  EXPECT_EQ(after.attempt(), 1);
  EXPECT_EQ(after.state(), pb::JOB_RUNNING);
  EXPECT_EQ(after.shards_leased(), 3) << "leases intact";
  EXPECT_EQ(after.shards_done(), 3);
  EXPECT_EQ(after.checkpoints_committed(), 1);
  for (int r = 0; r < world; ++r) {
    // A retry of the held lease returns it; the sequence continues.
    EXPECT_EQ(w[r]->acquire_shard(0, 1).lease().shard_id(), got[r][1]);
    w[r]->report_shard_done(0, 1, 5);
    for (;;) {
      auto a = w[r]->acquire_shard(0, pos[r]);
      if (a.end_of_epoch()) break;
      got[r].push_back(a.lease().shard_id());
      w[r]->report_shard_done(0, pos[r]++, a.lease().end() - a.lease().start());
    }
  }
  std::multiset<int64_t> all;
  for (auto& [r, v] : got) all.insert(v.begin(), v.end());
  EXPECT_EQ(all, (std::multiset<int64_t>{0, 1, 2, 3, 4, 5, 6, 7})) << "each shard of the epoch exactly once";
  auto latest = ctl.latest_checkpoint("itest");
  ASSERT_TRUE(latest.found());
  EXPECT_EQ(latest.checkpoint().parts_size(), world);
  EXPECT_EQ(latest.checkpoint().parts(0).data_cursor(), std::string("\x00\x01\xff", 3));

  // A relaunch (new attempt) resumes from the commit and fences attempt 1.
  CoordinatorClient fresh(client_options(job.target()));
  auto reg = fresh.register_worker("itest", 0, world, "host0", "launch-2");
  EXPECT_EQ(reg.attempt(), 2);
  ASSERT_TRUE(reg.has_resume());
  EXPECT_EQ(reg.resume().step(), plan.step());
  try {
    w[0]->heartbeat(hb);
    FAIL() << "stale attempt accepted";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), grpc::StatusCode::FAILED_PRECONDITION) << e.what();
  }
}

class InProcess : public ::testing::Test {
 protected:
  void SetUp() override {
    job_ = std::make_unique<JobDir>(::testing::UnitTest::GetInstance()->current_test_info()->name());
    server_ = std::make_unique<CoordinatorServer>(job_->options());
  }
  std::unique_ptr<JobDir> job_;
  std::unique_ptr<CoordinatorServer> server_;
};

struct CountingObserver : RpcObserver {
  std::mutex mu;
  std::map<std::pair<std::string, int>, int> calls;
  void on_rpc(std::string_view method, grpc::StatusCode code, double seconds) override {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_GE(seconds, 0.0);
    calls[{std::string(method), static_cast<int>(code)}]++;
  }
};

TEST_F(InProcess, WrongOrMissingTokenIsUnauthenticated) {
  CountingObserver observer;
  server_->service().set_observer(&observer);
  for (const std::string& token : {std::string("not-the-token-000000"), std::string(kToken) + "x", std::string()}) {
    ClientOptions o = client_options(job_->target(), token);
    CoordinatorClient c(o);
    try {
      c.status("itest");
      FAIL() << "accepted token '" << token << "'";
    } catch (const RpcError& e) {
      EXPECT_EQ(e.code(), grpc::StatusCode::UNAUTHENTICATED) << e.what();
    }
  }
  // No metadata at all.
  auto stub = pb::Coordinator::NewStub(grpc::CreateChannel(job_->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  pb::StatusRequest req;
  req.set_job_id("itest");
  pb::StatusReply rep;
  EXPECT_EQ(stub->GetStatus(&ctx, req, &rep).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(server_->service().status().auth_failures, 4);
  CoordinatorClient good(client_options(job_->target()));
  EXPECT_EQ(good.status("itest").job_id(), "itest");
  server_->service().set_observer(nullptr);
  EXPECT_EQ((observer.calls[{"GetStatus", static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)}]), 4);
  EXPECT_EQ((observer.calls[{"GetStatus", static_cast<int>(grpc::StatusCode::OK)}]), 1);
  const CoordinatorStatus st = server_->service().status();
  EXPECT_EQ(st.rpcs_total, 5);
  EXPECT_EQ(st.rpcs_failed, 4);
  EXPECT_EQ(st.job.state, JobState::kWaiting);
}

TEST_F(InProcess, MalformedAndOutOfRangeAreInvalidArgument) {
  CoordinatorClient c(client_options(job_->target()));
  auto expect_invalid = [](auto fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "accepted; expected INVALID_ARGUMENT about " << needle;
    } catch (const RpcError& e) {
      EXPECT_EQ(e.code(), grpc::StatusCode::INVALID_ARGUMENT) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid([&] { c.register_worker("itest", 5, 2, "h", "L"); }, "rank");
  expect_invalid([&] { c.register_worker("itest", 0, -3, "h", "L"); }, "world_size");
  expect_invalid([&] { c.register_worker("itest", 0, 1, std::string(300, 'h'), "L"); }, "host");
  expect_invalid([&] { c.register_worker("wrong-job", 0, 1, "h", "L"); }, "job_id");
  c.register_worker("itest", 0, 1, "h", "L");
  expect_invalid([&] { c.acquire_shard(7, 0); }, "epoch");
  expect_invalid([&] { c.report_shard_done(0, 0, 1); }, "no active lease");
  auto plan = c.request_checkpoint("itest").plan();
  pb::RankProgress p;
  auto bad = part(plan.id(), plan.step(), p);
  bad.mutable_files(0)->set_path("../../outside");
  expect_invalid([&] { c.report_checkpoint_part(bad); }, "files[0].path");
  bad.mutable_files(0)->set_path("/etc/passwd");
  expect_invalid([&] { c.report_checkpoint_part(bad); }, "files[0].path");
  bad = part(plan.id(), plan.step() - 1, p);
  expect_invalid([&] { c.report_checkpoint_part(bad); }, "step");
  // Bytes that are not a protobuf message at all.
  const grpc::Status st =
      test::raw_call(job_->target(), "Heartbeat", std::string("\xff\xff\xff\xff\x0f garbage", 13), kToken);
  EXPECT_FALSE(st.ok());
  // The server is still up and consistent.
  auto s = c.status("itest");
  EXPECT_EQ(s.state(), pb::JOB_RUNNING);
  EXPECT_TRUE(s.checkpoint_pending());
}

bool run(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

std::string capture(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
  *rc = WEXITSTATUS(pclose(p));
  return out;
}

TEST_F(InProcess, CnxCtlStatusCheckpointDrain) {
  const char* build = std::getenv("CNX_BINARY_DIR");
  ASSERT_NE(build, nullptr) << "run through ctest (CNX_BINARY_DIR names the build folder)";
  const std::string ctl =
      std::string(build) + "/coordinator/cnx-ctl --config " + (job_->dir / "job.yaml").string() + " ";
  CoordinatorClient w(client_options(job_->target()));
  w.register_worker("itest", 0, 1, "worker-host", "L");
  int rc = -1;
  std::string out = capture(ctl + "status --json", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"state\": \"JOB_RUNNING\""), std::string::npos) << out;
  EXPECT_NE(out.find("worker-host"), std::string::npos) << out;
  out = capture(ctl + "status", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("state RUNNING"), std::string::npos) << out;
  out = capture(ctl + "checkpoint", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("checkpoint 1 planned"), std::string::npos) << out;
  EXPECT_EQ(w.heartbeat(pb::HeartbeatRequest()).action(), pb::ACTION_CHECKPOINT);
  out = capture(ctl + "drain --now", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("STOPPED"), std::string::npos) << out;
  EXPECT_EQ(w.heartbeat(pb::HeartbeatRequest()).action(), pb::ACTION_DRAIN);
  out = capture(ctl + "--token-file /dev/null status", &rc);
  EXPECT_NE(rc, 0) << "an empty token must be refused: " << out;
}

TEST(Tls, MutualTlsRoundTripWithATestCa) {
  JobDir job("tls");
  const std::string d = job.dir.string();
  ASSERT_TRUE(
      run("cd " + d +
          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=cnx-test-ca"));
  write_file(job.dir / "san.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  for (const char* who : {"server", "client"}) {
    ASSERT_TRUE(run("cd " + d + " && openssl req -newkey rsa:2048 -nodes -keyout " + who + ".key -out " + who +
                    ".csr -subj /CN=" + who));
    ASSERT_TRUE(run("cd " + d + " && openssl x509 -req -in " + who +
                    ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out " + who + ".pem -days 1 -extfile san.ext"));
  }
  ServerOptions o = job.options();
  o.tls_cert = d + "/server.pem";
  o.tls_key = d + "/server.key";
  o.tls_client_ca = d + "/ca.pem";
  CoordinatorServer server(o);

  ClientOptions co = client_options(job.target());
  co.retry_budget_s = 0;
  co.tls_ca = d + "/ca.pem";
  co.tls_cert = d + "/client.pem";
  co.tls_key = d + "/client.key";
  CoordinatorClient good(co);
  EXPECT_EQ(good.status("itest").job_id(), "itest");
  EXPECT_EQ(good.register_worker("itest", 0, 1, "h", "L").attempt(), 1);

  ClientOptions no_cert = co;
  no_cert.deadline_s = 1;  // the handshake fails; the call waits for a ready channel until then
  no_cert.tls_cert.clear();
  no_cert.tls_key.clear();
  EXPECT_THROW(CoordinatorClient(no_cert).status("itest"), RpcError) << "client certificate required";
  ClientOptions plain = client_options(job.target());
  plain.retry_budget_s = 0;
  plain.deadline_s = 1;
  EXPECT_THROW(CoordinatorClient(plain).status("itest"), RpcError) << "plaintext refused";
  EXPECT_EQ(good.status("itest").state(), pb::JOB_RUNNING);
}

// Retention deletes old checkpoints from the coordinator's host: a committed
// checkpoint folder the coordinator cannot see (checkpoint.root not on a
// shared filesystem there, or a relative root resolved elsewhere) is logged
// as an error naming the folder and the fix; a visible one is not.
TEST(CoordinatorRetention, CommittedCheckpointInvisibleToTheCoordinatorIsAnError) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  spdlog::default_logger()->sinks().push_back(sink);
  const std::string marker = "does not exist on the coordinator's host";
  auto count = [&] {
    spdlog::default_logger()->flush();
    const std::string log = captured.str();
    size_t n = 0;
    for (size_t p = 0; (p = log.find(marker, p)) != std::string::npos; ++p) ++n;
    return n;
  };
  auto wait_count = [&](size_t want) {
    for (int i = 0; i < 100 && count() < want; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return count();
  };
  {
    JobDir job("retention_visibility");
    CoordinatorServer server(job.options());
    CoordinatorClient w(client_options(job.target()));
    w.register_worker("itest", 0, 1, "host0", "launch-1");
    CoordinatorClient ctl(client_options(job.target()));
    pb::HeartbeatRequest hb;
    int64_t step = 3;
    // commit(create): plans a checkpoint, optionally creates its folder (as a
    // worker on a shared filesystem would), reports the only part.
    auto commit = [&](bool create) {
      hb.set_step(step);
      w.heartbeat(hb);
      const auto plan = ctl.request_checkpoint("itest").plan();
      if (create) fs::create_directories(plan.dir());
      pb::RankProgress p;
      p.set_epoch(0);
      EXPECT_TRUE(w.report_checkpoint_part(part(plan.id(), plan.step(), p)).committed());
      step = plan.step() + 5;
      return plan.dir();
    };
    const std::string missing = commit(false);
    EXPECT_EQ(wait_count(1), 1u) << captured.str();
    EXPECT_NE(captured.str().find(missing), std::string::npos) << captured.str();
    EXPECT_NE(captured.str().find("shared filesystem"), std::string::npos) << captured.str();
    commit(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(count(), 1u) << "a visible checkpoint was reported as missing:\n" << captured.str();
  }
  spdlog::default_logger()->sinks().pop_back();
}

TEST(Tls, DialAddressForAWildcardListenIsLoopback) {
  EXPECT_EQ(dial_address_for_listen("0.0.0.0:50051"), "127.0.0.1:50051");
  EXPECT_EQ(dial_address_for_listen(":50051"), "127.0.0.1:50051");
  EXPECT_EQ(dial_address_for_listen("[::]:7"), "[::1]:7");
  EXPECT_EQ(dial_address_for_listen("10.0.0.1:50051"), "10.0.0.1:50051");
  EXPECT_EQ(dial_address_for_listen("coord.example:1"), "coord.example:1");
}

// kubectl port-forward: the client dials 127.0.0.1 while the certificate
// names the Service only; the server-name override verifies that name.
TEST(Tls, ServerNameOverrideVerifiesTheServiceName) {
  JobDir job("tlsname");
  const std::string d = job.dir.string();
  ASSERT_TRUE(
      run("cd " + d +
          " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=cnx-test-ca"));
  write_file(job.dir / "san.ext", "subjectAltName=DNS:cnx-coordinator,DNS:cnx-coordinator.cnx.svc\n");
  ASSERT_TRUE(run("cd " + d + " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr " +
                  "-subj /CN=cnx-coordinator && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key " +
                  "-CAcreateserial -out server.pem -days 1 -extfile san.ext"));
  ServerOptions o = job.options();
  o.tls_cert = d + "/server.pem";
  o.tls_key = d + "/server.key";
  CoordinatorServer server(o);

  ClientOptions co = client_options(job.target());
  co.retry_budget_s = 0;
  co.deadline_s = 2;
  co.tls_ca = d + "/ca.pem";
  EXPECT_THROW(CoordinatorClient(co).status("itest"), RpcError) << "127.0.0.1 is not in the certificate";
  co.tls_server_name = "cnx-coordinator";
  EXPECT_EQ(CoordinatorClient(co).status("itest").job_id(), "itest");
  co.tls_server_name = "someone-else";
  EXPECT_THROW(CoordinatorClient(co).status("itest"), RpcError) << "a name the certificate lacks";

  // cnx-ctl with a config whose listen address is the wildcard (as in the
  // coordinator pod): it dials loopback; --tls-server-name names the Service.
  const char* build = std::getenv("CNX_BINARY_DIR");
  ASSERT_NE(build, nullptr) << "run through ctest (CNX_BINARY_DIR names the build folder)";
  const std::string ctl = std::string(build) + "/coordinator/cnx-ctl --config " + (job.dir / "job.yaml").string() +
                          " --set coordinator.listen=0.0.0.0:" + std::to_string(job.port) + " --tls-ca " + d +
                          "/ca.pem --timeout 2 ";
  int rc = -1;
  std::string out = capture(ctl + "--tls-server-name cnx-coordinator status", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("job itest"), std::string::npos) << out;
  out = capture(ctl + "status", &rc);
  EXPECT_EQ(rc, 1) << "without the override the certificate does not match 127.0.0.1: " << out;
  out = capture(std::string(build) + "/coordinator/cnx-ctl --config " + (job.dir / "job.yaml").string() +
                    " --tls-server-name cnx-coordinator status",
                &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("--tls-server-name needs TLS"), std::string::npos) << out;
}

}  // namespace
}  // namespace cnx::coordinator
