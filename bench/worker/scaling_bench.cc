// Weak scaling of FCMAE training: throughput of N ranks x 1 thread against
// 1 rank x 1 thread, measured in the same run (N = mpirun's -np >= 2; the
// ranks may be on one host or several, e.g. tests/cluster's namespaces).
//
//   mpirun --allow-run-as-root --bind-to core -np 2 build/bench/worker/worker_scaling_bench
//       [--model atto] [--size 224] [--batch 8] [--steps 5] [--benchmark_format=console]
//
// Rank 0 drives Google Benchmark; the other ranks follow its commands:
// * BM_Train/1: rank 0 trains alone on an MPI_COMM_SELF communicator while
//   the others sleep (they poll a non-blocking barrier every millisecond, so
//   they do not spin a core);
// * BM_Train/2: all N ranks train the same model, each on its own batch of
//   the given size (weak scaling: the global batch grows N times), gradients
//   all-reduced by GradSync with overlap. Counter gs_hidden = 1 - wait /
//   all-reduce time from GradSync's counters: the share of the all-reduce
//   that ran behind backward.
// * BM_Train/3 ("N ranks, no sync"): all ranks train at the same time, each
//   on MPI_COMM_SELF (no gradient all-reduce): the throughput two ranks reach
//   on this host without communication, which splits the gap to 2.0x into
//   hardware contention (memory bandwidth, caches) and synchronisation.
// * BM_Train/4: as BM_Train/2 with the MPI backend's blocking waits
//   (MpiWaitMode::kBlocking) instead of the default polled ones: the
//   communication thread then busy-polls the core backward runs on.
// Counters: img_per_s (global images per second). The program prints
// "weak scaling: Nx1 / 1x1 = R" at the end; ideal is N.
// Each phase does one untimed warm-up step first.
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "bench/worker/bench_util.h"
#include "comm/communicator.h"
#include "comm/mpi/mpi_communicator.h"
#include "common/blas_info.h"
#include "common/config.h"
#include "model/onednn_matmul.h"
#include "worker/fcmae_model.h"
#include "worker/trainer.h"

namespace {

struct Args {
  std::string model = "atto";
  int64_t size = 224;
  int64_t batch = 8;
  int64_t steps = 5;
} g_args;

std::unique_ptr<cnx::comm::Communicator> g_world, g_self, g_world_blocking;
double g_ips[5] = {0, 0, 0, 0, 0};
double g_hidden = 0;  // GradSync: share of the all-reduce time behind backward (BM_Train/2)

std::unique_ptr<cnx::worker::Trainer> make_trainer(cnx::comm::Communicator& comm) {
  const cnx::Config c = cnx::bench::trainer_config(g_args.model, g_args.size, g_args.batch);
  const cnx::worker::SyntheticOptions so = cnx::bench::synthetic_options(c, comm.rank(), comm.size());
  return std::make_unique<cnx::worker::Trainer>(cnx::worker::trainer_options(c), comm, cnx::worker::make_fcmae_model(c),
                                                std::make_unique<cnx::worker::SyntheticSource>(so));
}

void sleepy_wait(MPI_Request* req) {
  int done = 0;
  while (!done) {
    MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (!done) usleep(1000);
  }
}

// Command from rank 0 to rank 1: {ranks, steps}; ranks 0 = exit.
void send_command(int ranks, int steps) {
  int cmd[2] = {ranks, steps};
  MPI_Request req;
  MPI_Ibcast(cmd, 2, MPI_INT, 0, MPI_COMM_WORLD, &req);
  sleepy_wait(&req);
}

void BM_Train(benchmark::State& state) {
  const int ranks = static_cast<int>(state.range(0));
  send_command(ranks, static_cast<int>(g_args.steps));
  auto& comm = ranks == 2 ? *g_world : ranks == 4 ? *g_world_blocking : *g_self;  // 1 and 3: COMM_SELF
  auto trainer = make_trainer(comm);
  trainer->step();  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) trainer->step();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double images = static_cast<double>(g_args.batch * (ranks == 1 ? 1 : g_world->size()));
  state.counters["img_per_s"] = benchmark::Counter(images, benchmark::Counter::kIsIterationInvariantRate);
  g_ips[ranks] = images * static_cast<double>(state.iterations()) / seconds;
  if (ranks == 2) {
    const auto st = trainer->grad_sync().stats();
    g_hidden = st.allreduce_seconds > 0 ? 1.0 - st.wait_seconds / st.allreduce_seconds : 0.0;
    state.counters["gs_hidden"] = g_hidden;
  }
  if (ranks == 1) {
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);  // releases rank 1
    sleepy_wait(&req);
  }
}

