// The NCCL backend on real GPUs (label gpu; built with CNX_WITH_NCCL):
// world size 1 with no rendezvous environment (a single-GPU machine),
// GradSync on CUDA parameters, and, when two GPUs are visible, two ranks over
// a TCP store (comm_nccl_rank). Without CUDA the tests skip, unless
// CNX_REQUIRE_GPU=1, which turns that into a failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>  // getpid

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_sync.h"
#include "tests/comm/nccl_util.h"

extern char** environ;

namespace cnx::comm {
namespace {

using testing::gpu_required;

#define CNX_NEED_GPUS(n)                                                                               \
  do {                                                                                                 \
    const int have_ = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; \
    if (have_ < (n)) {                                                                                 \
      if (gpu_required() && (n) == 1) FAIL() << "CNX_REQUIRE_GPU=1 but CUDA is not available";         \
      GTEST_SKIP() << "needs " << (n) << " CUDA device(s), found " << have_;                           \
    }                                                                                                  \
  } while (0)

std::unique_ptr<Communicator> world_of_one() {
  // A single-GPU machine: no CNX_* / OMPI_* variables at all.
  for (const char* v : {"CNX_RANK", "CNX_WORLD_SIZE", "CNX_MASTER_ADDR", "CNX_MASTER_PORT", "CNX_STORE_DIR",
                        "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"}) {
    ::unsetenv(v);
  }
  CommOptions o;
  o.backend = "auto";
  o.device_type = at::kCUDA;
  o.timeout_s = 60;
  return make_communicator(o);
}

TEST(Nccl, WorldOfOneAllreduceBroadcastAllgather) {
  CNX_NEED_GPUS(1);
  auto comm = world_of_one();
  EXPECT_EQ(comm->backend_name(), "nccl");
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->device(), at::Device(at::kCUDA, 0));
  for (auto dt : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax}) {
      auto t = torch::linspace(-3, 5, 1000, torch::TensorOptions().dtype(dt).device(at::kCUDA));
      auto before = t.clone();
      auto empty = torch::empty({0}, t.options());
      auto w = comm->allreduce({t, empty}, op);
      w->wait();
      EXPECT_TRUE(w->is_completed());
      EXPECT_GE(w->seconds(), 0.0);
      EXPECT_TRUE(torch::equal(t, before))
          << "one rank: the reduction is the input (" << dt << ", " << reduce_op_name(op) << ")";
    }
  }
  auto b = torch::arange(7, torch::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  comm->broadcast(b, 0)->wait();
  EXPECT_TRUE(torch::equal(b.cpu(), torch::arange(7, at::kLong)));
  EXPECT_EQ(comm->allgather("meta"), std::vector<std::string>{"meta"});
  comm->barrier();
}

TEST(Nccl, RejectsHostTensorsAndOtherDtypes) {
  CNX_NEED_GPUS(1);
  auto comm = world_of_one();
  EXPECT_THROW(comm->allreduce({torch::ones({3})}, ReduceOp::kSum), CommError);
  EXPECT_THROW(
      comm->allreduce({torch::ones({3}, torch::TensorOptions().dtype(at::kInt).device(at::kCUDA))}, ReduceOp::kSum),
      CommError);
  EXPECT_THROW(comm->broadcast(torch::ones({3}, at::kCUDA), 1), CommError);
}

TEST(Nccl, GradSyncOnCudaParameters) {
  CNX_NEED_GPUS(1);
  auto comm = world_of_one();
  const torch::Device dev(torch::kCUDA, 0);
  for (bool overlap : {true, false}) {
    auto synced = testing::make_tiny_net(dev);
    auto local = testing::make_tiny_net(dev);
    GradSyncOptions o;
    o.overlap = overlap;
    o.control_slots = 3;
    o.first_bucket_mb = 0.0001;  // several buckets
    GradSync sync(*comm, synced.params(), o);
    const auto x = testing::rank_batch(0).to(dev);
    sync.set_control({1.0, 0.0, 2.5});
    testing::tiny_loss(synced, x).backward();
    sync.finish();
    testing::tiny_loss(local, x).backward();
    const auto a = synced.params(), b = local.params();
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_TRUE(a[i].grad().defined());
      EXPECT_TRUE(torch::equal(a[i].grad(), b[i].grad())) << "parameter " << i << " overlap " << overlap;
    }
    EXPECT_EQ(sync.control_result(), (std::vector<double>{1.0, 0.0, 2.5}));
    EXPECT_GE(sync.stats().steps, 1);
  }
  // Control values alone (no trainable parameters) travel on the GPU too.
  GradSyncOptions o;
  o.control_slots = 2;
  GradSync control_only(*comm, {}, o);
  control_only.set_control({3.0, 4.0});
  control_only.finish();
  EXPECT_EQ(control_only.control_result(), (std::vector<double>{3.0, 4.0}));
}

TEST(Nccl, GradSyncRefusesAParameterOnAnotherGpu) {
  CNX_NEED_GPUS(2);
  auto comm = world_of_one();  // cuda:0
  auto p = torch::zeros({4}, torch::TensorOptions().device(torch::Device(torch::kCUDA, 1))).requires_grad_(true);
  try {
    GradSync sync(*comm, {p});
    ADD_FAILURE() << "expected a CommError";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("communicator uses cuda:0"), std::string::npos) << e.what();
  }
}

int free_port() {
  // Ephemeral ports are rarely reused at once; the ranks fail clearly if taken.
  return 20000 + static_cast<int>(::getpid() % 20000);
}

TEST(Nccl, TwoRanksOverATcpStore) {
  CNX_NEED_GPUS(2);
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    env.push_back("CNX_RANK=" + std::to_string(r));
    env.push_back("CNX_WORLD_SIZE=2");
    env.push_back("CNX_MASTER_ADDR=127.0.0.1");
    env.push_back("CNX_MASTER_PORT=" + std::to_string(port));
    env.push_back("CNX_RENDEZVOUS_TIMEOUT_S=60");
    std::vector<char*> envp;
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    char* argv[] = {const_cast<char*>(CNX_NCCL_RANK_EXE), nullptr};
    pid_t pid = -1;
    ASSERT_EQ(posix_spawn(&pid, CNX_NCCL_RANK_EXE, nullptr, nullptr, argv, envp.data()), 0);
    pids.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(150);
  for (size_t r = 0; r < pids.size(); ++r) {
    int status = 0;
    while (::waitpid(pids[r], &status, WNOHANG) != pids[r]) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "rank " << r << " status " << status << " (its output is above)";
  }
}

}  // namespace
}  // namespace cnx::comm
