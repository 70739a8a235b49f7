// Checkpoint overhead of FCMAE training: the same steps without checkpoints
// (baseline), with synchronous checkpoints (the step waits for the write)
// and with background checkpoints (checkpoint.async: snapshot, then the
// writer thread), measured in the same run, in interleaved rounds.
//
//   build/bench/worker/worker_checkpoint_bench [--model atto] [--size 224] [--batch 8]
//       [--every 5] [--checkpoints 4] [--rounds 2] [--threads 1] [--root DIR]
//
// One rank (comm::make_communicator; no mpirun needed). Each phase trains
// checkpoints * every + every - 1 steps on synthetic images with a local
// checkpoint every `every` steps (the last one's write overlaps the steps
// after it), timing the steps only. Counters per phase:
//   ms_per_step      wall time per step
//   extra_s_per_ckpt (phase time - baseline time) / checkpoints
//   stall_ms         mean time a checkpoint held up its step (StepResult::checkpoint_seconds)
//   write_s          mean time from snapshot to commit (StepResult::checkpoint_write_seconds)
//   snapshot_mb      state copied per checkpoint (async) or referenced (sync)
// The program prints, per mode, the overhead at the measured cadence and at
// one checkpoint per 30 minutes (the configs' default), and the stall as a
// share of a baseline step. Medians over rounds.
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "bench/worker/bench_util.h"
#include "comm/communicator.h"
#include "common/blas_info.h"
#include "common/config.h"
#include "common/logging.h"
#include "model/onednn_matmul.h"
#include "worker/fcmae_model.h"
#include "worker/trainer.h"

using cnx::bench::median;

