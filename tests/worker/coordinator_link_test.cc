// The worker's side of the control plane against a fake coordinator that
// names folders outside checkpoint.root: the worker must refuse them (and
// never delete or write there).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "proto/coordinator.grpc.pb.h"
#include "worker/checkpoint_files.h"
#include "worker/coordinator_link.h"

namespace cnx::worker {
namespace {

namespace fs = std::filesystem;
namespace pb = cnx::v1;

const char* kToken = "fake-coordinator-test-token-0123456789";

// Heartbeats until the link has a plan or an abort (at most ~5 s).
void pump(CoordinatorLink& l) {
  l.start_heartbeats(0.05);
  for (int i = 0; i < 100 && !l.abort_requested() && l.due_plan(1).id == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

// Answers Register with `resume_dir` (when set) and every Heartbeat with a
// checkpoint plan in `plan_dir`.
class FakeCoordinator final : public pb::Coordinator::Service {
 public:
  std::string resume_dir, plan_dir;
  grpc::Status Register(grpc::ServerContext*, const pb::RegisterRequest*, pb::RegisterReply* rep) override {
    rep->set_attempt(1);
    rep->set_world_size(1);
    rep->set_state(pb::JOB_RUNNING);
    rep->set_heartbeat_s(0.1);
    if (!resume_dir.empty()) {
      rep->mutable_resume()->set_dir(resume_dir);
      rep->mutable_resume()->set_step(10);
      rep->mutable_resume()->set_world_size(1);
    }
    return grpc::Status::OK;
  }
  grpc::Status Heartbeat(grpc::ServerContext*, const pb::HeartbeatRequest*, pb::HeartbeatReply* rep) override {
    rep->set_state(pb::JOB_RUNNING);
    rep->set_action(plan_dir.empty() ? pb::ACTION_CONTINUE : pb::ACTION_CHECKPOINT);
    if (!plan_dir.empty()) {
      rep->mutable_checkpoint()->set_id(3);
      rep->mutable_checkpoint()->set_step(1);
      rep->mutable_checkpoint()->set_dir(plan_dir);
    }
    return grpc::Status::OK;
  }
};

class LinkConfinement : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cnx_link_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "root" / "job");
    fs::create_directories(dir_ / "victim");
    std::ofstream(dir_ / "victim" / "precious.txt") << "keep me";
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&fake_);
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ && port_ > 0);
  }
  void TearDown() override {
    server_->Shutdown();
    fs::remove_all(dir_);
  }
  std::unique_ptr<CoordinatorLink> link() {
    LinkOptions o;
    o.target = "127.0.0.1:" + std::to_string(port_);
    o.token = kToken;
    o.checkpoint_root = (dir_ / "root").string();
    return std::make_unique<CoordinatorLink>(o, "job", 0, 1, "launch-1");
  }
  fs::path dir_;
  FakeCoordinator fake_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(LinkConfinement, PlanInsideTheRootIsAccepted) {
  fake_.plan_dir = (dir_ / "root" / "job" / "ckpt-000003-step-000000001").string();
  auto l = link();
  l->register_and_wait();
  pump(*l);
  EXPECT_FALSE(l->abort_requested()) << l->reason();
  EXPECT_EQ(l->due_plan(1).dir, fake_.plan_dir);
}

TEST_F(LinkConfinement, PlanOutsideTheRootAbortsAndIsNeverUsed) {
  const std::vector<std::string> hostile = {
      (dir_ / "victim").string(),                  // absolute, elsewhere
      (dir_ / "root" / ".." / "victim").string(),  // climbs out
      (dir_ / "root").string(),                    // the root itself
      "relative/elsewhere",                        // outside by the working folder
  };
  fs::create_directory_symlink(dir_ / "victim", dir_ / "root" / "job" / "link");
  std::vector<std::string> cases = hostile;
  cases.push_back((dir_ / "root" / "job" / "link").string());  // symlink escaping the root
  for (const auto& d : cases) {
    fake_.plan_dir = d;
    auto l = link();
    l->register_and_wait();
    pump(*l);
    EXPECT_TRUE(l->abort_requested()) << d;
    EXPECT_NE(l->reason().find("checkpoint folder '" + d + "'"), std::string::npos) << l->reason();
    EXPECT_EQ(l->due_plan(1).id, 0) << d << " was accepted as a plan";
  }
  EXPECT_TRUE(fs::exists(dir_ / "victim" / "precious.txt"));
}

TEST_F(LinkConfinement, ResumeFolderOutsideTheRootIsRefused) {
  fake_.resume_dir = (dir_ / "victim").string();
  auto l = link();
  try {
    l->register_and_wait();
    FAIL() << "resume folder outside the root accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("resume checkpoint '" + fake_.resume_dir + "' lies outside"),
              std::string::npos)
        << e.what();
  }
}

TEST(ConfinedToRoot, AcceptsOnlyFoldersStrictlyInside) {
  const fs::path d = fs::temp_directory_path() / ("cnx_confine_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d / "root" / "a");
  fs::create_directories(d / "out");
  fs::create_directory_symlink(d / "out", d / "root" / "esc");
  fs::create_directory_symlink(d / "root" / "a", d / "root" / "ok");
  const std::string root = (d / "root").string();
  EXPECT_EQ(confined_to_root(root, root + "/a/b", "x"), root + "/a/b");
  EXPECT_NO_THROW(confined_to_root(root, root + "/ok/new", "x"));  // a symlink that stays inside
  EXPECT_NO_THROW(confined_to_root(root + "/", root + "/a", "x"));
  for (const std::string bad : {root, root + "/", root + "/a/../..", root + "/../out", (d / "out").string(),
                                root + "/esc", root + "/esc/x", std::string("/"), std::string("")}) {
    EXPECT_THROW(confined_to_root(root, bad, "x"), CheckpointError) << bad;
  }
  fs::remove_all(d);
}

}  // namespace
}  // namespace cnx::worker
