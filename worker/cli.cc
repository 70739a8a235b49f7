#include "worker/cli.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/communicator.h"
#include "common/blas_info.h"
#include "common/check.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/gpu_metrics.h"
#include "common/logging.h"
#include "common/metrics_catalogue.h"
#include "common/metrics_process.h"
#include "common/metrics_server.h"
#include "data/shard_index.h"
#include "model/onednn_matmul.h"
#include "worker/checkpoint_files.h"
#include "worker/coordinator_session.h"
#include "worker/device.h"
#include "worker/fcmae_model.h"
#include "worker/gpu_device.h"
#include "worker/host_network.h"
#include "worker/lease_source.h"
#include "worker/peer_watchdog.h"
#include "worker/signals.h"
#include "worker/trainer.h"

namespace cnx::worker {
namespace {

const char* kExitCodesHelp =
    "Exit codes: 0 completed, 1 error, 2 usage/config error, 5 stopped on non-finite loss (1-127: permanent); "
    "203 preempted (checkpoint written; resume with --resume auto), 204 aborted by the coordinator or the "
    "coordinator unreachable, 206 a peer rank was lost (no collective progress for distributed.peer_timeout_s) "
    "(128-255: retryable, relaunch with --resume auto).";

// Prometheus exporter of one rank; absent when metrics.enabled is false.
struct RankMetrics {
  std::shared_ptr<metrics::Registry> registry = std::make_shared<metrics::Registry>();
  std::unique_ptr<metrics::WorkerMetrics> worker;
  std::shared_ptr<metrics::ProcessCollector> process;
  std::shared_ptr<metrics::GpuCollector> gpu;  // ranks on a CUDA device only
  std::unique_ptr<metrics::MetricsServer> server;
  std::map<std::string, int64_t> skipped_seen;  // BatchSource::skipped_by_reason() at the last observe

  RankMetrics(const Config& config, const comm::Communicator& comm) {
    worker = std::make_unique<metrics::WorkerMetrics>(*registry, config.job.id, comm.rank(), 0);
    const blas::BlasInfo blas = blas::query_blas();
    // The GEMM path as the rank computes: CUDA on a GPU rank, else the
    // effective CPU path (CNX_GEMM; auto depends on the intra-op threads,
    // set before the metrics are made).
    const std::string gemm = comm.device().is_cuda() ? "cuda" : model::gemm_path_name(model::effective_gemm_path());
    worker->set_blas_info(blas.library, blas.version, blas.core, gemm);
    process = std::make_shared<metrics::ProcessCollector>(worker->labels());
    gpu = make_gpu_collector(comm.device(), worker->labels());
    if (!gpu && comm.rank() == 0) CNX_LOG_INFO("GPU metrics: none (rank 0 trains on {})", comm.device().str());
    server = std::make_unique<metrics::MetricsServer>(config.metrics.listen_host,
                                                      static_cast<int>(config.metrics.worker_port) + comm.local_rank());
    server->RegisterCollectable(registry);
    server->RegisterCollectable(process);
    if (gpu) server->RegisterCollectable(gpu);
  }

  // cnx_worker_gpu_* of the rank's CUDA device (NVML when it loads, the
  // caching allocator always); nullptr for a CPU rank.
  static std::shared_ptr<metrics::GpuCollector> make_gpu_collector(const at::Device& device,
                                                                   const metrics::Labels& labels) {
    if (!device.is_cuda()) return nullptr;
    const int index = device.has_index() ? device.index() : 0;
    const std::optional<std::string> bus = cuda_pci_bus_id(index);
    if (!bus) {
      CNX_LOG_WARN("GPU metrics: CUDA gives no PCI bus id for device {}; no cnx_worker_gpu_* series", index);
      return nullptr;
    }
    std::string why;
    std::shared_ptr<metrics::Nvml> nvml = metrics::Nvml::load(&why);
    auto gpu = std::make_shared<metrics::GpuCollector>(
        labels, *bus, std::move(nvml), [index] { return cuda_allocator_bytes(index); }, why);
    CNX_LOG_INFO("GPU metrics: device {} ({}) from {}", index, *bus, gpu->sources());
    return gpu;
  }

