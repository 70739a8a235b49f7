#include "worker/cli.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <mpi.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "comm/communicator.h"
#include "common/check.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/metrics_catalogue.h"
#include "common/metrics_process.h"
#include "common/metrics_server.h"
#include "worker/checkpoint_files.h"
#include "worker/coordinator_link.h"
#include "worker/device.h"
#include "data/shard_index.h"
#include "worker/fcmae_model.h"
#include "worker/host_network.h"
#include "worker/lease_source.h"
#include "worker/peer_watchdog.h"
#include "worker/signals.h"
#include "worker/trainer.h"

namespace cnx::worker {
namespace {

const char* kExitCodesHelp =
    "Exit codes: 0 completed, 1 error, 2 usage/config error, 3 preempted (checkpoint written; "
    "resume with --resume auto), 4 aborted by the coordinator, 5 stopped on non-finite loss, 6 a peer rank was lost "
    "(no collective progress for distributed.peer_timeout_s).";

// Prometheus exporter of one rank; absent when metrics.enabled is false.
struct RankMetrics {
  std::shared_ptr<metrics::Registry> registry = std::make_shared<metrics::Registry>();
  std::unique_ptr<metrics::WorkerMetrics> worker;
  std::shared_ptr<metrics::ProcessCollector> process;
  std::unique_ptr<metrics::MetricsServer> server;
  std::map<std::string, int64_t> skipped_seen;  // BatchSource::skipped_by_reason() at the last observe

  RankMetrics(const Config& config, const comm::Communicator& comm) {
    worker = std::make_unique<metrics::WorkerMetrics>(*registry, config.job.id, comm.rank(), 0);
    process = std::make_shared<metrics::ProcessCollector>(worker->labels());
    server = std::make_unique<metrics::MetricsServer>(config.metrics.listen_host,
                                                      static_cast<int>(config.metrics.worker_port) + comm.local_rank());
    server->RegisterCollectable(registry);
    server->RegisterCollectable(process);
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
    if (r.checkpointed) m.checkpoint_write_seconds.Observe(r.checkpoint_seconds);
    for (const auto& [reason, count] : t.data().skipped_by_reason()) {
      int64_t& seen = skipped_seen[reason];
      if (count > seen) m.corrupt_samples(reason).Increment(static_cast<double>(count - seen));
      seen = count;
    }
  }
};

// The coordinator as the trainer's control plane.
class CoordinatorControl final : public ControlPlane {
 public:
  explicit CoordinatorControl(CoordinatorLink& link) : link_(link) {}
  int64_t due_plan_id(int64_t next_step) override {
    const CoordinatorPlan p = link_.due_plan(next_step);
    if (p.id > 0) known_[p.id] = p;
    return p.id;
  }
  bool abort_requested() override { return link_.abort_requested(); }
  bool drain_requested() override { return link_.drain_requested(); }
  void on_step(int64_t step, int64_t epoch, double loss, double images_per_s, bool preempted) override {
    link_.set_progress(step, epoch, loss, images_per_s, preempted);
  }
  void finishing(int64_t final_step) override { link_.set_final_step(final_step); }
  std::string plan_dir(int64_t id) override {
    auto it = known_.find(id);
    CNX_CHECK(it != known_.end(), "checkpoint plan ", id, " is unknown to this rank");
    return it->second.dir;
  }
  void report_part(int64_t id, int64_t step, const Manifest& files, int64_t epoch, const std::string& cursor) override {
    const bool committed = link_.report_part(known_.at(id), step, files, epoch, cursor);
    if (committed) CNX_LOG_INFO("checkpoint plan {} (step {}) committed by the coordinator", id, step);
    known_.erase(id);
  }