void follower() {
  for (;;) {
    int cmd[2] = {0, 0};
    MPI_Request req;
    MPI_Ibcast(cmd, 2, MPI_INT, 0, MPI_COMM_WORLD, &req);
    sleepy_wait(&req);
    if (cmd[0] == 0) return;
    if (cmd[0] == 1) {
      MPI_Ibarrier(MPI_COMM_WORLD, &req);
      sleepy_wait(&req);
      continue;
    }
    auto trainer = make_trainer(cmd[0] == 2 ? *g_world : cmd[0] == 4 ? *g_world_blocking : *g_self);
    for (int i = 0; i < cmd[1] + 1; ++i) trainer->step();
  }
}

void parse(int* argc, char** argv) {
  cnx::bench::take_flags(
      argc, argv,
      {{"--model", &g_args.model}, {"--size", &g_args.size}, {"--batch", &g_args.batch}, {"--steps", &g_args.steps}});
}

}  // namespace

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("worker_scaling_bench", argc, argv);
  cnx::model::log_gemm_path("worker_scaling_bench");
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) {
    if (rank == 0) std::fprintf(stderr, "run with mpirun -np N, N >= 2\n");
    MPI_Finalize();
    return 2;
  }
  parse(&argc, argv);
  at::set_num_threads(1);
  {
    auto runtime = cnx::comm::MpiRuntime::acquire();
    g_world = std::make_unique<cnx::comm::MpiCommunicator>(runtime, MPI_COMM_WORLD);
    g_self = std::make_unique<cnx::comm::MpiCommunicator>(runtime, MPI_COMM_SELF);
    g_world_blocking =
        std::make_unique<cnx::comm::MpiCommunicator>(runtime, MPI_COMM_WORLD, cnx::comm::MpiWaitMode::kBlocking);
    if (rank == 0) {
      // Two rounds of all phases: the first warms the process up (allocator,
      // caches, page faults); the ratios printed come from the second.
      for (const char* name : {"BM_Train/warmup_round/ranks", "BM_Train/ranks"}) {
        benchmark::RegisterBenchmark(name, BM_Train)
            ->Arg(1)
            ->Arg(2)
            ->Arg(3)
            ->Arg(4)
            ->Iterations(g_args.steps)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
      benchmark::Initialize(&argc, argv);
      benchmark::RunSpecifiedBenchmarks();
      send_command(0, 0);
      std::printf("model %s %lldx%lld, batch %lld per rank, 1 thread per rank\n", g_args.model.c_str(),
                  static_cast<long long>(g_args.size), static_cast<long long>(g_args.size),
                  static_cast<long long>(g_args.batch));
      std::printf("weak scaling: %dx1 / 1x1 = %.3f (img/s %.2f vs %.2f); all-reduce hidden behind backward: %.2f\n",
                  size, g_ips[1] > 0 ? g_ips[2] / g_ips[1] : 0.0, g_ips[2], g_ips[1], g_hidden);
      std::printf("%d ranks without sync: %.3f x 1x1 (img/s %.2f): the hardware's share of the gap\n", size,
                  g_ips[1] > 0 ? g_ips[3] / g_ips[1] : 0.0, g_ips[3]);
      std::printf("%d ranks, blocking MPI waits: %.3f x 1x1 (img/s %.2f)\n", size,
                  g_ips[1] > 0 ? g_ips[4] / g_ips[1] : 0.0, g_ips[4]);
    } else {
      follower();
    }
    g_world.reset();
    g_self.reset();
    g_world_blocking.reset();
  }
  MPI_Finalize();
  return 0;
}