  void observe(const StepResult& r, const Trainer& t, const comm::GradSyncStats& sync, comm::GradSyncStats* last) {
    auto& m = *worker;
    if (std::isfinite(r.loss)) m.loss.Set(r.loss);
    m.lr.Set(r.lr);
    m.step.Set(static_cast<double>(r.step));
    m.epoch.Set(t.schedule().epoch_at(r.step));
    const double images = static_cast<double>(t.options().batch_size * t.options().accum_steps);
    m.samples.Increment(images);
    if (r.times.total() > 0) m.images_per_second.Set(images / r.times.total());
    m.phase(metrics::StepPhase::kDataWait).Observe(r.times.data_wait);
    m.phase(metrics::StepPhase::kForward).Observe(r.times.forward);
    m.phase(metrics::StepPhase::kBackward).Observe(r.times.backward);
    m.phase(metrics::StepPhase::kCommWait).Observe(r.times.comm_wait);
    m.phase(metrics::StepPhase::kOptimizer).Observe(r.times.optimizer);
    m.allreduce_bytes.Increment(static_cast<double>(std::max<int64_t>(0, sync.bytes_reduced - last->bytes_reduced)));
    m.allreduce_seconds.Increment(std::max(0.0, sync.allreduce_seconds - last->allreduce_seconds));
    *last = sync;
    if (std::isfinite(r.grad_norm)) m.grad_norm.Set(r.grad_norm);
    if (r.skipped) m.nonfinite_steps.Increment();
    if (r.checkpoint_seconds > 0) m.checkpoint_stall_seconds.Observe(r.checkpoint_seconds);
    if (r.checkpoint_wait_seconds > 0) m.checkpoint_wait_seconds.Increment(r.checkpoint_wait_seconds);
    if (r.checkpoint_write_seconds > 0) m.checkpoint_write_seconds.Observe(r.checkpoint_write_seconds);
    if (r.checkpoint_snapshot_bytes > 0)
      m.checkpoint_snapshot_bytes.Set(static_cast<double>(r.checkpoint_snapshot_bytes));
    for (const auto& [reason, count] : t.data().skipped_by_reason()) {
      int64_t& seen = skipped_seen[reason];
      if (count > seen) m.corrupt_samples(reason).Increment(static_cast<double>(count - seen));
      seen = count;
    }
  }
};

// Reports `msg`; with peers, ends the whole job with `code` (they may be
// waiting for this rank in a collective).
int fail(int code, comm::Communicator& comm, const std::string& msg) {
  CNX_LOG_ERROR("{}", msg);
  std::cerr << "cnx-worker: " << msg << "\n";
  if (comm.size() > 1) comm.abort(code);
  return code;
}

// A peer rank is gone (PeerWatchdog): end this rank with kExitPeerLost (206); mpirun
// tears down the ranks it can still reach. The coordinator is not told
// "failed" (that ends the job for good): it sees the ranks' heartbeats stop
// and fails the attempt after heartbeat_timeout_s, so a relaunch resumes.
[[noreturn]] void exit_peer_lost(int rank, const std::string& why) {
  const std::string msg = str("rank ", rank, ": ", why, " (exit ", static_cast<int>(kExitPeerLost), ")");
  CNX_LOG_ERROR("{}", msg);
  std::cerr << "cnx-worker: " << msg << std::endl;
  std::_Exit(kExitPeerLost);
}

}  // namespace

int resolve_threads(int64_t requested, int local_ranks) {
  if (requested > 0) return static_cast<int>(requested);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1, static_cast<int>(cores) / std::max(1, local_ranks));
}

int parse_worker_args(int argc, char** argv, WorkerArgs* args) {
  CLI::App app{"cnx-worker: one rank of data-parallel FCMAE pretraining (launch with mpirun)"};
  app.footer(kExitCodesHelp);
  app.add_option("--config", args->config, "job config (YAML)")->required();
  app.add_option("--set", args->overrides, "override a config key: --set optimizer.blr=1e-4 (repeatable)");
  app.add_option("--coordinator", args->coordinator, "coordinator HOST:PORT (shard leases, checkpoint commits)");
  app.add_option("--token-file", args->token_file,
                 "job token file, the coordinator's (overrides coordinator.token_file / token_env)");
  app.add_option("--tls-ca", args->tls_ca, "CA that verifies the coordinator: enables TLS (coordinator.tls_ca)");
  app.add_option("--tls-cert", args->tls_cert, "client certificate for mutual TLS (coordinator.tls_client_cert)");
  app.add_option("--tls-key", args->tls_key, "client key for mutual TLS (coordinator.tls_client_key)");
  app.add_option("--resume", args->resume,
                 "auto (latest committed checkpoint) | none | PATH (default: checkpoint.resume)");
  app.add_option("--threads", args->threads,
                 "intra-op threads per rank (default: train.threads; 0 = cores / local ranks)")
      ->check(cli::non_negative());
  app.add_option("--max-steps", args->max_steps, "stop after this many steps (default: schedule.max_steps)")
      ->check(cli::non_negative());
  app.add_flag("--synthetic", args->synthetic, "train on deterministic random images instead of data.index");
  app.add_option("--synthetic-samples", args->synthetic_samples, "size of the synthetic data set")
      ->check(cli::positive());
  return cli::parse(app, argc, argv, "cnx-worker");
}

