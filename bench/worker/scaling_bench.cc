// Weak scaling of FCMAE training: throughput of N ranks x 1 thread against
// 1 rank x 1 thread, measured in the same run (N = mpirun's -np >= 2; the
// ranks may be on one host or several, e.g. tests/cluster's namespaces).
//
//   mpirun --allow-run-as-root --bind-to core -np 2 build/bench/worker/worker_scaling_bench
//       [--model atto] [--size 224] [--batch 8] [--steps 5] [--rounds 1]
//       [--set key.path=value ...] [--benchmark_format=console]
//
// --rounds R repeats the four timed phases R times (after the warm-up
// round) and prints each round's ratios and their medians: on a shared VM one
// round's 1x1 phase can land in a slow minute, the median of interleaved
// rounds is the figure to quote.
// --set (repeatable) overrides the trainer's config as the programs' --set
// does, e.g. --set distributed.bucket_cap_mb=4.
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

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

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
  int64_t rounds = 1;
  std::vector<std::string> overrides;  // --set
} g_args;

std::unique_ptr<cnx::comm::Communicator> g_world, g_self, g_world_blocking;
// Per round (the warm-up round first): img/s of phases 1..4 in slots 1..4;
// of BM_Train/2 (GradSync's counters on rank 0): the share of the all-reduce
// time behind backward (slot 0), finish()'s wait and the collectives' time in
// ms per step (slots 5, 6).
std::vector<std::array<double, 7>> g_rounds;

std::unique_ptr<cnx::worker::Trainer> make_trainer(cnx::comm::Communicator& comm) {
  const cnx::Config c = cnx::bench::trainer_config(g_args.model, g_args.size, g_args.batch, g_args.overrides);
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
  if (ranks == 1) g_rounds.push_back({0, 0, 0, 0, 0, 0, 0});
  g_rounds.back()[ranks] = images * static_cast<double>(state.iterations()) / seconds;
  if (ranks == 2) {
    const auto st = trainer->grad_sync().stats();
    const double hidden = st.allreduce_seconds > 0 ? 1.0 - st.wait_seconds / st.allreduce_seconds : 0.0;
    g_rounds.back()[0] = hidden;
    const double steps = st.steps > 0 ? static_cast<double>(st.steps) : 1.0;
    g_rounds.back()[5] = 1e3 * st.wait_seconds / steps;
    g_rounds.back()[6] = 1e3 * st.allreduce_seconds / steps;
    state.counters["gs_hidden"] = hidden;
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

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The timed rounds' ratios against the same round's 1x1 phase, and medians.
void report(int size) {
  std::vector<double> sync, nosync, blocking, hidden, synced_vs_unsynced, wait_ms;
  for (size_t r = 1; r < g_rounds.size(); ++r) {
    const auto& g = g_rounds[r];
    if (g[1] <= 0) continue;
    sync.push_back(g[2] / g[1]);
    nosync.push_back(g[3] / g[1]);
    blocking.push_back(g[4] / g[1]);
    hidden.push_back(g[0]);
    synced_vs_unsynced.push_back(g[3] > 0 ? g[2] / g[3] : 0.0);
    wait_ms.push_back(g[5]);
    std::printf(
        "round %zu: 1x1 %.2f img/s; %dx1 %.3f (hidden %.2f; wait %.1f of %.1f ms per step); no sync %.3f; blocking "
        "%.3f; synced/unsynced %.3f\n",
        r, g[1], size, sync.back(), g[0], g[5], g[6], nosync.back(), blocking.back(), synced_vs_unsynced.back());
  }
  std::printf("model %s %lldx%lld, batch %lld per rank, 1 thread per rank, %zu timed round(s), medians:\n",
              g_args.model.c_str(), static_cast<long long>(g_args.size), static_cast<long long>(g_args.size),
              static_cast<long long>(g_args.batch), sync.size());
  std::printf("weak scaling: %dx1 / 1x1 = %.3f; all-reduce hidden behind backward: %.2f; exposed wait %.1f ms/step\n",
              size, median_of(sync), median_of(hidden), median_of(wait_ms));
  std::printf("%d ranks without sync: %.3f x 1x1: the hardware's share of the gap\n", size, median_of(nosync));
  std::printf("%d ranks synced / %d ranks without sync: %.3f\n", size, size, median_of(synced_vs_unsynced));
  std::printf("%d ranks, blocking MPI waits: %.3f x 1x1\n", size, median_of(blocking));
}

void parse(int* argc, char** argv) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strcmp(argv[i], "--set") == 0 && i + 1 < *argc) {
      g_args.overrides.emplace_back(argv[++i]);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  cnx::bench::take_flags(argc, argv,
                         {{"--model", &g_args.model},
                          {"--size", &g_args.size},
                          {"--batch", &g_args.batch},
                          {"--steps", &g_args.steps},
                          {"--rounds", &g_args.rounds}});
  if (g_args.rounds < 1) throw std::invalid_argument("--rounds must be >= 1");
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
  try {
    parse(&argc, argv);
    (void)cnx::bench::trainer_config(g_args.model, g_args.size, g_args.batch, g_args.overrides);  // bad --set: here
  } catch (const std::exception& e) {
    if (rank == 0) std::fprintf(stderr, "worker_scaling_bench: %s\n", e.what());
    MPI_Finalize();
    return 2;
  }
  at::set_num_threads(1);
  {
    auto runtime = cnx::comm::MpiRuntime::acquire();
    g_world = std::make_unique<cnx::comm::MpiCommunicator>(runtime, MPI_COMM_WORLD);
    g_self = std::make_unique<cnx::comm::MpiCommunicator>(runtime, MPI_COMM_SELF);
    g_world_blocking =
        std::make_unique<cnx::comm::MpiCommunicator>(runtime, MPI_COMM_WORLD, cnx::comm::MpiWaitMode::kBlocking);
    if (rank == 0) {
      // A warm-up round of all phases (allocator, caches, page faults), then
      // --rounds timed rounds; the ratios printed come from the timed ones.
      for (int64_t r = 0; r <= g_args.rounds; ++r) {
        const std::string name =
            r == 0 ? "BM_Train/warmup_round/ranks" : "BM_Train/round_" + std::to_string(r) + "/ranks";
        benchmark::RegisterBenchmark(name.c_str(), BM_Train)
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
      report(size);
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