 private:
  CoordinatorLink& link_;
  std::map<int64_t, CoordinatorPlan> known_;
};

// One id shared by the ranks of this launch (rank 0 draws it).
std::string launch_id(comm::Communicator& comm) {
  std::string mine;
  if (comm.rank() == 0) {
    std::random_device rd;
    char buf[40];
    std::snprintf(buf, sizeof(buf), "%08x%08x-%d", rd(), rd(), static_cast<int>(::getpid()));
    mine = buf;
  }
  return comm.allgather(mine)[0];
}

int fail(int code, int world, const std::string& msg) {
  CNX_LOG_ERROR("{}", msg);
  std::cerr << "cnx-worker: " << msg << "\n";
  if (world > 1) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Abort(MPI_COMM_WORLD, code);
  }
  return code;
}

// A peer rank is gone (PeerWatchdog): end this rank with code 6; mpirun
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
  app.add_option("--resume", args->resume, "auto (latest committed checkpoint) | none | PATH (default: checkpoint.resume)");
  app.add_option("--threads", args->threads, "intra-op threads per rank (default: train.threads; 0 = cores / local ranks)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-steps", args->max_steps, "stop after this many steps (default: schedule.max_steps)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--synthetic", args->synthetic, "train on deterministic random images instead of data.index");
  app.add_option("--synthetic-samples", args->synthetic_samples, "size of the synthetic data set")
      ->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitConfig;
  }
  return -1;
}