namespace {

// The job config with the command line's overrides, and the coordinator's
// link options. Returns -1 to go on, else the exit code (message printed).
int load_worker_config(const WorkerArgs& args, Config* config, LinkOptions* link_options) {
  try {
    cli::ConfigFlags flags{args.config, args.overrides};
    if (args.max_steps >= 0) flags.overrides.push_back("schedule.max_steps=" + std::to_string(args.max_steps));
    if (args.threads >= 0) flags.overrides.push_back("train.threads=" + std::to_string(args.threads));
    cli::set_string(&flags, "coordinator.token_file", args.token_file);
    cli::set_string(&flags, "coordinator.tls_ca", args.tls_ca);
    cli::set_string(&flags, "coordinator.tls_client_cert", args.tls_cert);
    cli::set_string(&flags, "coordinator.tls_client_key", args.tls_key);
    *config = cli::load_config(flags);
    if (!args.coordinator.empty()) *link_options = coordinator_options(*config, args.coordinator);
  } catch (const UsageError& e) {
    std::cerr << "cnx-worker: " << e.what() << "\n";
    return kExitConfig;
  }
  return -1;
}

// The rank's data: synthetic, the coordinator's leases, or a static split.
std::unique_ptr<BatchSource> make_batch_source(const WorkerArgs& args, const Config& config,
                                               const comm::Communicator& comm, CoordinatorJoin& session) {
  if (args.synthetic) {
    SyntheticOptions so;
    so.samples = args.synthetic_samples;
    so.image_size = config.data.input_size;
    so.batch_size = config.data.batch_size;
    so.seed = static_cast<uint64_t>(config.job.seed);
    so.rank = comm.rank();
    so.world = comm.size();
    return std::make_unique<SyntheticSource>(so);
  }
  if (config.data.index.empty())
    throw ConfigError("data.index is empty: set it (--set data.index=PATH) or pass --synthetic");
  const data::DataOptions dopt = data::data_options(config.data, config.job.seed, true);
  if (session.lease_mode) return std::make_unique<LeaseSource>(dopt, session.session->leases());
  return std::make_unique<ShardSource>(dopt, comm.rank(), comm.size());
}

// Builds the trainer, resumes, trains; returns the exit code of the outcome.
int train(const WorkerArgs& args, const Config& config, comm::Communicator& comm, CoordinatorJoin& session,
          RankMetrics* metrics) {
  TrainerOptions topt = trainer_options(config);
  // Leased data may resume at another world size (the coordinator re-deals).
  topt.allow_world_change = session.lease_mode;
  topt.device = comm.device();
  Trainer trainer(topt, comm, make_fcmae_model(config), make_batch_source(args, config, comm, session));
  if (session.session) trainer.set_control_plane(&session.session->control());
  trainer.resume(session.resume_how);

  comm::GradSyncStats last_sync;
  const RunOutcome outcome = trainer.run([&](const StepResult& r) {
    if (metrics) metrics->observe(r, trainer, trainer.grad_sync().stats(), &last_sync);
  });
  comm.barrier();
  switch (outcome) {
    case RunOutcome::kPreempted:
      return kExitPreempted;
    case RunOutcome::kAborted:
      if (comm.rank() == 0) CNX_LOG_ERROR("coordinator: {}", session.session ? session.session->reason() : "abort");
      return kExitAborted;
    case RunOutcome::kDrained:
      return kExitOk;
    case RunOutcome::kCompleted:
      break;
  }
  if (session.session) session.session->report_finished();
  if (comm.rank() == 0) CNX_LOG_INFO("training completed: {} steps", trainer.steps_done());
  return kExitOk;
}

}  // namespace