namespace {

struct Args {
  std::string model = "atto";
  int64_t size = 224;
  int64_t batch = 8;
  int64_t every = 5;
  int64_t checkpoints = 4;
  int64_t rounds = 2;
  int64_t threads = 1;
  std::string root = (std::filesystem::temp_directory_path() / "cnx_checkpoint_bench").string();
} g_args;

std::unique_ptr<cnx::comm::Communicator> g_comm;

enum Mode { kNone = 0, kSync = 1, kAsync = 2 };
const char* mode_name(int m) {
  return m == kNone ? "none" : m == kSync ? "sync" : "async";
}

struct PhaseResult {
  double seconds = 0, stall_s = 0, write_s = 0;
  int64_t steps = 0, checkpoints = 0, snapshot_bytes = 0;
};
std::map<int, std::vector<PhaseResult>> g_results;

PhaseResult run_phase(int mode) {
  const cnx::Config c = cnx::bench::trainer_config(g_args.model, g_args.size, g_args.batch);
  const cnx::worker::SyntheticOptions so = cnx::bench::synthetic_options(c, g_comm->rank(), g_comm->size());
  cnx::worker::TrainerOptions o = cnx::worker::trainer_options(c);
  const std::string root = g_args.root + "/" + mode_name(mode);
  std::filesystem::remove_all(root);
  o.checkpoint_root = mode == kNone ? "" : root;
  o.checkpoint_every_steps = mode == kNone ? 0 : g_args.every;
  o.checkpoint_async = mode == kAsync;
  o.checkpoint_keep = 2;
  cnx::worker::Trainer t(o, *g_comm, cnx::worker::make_fcmae_model(c),
                         std::make_unique<cnx::worker::SyntheticSource>(so));
  t.step();  // warm-up (allocator, caches): untimed, before any checkpoint
  PhaseResult r;
  r.steps = g_args.checkpoints * g_args.every + g_args.every - 1;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < r.steps; ++i) {
    const cnx::worker::StepResult s = t.step();
    if (s.checkpointed) {
      ++r.checkpoints;
      r.stall_s += s.checkpoint_seconds;
      r.snapshot_bytes = s.checkpoint_snapshot_bytes;
    } else {
      r.stall_s += s.checkpoint_seconds;  // publishing a write finished earlier
    }
    r.write_s += s.checkpoint_write_seconds;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cnx::worker::StepResult last;
  t.wait_for_checkpoint(&last);  // untimed: the next steps would overlap it
  r.write_s += last.checkpoint_write_seconds;
  std::filesystem::remove_all(root);
  return r;
}

void BM_Checkpoint(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  PhaseResult r;
  for (auto _ : state) {
    r = run_phase(mode);
    state.SetIterationTime(r.seconds);
  }
  g_results[mode].push_back(r);
  state.counters["ms_per_step"] = 1e3 * r.seconds / static_cast<double>(r.steps);
  if (mode != kNone && r.checkpoints > 0) {
    state.counters["stall_ms"] = 1e3 * r.stall_s / static_cast<double>(r.checkpoints);
    state.counters["write_s"] = r.write_s / static_cast<double>(r.checkpoints);
    state.counters["snapshot_mb"] = static_cast<double>(r.snapshot_bytes) / 1e6;
  }
}

void parse(int* argc, char** argv) {
  cnx::bench::take_flags(argc, argv,
                         {{"--model", &g_args.model},
                          {"--size", &g_args.size},
                          {"--batch", &g_args.batch},
                          {"--every", &g_args.every},
                          {"--checkpoints", &g_args.checkpoints},
                          {"--rounds", &g_args.rounds},
                          {"--threads", &g_args.threads},
                          {"--root", &g_args.root}});
}

}  // namespace

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("worker_checkpoint_bench", argc, argv);
  cnx::model::log_gemm_path("worker_checkpoint_bench");
  parse(&argc, argv);
  cnx::log::init("checkpoint-bench", -1, "warn");
  g_comm = cnx::comm::make_communicator(cnx::comm::CommOptions{});
  at::set_num_threads(static_cast<int>(g_args.threads));
  // Interleaved rounds (none, sync, async, none, ...): load drifts on a
  // shared host hit every mode alike.
  for (int64_t round = 0; round < g_args.rounds; ++round) {
    for (int mode : {kNone, kSync, kAsync}) {
      const std::string name =
          std::string("BM_Checkpoint/") + g_args.model + "/round" + std::to_string(round) + "/" + mode_name(mode);
      benchmark::RegisterBenchmark(name.c_str(), BM_Checkpoint)
          ->Arg(mode)
          ->Iterations(1)
          ->UseManualTime()
          ->Unit(benchmark::kSecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();

  std::vector<double> base;
  for (const auto& r : g_results[kNone]) base.push_back(r.seconds / static_cast<double>(r.steps));
  const double step_s = median(base);
  std::printf("model %s %lldx%lld, batch %lld, %lld thread(s), a checkpoint every %lld steps; baseline %.1f ms/step\n",
              g_args.model.c_str(), static_cast<long long>(g_args.size), static_cast<long long>(g_args.size),
              static_cast<long long>(g_args.batch), static_cast<long long>(g_args.threads),
              static_cast<long long>(g_args.every), 1e3 * step_s);
  for (int mode : {kSync, kAsync}) {
    std::vector<double> extra, stall, write, mb;
    const auto& none = g_results[kNone];
    const auto& rs = g_results[mode];
    for (size_t i = 0; i < rs.size() && i < none.size(); ++i) {
      const double n = static_cast<double>(std::max<int64_t>(1, rs[i].checkpoints));
      extra.push_back((rs[i].seconds - none[i].seconds) / n);
      stall.push_back(rs[i].stall_s / n);
      write.push_back(rs[i].write_s / n);
      mb.push_back(static_cast<double>(rs[i].snapshot_bytes) / 1e6);
    }
    const double e = median(extra), cadence_s = static_cast<double>(g_args.every) * step_s;
    std::printf(
        "%-5s: extra %.3f s per checkpoint = %.1f%% at one per %lld steps, %.3f%% at one per 30 min; "
        "stall %.1f ms per checkpoint (%.1f%% of a step); write %.2f s; snapshot %.1f MB\n",
        mode_name(mode), e, 100.0 * e / cadence_s, static_cast<long long>(g_args.every), 100.0 * e / 1800.0,
        1e3 * median(stall), 100.0 * median(stall) / step_s, median(write), median(mb));
  }
  g_comm.reset();
  return 0;
}