int run_worker(const WorkerArgs& args) {
  Config config;
  try {
    std::vector<std::string> overrides = args.overrides;
    if (args.max_steps >= 0) overrides.push_back("schedule.max_steps=" + std::to_string(args.max_steps));
    if (args.threads >= 0) overrides.push_back("train.threads=" + std::to_string(args.threads));
    config = load_config(args.config, overrides);
  } catch (const ConfigError& e) {
    std::cerr << "cnx-worker: " << e.what() << "\n";
    return kExitConfig;
  }
  LinkOptions link_options;
  if (!args.coordinator.empty()) {
    try {
      link_options = link_options_from_config(config, args.coordinator);
    } catch (const ConfigError& e) {
      std::cerr << "cnx-worker: " << e.what() << "\n";
      return kExitConfig;
    }
  }

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
    CNX_LOG_INFO("job {}: {} ranks x {} threads, backend {}, model {}, {} data", config.job.id, world, threads,
                 comm->backend_name(), config.model.name, args.synthetic ? "synthetic" : "shard");
  }

  std::unique_ptr<CoordinatorLink> link;
  std::unique_ptr<CoordinatorControl> control;
  std::string resume_how = args.resume.empty() ? config.checkpoint.resume : args.resume;
  bool lease_mode = false;  // shard data from the coordinator's leases
  try {
    if (!args.coordinator.empty()) {
      link = std::make_unique<CoordinatorLink>(link_options, config.job.id, rank, world, launch_id(*comm));
      const CoordinatorRegistration reg = link->register_and_wait();
      if (rank == 0) {
        CNX_LOG_INFO("registered with coordinator {} (attempt {}); last committed checkpoint: {}", args.coordinator,
                     reg.attempt, reg.resume_dir.empty() ? "none" : reg.resume_dir);
      }
      // With a coordinator, "auto" means its last committed checkpoint. With
      // leased data nothing else is consistent: the coordinator's sequences
      // start after the data that checkpoint recorded as used.
      if (resume_how == "auto") resume_how = reg.resume_dir.empty() ? "none" : reg.resume_dir;
      if (!args.synthetic && resume_how != (reg.resume_dir.empty() ? "none" : reg.resume_dir)) {
        return fail(kExitConfig, world,
                    reg.resume_dir.empty()
                        ? str("--resume ", resume_how, ": job '", config.job.id,
                              "' has no committed checkpoint at the coordinator, whose shard leases start from "
                              "scratch; use --resume auto (or another job.id)")
                        : str("--resume ", resume_how, ": with --coordinator a job resumes from its last committed "
                              "checkpoint ", reg.resume_dir, " (the shard leases continue from there); use --resume "
                              "auto, or a new job.id to start over"));
      }
      if (rank == 0 && !reg.resume_dir.empty() && reg.resume_world_size != world) {
        CNX_LOG_WARN("resuming a checkpoint written by {} ranks with {}: the epoch's unused samples are re-dealt "
                     "(none is used twice), the step count is rescaled to the new global batch; not bit-exact",
                     reg.resume_world_size, world);
      }
      lease_mode = !args.synthetic;
      // A rank blocked in an all-reduce with a stalled peer cannot reach the
      // step boundary where ABORT is handled: end the whole job instead.
      link->set_abort_watchdog(std::max(10.0, 5.0 * reg.heartbeat_s), [world](const std::string& why) {
        fail(kExitAborted, world, "aborted by the coordinator: " + why);
        std::_Exit(kExitAborted);
      });
      link->start_heartbeats(reg.heartbeat_s);
      control = std::make_unique<CoordinatorControl>(*link);
    }
  } catch (const std::exception& e) {
    return fail(kExitError, world, std::string("coordinator: ") + e.what());
  }

  // Metrics are an observer: a rank whose exporter cannot start logs it and
  // trains on (losing /metrics must not cost a training job).
  std::unique_ptr<RankMetrics> metrics;
  try {
    if (config.metrics.enabled) metrics = std::make_unique<RankMetrics>(config, *comm);
  } catch (const std::exception& e) {
    CNX_LOG_ERROR("metrics exporter not started, training continues without /metrics: {}", e.what());
  }

  try {
    std::unique_ptr<BatchSource> data;
    if (args.synthetic) {
      SyntheticOptions so;
      so.samples = args.synthetic_samples;
      so.image_size = config.data.input_size;
      so.batch_size = config.data.batch_size;
      so.seed = static_cast<uint64_t>(config.job.seed);
      so.rank = rank;
      so.world = world;
      data = std::make_unique<SyntheticSource>(so);
    } else {
      if (config.data.index.empty()) {
        return fail(kExitConfig, world, "data.index is empty: set it (--set data.index=PATH) or pass --synthetic");
      }
      const data::DataOptions dopt = data::data_options(config.data, config.job.seed, true);
      if (lease_mode) {
        data = std::make_unique<LeaseSource>(dopt, *link);
      } else {
        data = std::make_unique<ShardSource>(dopt, rank, world);
      }
    }
    TrainerOptions topt = trainer_options(config);
    // Leased data may resume at another world size (the coordinator re-deals).
    topt.allow_world_change = lease_mode;
    topt.device = comm->device();
    Trainer trainer(topt, *comm, make_fcmae_model(config), std::move(data));
    if (control) trainer.set_control_plane(control.get());
    trainer.resume(resume_how);

    comm::GradSyncStats last_sync;
    const RunOutcome outcome = trainer.run([&](const StepResult& r) {
      if (metrics) metrics->observe(r, trainer, trainer.grad_sync().stats(), &last_sync);
    });
    comm->barrier();
    if (outcome == RunOutcome::kPreempted) return kExitPreempted;
    if (outcome == RunOutcome::kAborted) {
      if (rank == 0) CNX_LOG_ERROR("coordinator: {}", link ? link->reason() : "abort");
      return kExitAborted;
    }
    if (outcome == RunOutcome::kDrained) return kExitOk;
    if (link) link->report_finished();
    if (rank == 0) CNX_LOG_INFO("training completed: {} steps", trainer.steps_done());
    return kExitOk;
  } catch (const CoordinatorUnreachable& e) {
    return fail(kExitAborted, world, std::string("stopped: ") + e.what());
  } catch (const NonFiniteLossError& e) {
    if (link) link->report_failed(e.what());
    return fail(kExitNonFinite, world, std::string("stopped: ") + e.what());
  } catch (const ConfigError& e) {
    return fail(kExitConfig, world, e.what());
  } catch (const CheckpointError& e) {
    return fail(kExitError, world, std::string("checkpoint: ") + e.what());
  } catch (const data::DataError& e) {
    return fail(kExitError, world, std::string("data: ") + e.what());
  } catch (const std::exception& e) {
    if (link) link->report_failed(e.what());
    return fail(kExitError, world, e.what());
  }
}

}  // namespace cnx::worker