int run_worker(const WorkerArgs& args) {
  Config config;
  LinkOptions link_options;
  if (const int rc = load_worker_config(args, &config, &link_options); rc >= 0) return rc;

  if (!config.distributed.interface.empty()) {
    try {
      link_options.host = apply_interface(config.distributed.interface).address;
    } catch (const ConfigError& e) {
      std::cerr << "cnx-worker: " << e.what() << "\n";
      return kExitConfig;
    }
  }

  comm::CommOptions copt;
  copt.backend = config.distributed.backend;
  copt.overlap = config.distributed.overlap;
  copt.timeout_s = config.distributed.peer_timeout_s;
  try {
    copt.device_type = train_device_type(config.train.device, at::hasCUDA());
  } catch (const std::invalid_argument& e) {
    std::cerr << "cnx-worker: " << e.what() << "\n";
    return kExitConfig;
  }
  std::unique_ptr<comm::Communicator> comm;
  try {
    comm = comm::make_communicator(copt);
  } catch (const std::exception& e) {
    std::cerr << "cnx-worker: cannot start communication: " << e.what() << "\n";
    return kExitError;
  }
  const int rank = comm->rank(), world = comm->size();
  log::init("worker", rank, config.job.log_level);
  const int threads = resolve_threads(config.train.threads, comm->local_size());
  at::set_num_threads(threads);
  install_termination_handler();
  std::unique_ptr<PeerWatchdog> peer_watchdog;
  if (world > 1 && config.distributed.peer_timeout_s > 0) {
    peer_watchdog = std::make_unique<PeerWatchdog>(
        config.distributed.peer_timeout_s, [c = comm.get()] { return c->seconds_in_collective(); },
        [rank](const std::string& why) { exit_peer_lost(rank, why); });
  }
  if (rank == 0) {
    CNX_LOG_INFO("{}", cli::version_line("cnx-worker"));
    CNX_LOG_INFO("job {}: {} ranks x {} threads, backend {}, model {}, {} data", config.job.id, world, threads,
                 comm->backend_name(), config.model.name, args.synthetic ? "synthetic" : "shard");
    // The start-up line (main.cc) came before the thread count was set, and
    // CNX_GEMM=auto depends on it: this is the path the ranks compute with.
    if (!comm->device().is_cuda()) {
      CNX_LOG_INFO("GEMM path {} at {} thread(s) per rank", model::gemm_path_name(model::effective_gemm_path()),
                   threads);
    }
  }

  CoordinatorJoin session;
  session.resume_how = args.resume.empty() ? config.checkpoint.resume : args.resume;
  if (!args.coordinator.empty()) {
    try {
      comm::Communicator* c = comm.get();
      session =
          join_coordinator(link_options, config, args.synthetic, session.resume_how, *c, [c](const std::string& why) {
            fail(kExitAborted, *c, "aborted by the coordinator: " + why);
            std::_Exit(kExitAborted);
          });
    } catch (const ConfigError& e) {
      return fail(kExitConfig, *comm, e.what());
    } catch (const std::exception& e) {
      return fail(cli::exit_code_of(e), *comm, "coordinator: " + cli::message_of(e));
    }
  }

  // Metrics are an observer: a rank whose exporter cannot start logs it and
  // trains on (losing /metrics must not cost a training job).
  std::unique_ptr<RankMetrics> metrics;
  try {
    if (config.metrics.enabled) metrics = std::make_unique<RankMetrics>(config, *comm);
  } catch (const std::exception& e) {
    CNX_LOG_ERROR("metrics exporter not started, training continues without /metrics: {}", e.what());
  }

  CoordinatorSession* link = session.session.get();
  try {
    return train(args, config, *comm, session, metrics.get());
  } catch (const CoordinatorUnreachable& e) {
    return fail(kExitAborted, *comm, std::string("stopped: ") + e.what());
  } catch (const NonFiniteLossError& e) {
    if (link) link->report_failed(e.what());
    return fail(kExitNonFinite, *comm, std::string("stopped: ") + e.what());
  } catch (const ConfigError& e) {
    return fail(kExitConfig, *comm, e.what());
  } catch (const CheckpointError& e) {
    return fail(kExitError, *comm, std::string("checkpoint: ") + e.what());
  } catch (const data::DataError& e) {
    return fail(kExitError, *comm, std::string("data: ") + e.what());
  } catch (const std::exception& e) {
    if (link) link->report_failed(e.what());
    return fail(cli::exit_code_of(e), *comm, cli::message_of(e));
  }
}

}  // namespace cnx::worker
