// One rank of the two-GPU NCCL test (nccl_test.cc starts two). Rendezvous
// from CNX_RANK / CNX_WORLD_SIZE / CNX_MASTER_ADDR / CNX_MASTER_PORT. Checks,
// printing "rank R: <check> ok" for each:
// 1. allreduce sum / average / max of rank-dependent values (float, bf16);
// 2. GradSync averages gradients: equal to the mean of every rank's local
//    gradients, which each rank computes itself as the oracle;
// 3. deadline: rank 0 issues an all-reduce that rank 1 never joins; its wait
//    must fail within the communicator's timeout, later collectives fail at
//    once, and destroying the aborted communicator must not hang.
// Exit 0 when every check passed, 1 otherwise.
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

#include "comm/communicator.h"
#include "comm/grad_sync.h"
#include "tests/comm/nccl_util.h"

namespace {

int failures = 0;
int rank = -1;

void check(bool ok, const std::string& what) {
  std::printf("rank %d: %s %s\n", rank, what.c_str(), ok ? "ok" : "FAILED");
  std::fflush(stdout);
  if (!ok) ++failures;
}

}  // namespace

int main() {
  using namespace cnx::comm;
  try {
    CommOptions o;
    o.backend = "nccl";
    o.device_type = at::kCUDA;
    o.timeout_s = 5;
    auto comm = make_communicator(o);
    rank = comm->rank();
    const int world = comm->size();
    const torch::Device dev = comm->device();
    check(world == 2 && dev.index() == rank, "two ranks, one GPU each");

    for (auto dt : {at::kFloat, at::kBFloat16}) {
      auto opts = torch::TensorOptions().dtype(dt).device(dev);
      auto s = torch::full({1000}, static_cast<double>(rank + 1), opts);
      auto a = s.clone();
      auto m = torch::full({1000}, static_cast<double>(rank * 10), opts);
      comm->allreduce({s}, ReduceOp::kSum)->wait();
      comm->allreduce({a}, ReduceOp::kAverage)->wait();
      comm->allreduce({m}, ReduceOp::kMax)->wait();
      check(torch::all(s.cpu() == 3).item<bool>() && torch::all(a.cpu() == 1.5).item<bool>() &&
                torch::all(m.cpu() == 10).item<bool>(),
            std::string("allreduce sum/average/max ") + c10::toString(dt));
    }

    {
      auto synced = cnx::comm::testing::make_tiny_net(dev);
      GradSync sync(*comm, synced.params());
      cnx::comm::testing::tiny_loss(synced, cnx::comm::testing::rank_batch(rank).to(dev)).backward();
      sync.finish();
      std::vector<torch::Tensor> mean;
      for (int r = 0; r < world; ++r) {
        auto local = cnx::comm::testing::make_tiny_net(dev);
        cnx::comm::testing::tiny_loss(local, cnx::comm::testing::rank_batch(r).to(dev)).backward();
        const auto ps = local.params();
        for (size_t i = 0; i < ps.size(); ++i) {
          if (r == 0)
            mean.push_back(ps[i].grad() / world);
          else
            mean[i] += ps[i].grad() / world;
        }
      }
      bool ok = true;
      const auto ps = synced.params();
      for (size_t i = 0; i < ps.size(); ++i) ok = ok && torch::allclose(ps[i].grad(), mean[i], 1e-5, 1e-6);
      check(ok, "GradSync average equals the mean of both ranks' gradients");
    }
    comm->barrier();

    if (rank == 0) {
      auto t = torch::ones({16}, torch::TensorOptions().device(dev));
      const auto start = std::chrono::steady_clock::now();
      std::string error;
      try {
        comm->allreduce({t}, ReduceOp::kSum)->wait();
      } catch (const CommError& e) {
        error = e.what();
      }
      const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::printf("rank 0: unmatched all-reduce after %.1f s: %s\n", took, error.c_str());
      check(error.find("did not finish within 5 s") != std::string::npos && took < 30,
            "an unmatched all-reduce fails at the deadline");
      std::string later;
      try {
        comm->allreduce({t}, ReduceOp::kSum);
      } catch (const CommError& e) {
        later = e.what();
      }
      check(later.find("aborted earlier") != std::string::npos, "later collectives fail at once");
    }
    const auto start = std::chrono::steady_clock::now();
    comm.reset();
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    check(took < 45, "destroying the communicator returns (" + std::to_string(took) + " s)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
