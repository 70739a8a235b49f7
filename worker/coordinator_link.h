#pragma once
// One rank's connection to the coordinator (docs/protocols.md):
// registration, a heartbeat thread that reports progress and receives
// instructions (checkpoint plan, abort, drain), and checkpoint parts.
//
// The trainer never blocks on the coordinator inside a step: the heartbeat
// thread stores the latest instruction; the training thread reads it
// (thread-safe accessors) and puts it into the step's control values, so
// every rank acts on it in the same step (trainer.h). A checkpoint plan is
// acted on only once every rank has heard the same plan (the protocol allows
// any step >= the planned one, agreed among the workers).
//
// The calls go through a CoordinatorVoice (coordinator_voice.h): the rank's
// own (per-rank protocol) or its host's speaker (host protocol); the link's
// behaviour is the same with either.
//
// Data: the link is LeaseSource's LeaseClient (AcquireShard /
// ReportShardDone, retried by the client while the coordinator restarts);
// report_part() derives the rank's RankProgress from its lease cursor. A rank
// whose data is not leased (synthetic data) reports {epoch, next_position 0}.
//
// No LibTorch here (gRPC and torch stay in separate translation units).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "worker/checkpoint_files.h"
#include "worker/lease_protocol.h"

namespace cnx {
struct Config;
}  // namespace cnx

namespace cnx::worker {

class CoordinatorVoice;  // coordinator_voice.h: per-rank or through the host's speaker

// The coordinator stayed unreachable for LinkOptions::unreachable_s while the
// job ran (a lease or checkpoint call gave up). cnx-worker ends with exit 204;
// a relaunch resumes from the last committed checkpoint.
class CoordinatorUnreachable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where and how to reach the coordinator.
struct LinkOptions {
  std::string target;  // HOST:PORT
  std::string token;
  std::string tls_ca, tls_cert, tls_key;
  // Longest time calls keep retrying an unreachable coordinator
  // (coordinator.unreachable_s). Registration then fails with an error that
  // names the address; once training, the link requests an abort (exit 204).
  double unreachable_s = 120.0;
  std::string host;  // advertised to the coordinator; "" = this host's name
  // Every folder the coordinator names (checkpoint plans, the resume
  // checkpoint) must lie inside it (confined_to_root); a reply naming another
  // folder is refused: at registration it throws CheckpointError, in a
  // heartbeat it aborts the run.
  std::string checkpoint_root;
};

// From coordinator.* of the config (token from token_file / token_env).
// Throws cnx::ConfigError naming the key when the token cannot be loaded.
LinkOptions link_options_from_config(const Config& config, const std::string& target);

struct CoordinatorPlan {
  int64_t id = 0;
  int64_t step = 0;
  std::string dir;
};

struct CoordinatorRegistration {
  int64_t attempt = 0;
  double heartbeat_s = 2.0;
  std::string resume_dir;  // "" = nothing committed yet
  int64_t resume_step = 0;
  int resume_world_size = 0;  // ranks that wrote the checkpoint
  int64_t start_epoch = 0;    // the epoch this rank's leases start in
};

class CoordinatorLink final : public LeaseClient {
 public:
  // Per-rank protocol (the rank's own client).
  CoordinatorLink(const LinkOptions& options, std::string job_id, int rank, int world, std::string launch_id);
  // Through `voice` (e.g. the host speaker's, worker/host_speaker.h).
  CoordinatorLink(const LinkOptions& options, std::string job_id, int rank, int world, std::string launch_id,
                  std::unique_ptr<CoordinatorVoice> voice);
  ~CoordinatorLink() override;  // stops the heartbeat thread
  CoordinatorLink(const CoordinatorLink&) = delete;
  CoordinatorLink& operator=(const CoordinatorLink&) = delete;

  // Registers this rank, then waits (heartbeating) until the job is RUNNING,
  // i.e. every rank of this launch registered. Throws coordinator::RpcError.
  CoordinatorRegistration register_and_wait();
  void start_heartbeats(double period_s);

  // Abort watchdog. The training thread acts on an ABORT at its next step
  // boundary; a rank blocked in a collective with a stalled peer never gets
  // there. If the step has not advanced `grace_s` seconds after the ABORT was
  // heard, the heartbeat thread calls `on_stuck` (cnx-worker: Communicator::abort with
  // exit code 204, so mpirun tears the job down instead of hanging). Set before
  // start_heartbeats.
  void set_abort_watchdog(double grace_s, std::function<void(const std::string& reason)> on_stuck);

  // Progress for the next heartbeat (training thread).
  void set_progress(int64_t step, int64_t epoch, double loss, double samples_per_s, bool preempted);

  // Training ended at `step`: heartbeats now ask for the final checkpoint
  // plan (HeartbeatRequest.final_step), starting with one sent at once.
  void set_final_step(int64_t step);

  // The latest plan heard whose step is <= next_step (0 id when none).
  CoordinatorPlan due_plan(int64_t next_step) const;
  bool abort_requested() const { return abort_.load(); }
  bool drain_requested() const { return drain_.load(); }
  std::string reason() const;

  // Reports this rank's written part of `plan` at `step`; true once committed.
  bool report_part(const CoordinatorPlan& plan, int64_t step, const Manifest& files, int64_t epoch,
                   const std::string& cursor);
  // LeaseClient (training thread). Throws coordinator::RpcError.
  LeaseGrant acquire(int64_t epoch, int64_t position) override;
  void done(int64_t epoch, int64_t position, int64_t consumed) override;

  // Final status (best effort; errors are logged, not thrown).
  void report_finished();
  void report_failed(const std::string& message);

  int64_t attempt() const { return attempt_; }
  CoordinatorVoice& voice() { return *voice_; }

 private:
  void heartbeat_once(int status, const std::string& message);
  // Runs a client call; an unreachable coordinator becomes CoordinatorUnreachable.
  template <class Fn>
  auto reach(const char* what, Fn fn) -> decltype(fn());
  void loop(double period_s);

  std::unique_ptr<CoordinatorVoice> voice_;
  std::string target_, host_;
  double unreachable_s_;
  std::string job_id_, launch_id_;
  std::string options_root_;  // LinkOptions::checkpoint_root
  int rank_, world_;
  int64_t attempt_ = 0;
  int64_t lease_epoch_ = 0;  // RegisterReply.start_epoch

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int64_t step_ = 0, epoch_ = 0;
  double loss_ = 0, samples_per_s_ = 0;
  bool preempted_ = false;
  int64_t final_step_ = 0;
  bool wake_ = false;  // heartbeat now
  std::optional<CoordinatorPlan> plan_;
  std::set<int64_t> done_;  // plans this rank already wrote (never written twice)
  std::string reason_;
  std::atomic<bool> abort_{false}, drain_{false};
  double abort_grace_s_ = 0;
  std::function<void(const std::string&)> on_stuck_abort_;
  std::thread thread_;
};

}  // namespace cnx::worker
