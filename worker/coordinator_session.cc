// The coordinator link of a build with gRPC (CNX_WITH_COORDINATOR=ON).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>

#include "comm/communicator.h"
#include "common/check.h"
#include "common/config.h"
#include "common/logging.h"
#include "worker/coordinator_session.h"
#include "worker/coordinator_voice.h"
#include "worker/host_speaker.h"
#include "worker/trainer.h"

namespace cnx::worker {
namespace {

// The coordinator as the trainer's control plane. report_part runs on the
// checkpoint writer thread, the rest on the training thread: `known_` is
// guarded.
class CoordinatorControl final : public ControlPlane {
 public:
  explicit CoordinatorControl(CoordinatorLink& link) : link_(link) {}
  int64_t due_plan_id(int64_t next_step) override {
    const CoordinatorPlan p = link_.due_plan(next_step);
    if (p.id > 0) {
      std::lock_guard<std::mutex> lock(mu_);
      known_[p.id] = p;
    }
    return p.id;
  }
  bool abort_requested() override { return link_.abort_requested(); }
  bool drain_requested() override { return link_.drain_requested(); }
  void on_step(int64_t step, int64_t epoch, double loss, double images_per_s, bool preempted) override {
    link_.set_progress(step, epoch, loss, images_per_s, preempted);
  }
  void finishing(int64_t final_step) override { link_.set_final_step(final_step); }
  std::string plan_dir(int64_t id) override { return plan(id).dir; }
  void report_part(int64_t id, int64_t step, const Manifest& files, int64_t epoch, const std::string& cursor) override {
    const bool committed = link_.report_part(plan(id), step, files, epoch, cursor);
    if (committed) CNX_LOG_INFO("checkpoint plan {} (step {}) committed by the coordinator", id, step);
    std::lock_guard<std::mutex> lock(mu_);
    known_.erase(id);
  }

 private:
  CoordinatorPlan plan(int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = known_.find(id);
    CNX_CHECK(it != known_.end(), "checkpoint plan ", id, " is unknown to this rank");
    return it->second;
  }

  CoordinatorLink& link_;
  std::mutex mu_;
  std::map<int64_t, CoordinatorPlan> known_;
};

class GrpcSession final : public CoordinatorSession {
 public:
  explicit GrpcSession(std::unique_ptr<CoordinatorLink> link) : link_(std::move(link)), control_(*link_) {}
  ControlPlane& control() override { return control_; }
  LeaseClient& leases() override { return *link_; }
  std::string reason() const override { return link_->reason(); }
  void report_finished() override { link_->report_finished(); }
  void report_failed(const std::string& message) override { link_->report_failed(message); }
  CoordinatorLink& link() { return *link_; }

 private:
  std::unique_ptr<CoordinatorLink> link_;
  CoordinatorControl control_;
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

// This rank's voice (coordinator.protocol): its host's speaker unless the
// job asks for the per-rank protocol or its ranks do not form consistent
// hosts (collective: every rank decides the same).
std::unique_ptr<CoordinatorVoice> choose_voice(const LinkOptions& options, const Config& config,
                                               const std::string& launch, comm::Communicator& comm) {
  const std::string& protocol = config.coordinator.protocol;
  if (protocol == "rank") return make_rank_voice(options);
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  const std::string advertised = options.host.empty() ? std::string(name) : options.host;
  HostVoiceOptions o;
  o.plan = plan_hosts(comm.allgather(host_entry(advertised, comm.local_rank(), comm.local_size())), comm.rank());
  if (!o.plan.valid) {
    if (protocol == "host") throw ConfigError("coordinator.protocol: host, but " + o.plan.why);
    if (comm.rank() == 0)
      CNX_LOG_WARN("host speakers not elected ({}): every rank talks to the coordinator", o.plan.why);
    return make_rank_voice(options);
  }
  o.link = options;
  o.job_id = config.job.id;
  o.launch_id = launch;
  o.world = comm.size();
  o.strict = protocol == "host";
  if (comm.rank() == 0)
    CNX_LOG_INFO("coordinator protocol: one speaker per host ({} hosts for {} ranks)", o.plan.hosts, comm.size());
  return make_host_voice(o, comm.rank());
}

}  // namespace

bool coordinator_link_built() {
  return true;
}

LinkOptions coordinator_options(const Config& config, const std::string& target) {
  return link_options_from_config(config, target);
}

CoordinatorJoin join_coordinator(const LinkOptions& options, const Config& config, bool synthetic,
                                 std::string resume_how, comm::Communicator& comm,
                                 std::function<void(const std::string& why)> on_stuck) {
  const int rank = comm.rank(), world = comm.size();
  const std::string launch = launch_id(comm);
  auto session = std::make_unique<GrpcSession>(std::make_unique<CoordinatorLink>(
      options, config.job.id, rank, world, launch, choose_voice(options, config, launch, comm)));
  CoordinatorLink& link = session->link();
  const CoordinatorRegistration reg = link.register_and_wait();
  if (rank == 0) {
    CNX_LOG_INFO("registered with coordinator {} (attempt {}, {}); last committed checkpoint: {}", options.target,
                 reg.attempt, link.voice().describe(), reg.resume_dir.empty() ? "none" : reg.resume_dir);
  }
  // With a coordinator, "auto" means its last committed checkpoint. With
  // leased data nothing else is consistent: the coordinator's sequences
  // start after the data that checkpoint recorded as used.
  const std::string committed = reg.resume_dir.empty() ? "none" : reg.resume_dir;
  if (resume_how == "auto") resume_how = committed;
  if (!synthetic && resume_how != committed) {
    throw ConfigError(reg.resume_dir.empty()
                          ? str("--resume ", resume_how, ": job '", config.job.id,
                                "' has no committed checkpoint at the coordinator, whose shard leases start from "
                                "scratch; use --resume auto (or another job.id)")
                          : str("--resume ", resume_how,
                                ": with --coordinator a job resumes from its last committed "
                                "checkpoint ",
                                reg.resume_dir,
                                " (the shard leases continue from there); use --resume "
                                "auto, or a new job.id to start over"));
  }
  if (rank == 0 && !reg.resume_dir.empty() && reg.resume_world_size != world) {
    CNX_LOG_WARN(
        "resuming a checkpoint written by {} ranks with {}: the epoch's unused samples are re-dealt "
        "(none is used twice), {}; not bit-exact",
        reg.resume_world_size, world,
        config.optimizer.global_batch > 0
            ? "the global batch stays optimizer.global_batch = " + std::to_string(config.optimizer.global_batch) +
                  " (more or fewer accumulation steps), and so do the peak lr and the schedule"
            : std::string("the step count is rescaled to the new global batch (set optimizer.global_batch to keep "
                          "it)"));
  }
  // A rank blocked in an all-reduce with a stalled peer cannot reach the
  // step boundary where ABORT is handled: end the whole job instead.
  link.set_abort_watchdog(std::max(10.0, 5.0 * reg.heartbeat_s), std::move(on_stuck));
  link.start_heartbeats(reg.heartbeat_s);
  CoordinatorJoin join;
  join.resume_how = resume_how;
  join.lease_mode = !synthetic;
  join.session = std::move(session);
  return join;
}

}  // namespace cnx::worker
