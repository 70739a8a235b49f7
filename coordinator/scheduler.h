#pragma once
// The coordinator's job state machine: membership, attempts, shard leases,
// checkpoint plans and commits. Pure logic: no I/O, no clock, no threads.
// Every call takes `now` (unix seconds); the caller (the gRPC service)
// serialises calls with one mutex and persists take_changes() durably
// before replying.
//
// Job life cycle
//   WAITING (ranks of attempt a registering) -> RUNNING (all W registered)
//   RUNNING -> RESTARTING  a rank is lost (no heartbeat for heartbeat_timeout_s),
//                          stalled (step unchanged for stall_s), let a lease
//                          expire, or a new launch registered. Every rank of
//                          the failed attempt is told ABORT.
//   any     -> WAITING     a registration with a new launch_id opens attempt
//                          a+1; every call of attempt a is then refused
//                          (fencing, ErrorCode::kStale).
//   RUNNING -> STOPPED     drain (after the drain checkpoint commits) or stop.
//   RUNNING -> COMPLETED   every rank reported WORKER_FINISHED.
//   any     -> FAILED      a rank reported WORKER_FAILED.
//
// Data assignment rule (docs/protocols.md)
//   * Epoch plan. For epoch e and world size W, the shards with samples > 0
//     are permuted by a seeded Fisher-Yates shuffle (splitmix64 of seed and
//     e, portable); the i-th shard of that order is work item (shard, 0, n)
//     for rank i mod W, at position floor(i / W) of that rank's sequence.
//   * A rank asks AcquireShard(e) and receives its next item in order; the
//     lease (epoch, position, item, deadline) is the durable record of what
//     it holds. Nothing depends on RPC timing: items are never handed to
//     another rank within an attempt (a lost rank ends the attempt).
//   * At a checkpoint each rank reports its progress: its epoch, next
//     position, and for leases it had started but not used up, how many
//     samples (a prefix from the lease's start) are used. A commit snapshots
//     the progress of every rank together with the plans it refers to.
//   * New attempt with the committed world size W: each rank's sequence for
//     its epoch becomes [unused tails of its partial items, its untouched
//     items], in plan order; later epochs keep their plans. Same samples, same
//     order: a bit-exact replay is possible.
//   * New attempt with another world size W': for every epoch from the
//     lowest epoch of the committed ranks up to the last planned one, the unused pieces
//     (partial tails and untouched items of ranks not past that epoch) are
//     sorted by (permutation order, start) and dealt round-robin to the new
//     ranks; all ranks start at the lowest epoch. Used samples are never
//     handed out again, so each sample is used at most once per epoch; the
//     samples a rank leaves when it moves to the next epoch (drop_last) are
//     counted in unused_samples, which is reported.
//   * Work after the committed checkpoint is redone identically; work before
//     it is never redone. Without a commit, the job restarts from epoch 0.
//
// Checkpoint protocol
//   The coordinator plans a checkpoint (every_steps, every_minutes, operator
//   request, preemption or drain) at a step S ahead of every rank's last
//   reported step, in folder <root>/<job>/ckpt-<id>-step-<S>. Cadence:
//   with every_steps N, S is a multiple of N (in the attempt's step
//   numbering), planned when it is one to two margins ahead of the fastest
//   rank (margin: two heartbeat intervals at its rate, plus one step); with
//   every_minutes, S is the step the fastest rank reaches when the interval
//   since the last commit ends, planned likewise. Heartbeat
//   replies carry the plan. Each rank writes its files there at the same
//   step (>= S, agreed among the workers), fsyncs, and reports the files'
//   sha256s and its progress; the W-th part commits the checkpoint. Only
//   committed checkpoints are resumed from. After a commit, committed
//   checkpoints beyond the newest `keep` and abandoned plans are handed to
//   the caller for deletion (take_deletions()).
//   Final checkpoint: a rank that has done its last step heartbeats
//   final_step = its step; unless a checkpoint of this attempt is committed
//   at or beyond it, the coordinator plans one at exactly that step
//   (abandoning a pending plan beyond it, which no rank can reach).
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "coordinator/scheduler_types.h"
#include "data/shard_index.h"

namespace cnx::coordinator {

using data::ShardIndex;
using data::ShardInfo;

enum class ErrorCode { kInvalidArgument, kStale, kNotFound, kFailedPrecondition };

// Expected failures of a call; the service maps them to gRPC codes.
class SchedulerError : public std::runtime_error {
 public:
  SchedulerError(ErrorCode code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// Ranges of the numbers a worker reports; beyond them a call is refused
// with kInvalidArgument, so step arithmetic cannot overflow (2^40 steps is
// far beyond any schedule: 800 epochs of ImageNet at batch 1 are 1e9).
constexpr int64_t kMaxStep = int64_t{1} << 40;
constexpr int64_t kMaxEpoch = 1'000'000;  // schedule.epochs' own upper bound

struct SchedulerOptions {
  std::string job_id = "cnx-job";
  int64_t seed = 0;
  int world_size = 0;         // 0: learned from the first registration of each attempt
  int max_world_size = 4096;  // registrations announcing more ranks are refused
  // AcquireShard asks for epochs below this (ceil(schedule.epochs) plus two
  // of read-ahead and rounding slack; see epoch_limit()); 0 = kMaxEpoch.
  int64_t max_epochs = 0;
  double heartbeat_s = 2.0;
  double heartbeat_timeout_s = 30.0;
  double lease_s = 600.0;
  double stall_s = 120.0;
  std::string checkpoint_root = "runs/checkpoints";
  int64_t every_steps = 0;
  double every_minutes = 0.0;
  int64_t keep = 3;
};

// The max_epochs a schedule of `epochs` (schedule.epochs) allows:
// ceil(epochs) + 2, capped at kMaxEpoch.
int64_t epoch_limit(double epochs);

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, ShardIndex index);

  // Rebuilds a scheduler from the rows of take_changes() (key -> JSON; the
  // rows and their checks: scheduler_rows.cc). The in-memory liveness of
  // every registered rank restarts at `now`. Every row
  // is validated (known kind, parseable, values in range, references to
  // plans, checkpoints and shards that exist); a damaged or tampered row
  // throws cnx::CheckError naming it, so the coordinator refuses to start
  // rather than crash or misbehave later.
  static Scheduler restore(SchedulerOptions options, ShardIndex index, const std::map<std::string, std::string>& rows,
                           double now);

  RegisterResult register_worker(const std::string& job_id, int rank, int world_size, const std::string& host,
                                 const std::string& launch_id, double now);
  HeartbeatResult heartbeat(const WorkerRef& ref, const HeartbeatInfo& info, double now);
  // `position` = leases already received by the rank in `epoch`; asking
  // again for a leased position returns the same lease (idempotent retry).
  AcquireResult acquire(const WorkerRef& ref, int64_t epoch, int64_t position, double now);
  void shard_done(const WorkerRef& ref, int64_t epoch, int64_t position, int64_t consumed, double now);
  // A repeated done for a position already reported is a no-op (retry).
  // Returns true when the checkpoint is committed (by this part, or already
  // with this same part when the call is a retry).
  bool report_part(const WorkerRef& ref, int64_t plan_id, int64_t step, RankPart part, double now);
  // Host speaker protocol (scheduler_host.cc; proto/coordinator.proto
  // RegisterHost ...). One speaker per host registers and serves all its
  // ranks; each entry follows the rule of the per-rank call above. Within an
  // attempt a rank is served either by per-rank calls or by its host's calls,
  // never both (kFailedPrecondition); a rank claimed by another host is refused.
  HostRegisterResult register_host(const std::string& job_id, const std::vector<int>& ranks, int world_size,
                                   const std::string& host, const std::string& launch_id, double now);
  // Every entry is validated before any is applied. A rank left out is not kept alive.
  HeartbeatResult host_heartbeat(const HostRef& ref, const std::vector<RankBeat>& beats, double now);
  // Asks are served in order. Once a rank's sequence for an epoch has
  // ended, later asks of this call for that rank and epoch also answer
  // end_of_epoch (a speaker may ask ahead without knowing the length).
  // On a refusal the asks before it may have been granted: a retry of the
  // call returns the same leases (each ask is idempotent).
  std::vector<AcquireResult> acquire_many(const HostRef& ref, const std::vector<ShardAskInfo>& asks, double now);
  void shards_done(const HostRef& ref, const std::vector<ShardDoneInfo>& done, double now);
  // Validates every part, then records them together (one transaction);
  // true once the checkpoint is committed.
  bool report_parts(const HostRef& ref, int64_t plan_id, int64_t step, std::vector<RankPart> parts, double now);

  // Operator: plan a checkpoint now (or return the pending one).
  CheckpointPlan request_checkpoint(const std::string& job_id, double now);
  // Operator: drain (checkpoint first when `checkpoint`) or stop at once.
  DrainResult drain(const std::string& job_id, bool checkpoint, double now);
  // Timers: heartbeat timeouts, stalls, lease expiry, time-based checkpoints.
  void tick(double now);

  // with_ranks = false leaves SchedulerStatus::ranks empty (metrics: O(W)
  // arithmetic, no per-rank copies).
  SchedulerStatus status(double now, bool with_ranks = true) const;
  const CheckpointRecord* latest_committed() const;
  const SchedulerOptions& options() const { return options_; }
  const ShardIndex& index() const { return index_; }
  JobState state() const { return state_; }
  int64_t attempt() const { return attempt_; }

  // Durable rows changed since the last call: key -> JSON, or nullopt for a
  // deleted row. Applying them in call order reproduces the state.
  std::map<std::string, std::optional<std::string>> take_changes();
  // Checkpoint folders to delete (retention, abandoned plans), after the
  // changes that made them garbage are durable.
  std::vector<std::string> take_deletions();
  // Log lines describing state transitions since the last call.
  std::vector<std::string> take_events();

  // The epoch plan (exposed for tests): rank -> its work items in order.
  const EpochPlan& plan(int64_t epoch);

 private:
  struct Liveness {
    double last_heartbeat = 0;
    double step_changed = 0;
    int64_t step = -1;
    double steps_per_s = 0;
    // False after a restore: the steps made while the coordinator was down
    // are not divided by the time since the restore (a rate ~10x too high
    // would plan the next checkpoint far beyond the job's end).
    bool rate_baseline = true;
    double loss = 0;
    double samples_per_s = 0;
    bool finished = false;
  };

  void check_job(const std::string& job_id) const;
  // The rank of the current attempt, registered (any voice).
  RankState& check_rank(const std::string& job_id, int64_t attempt, int rank);
  // ... and served by per-rank calls.
  RankState& check_ref(const WorkerRef& ref);
  // ... and registered by this host's speaker.
  RankState& check_host(const HostRef& ref, int rank);
  static void check_beat(const HeartbeatInfo& info);
  // Liveness, status and checkpoint planning of one validated beat.
  void apply_beat(int rank, RankState& rs, const HeartbeatInfo& info, double now);
  HeartbeatResult beat_result() const;
  AcquireResult acquire_for(int rank, RankState& rs, int64_t epoch, int64_t position, double now);
  void done_for(int rank, RankState& rs, int64_t epoch, int64_t position, int64_t consumed);
  // Checks shared by register_worker and register_host; opens a new attempt
  // for a new launch.
  void admit_launch(const std::string& job_id, int world, const std::string& host, const std::string& launch_id,
                    double now);
  void mark_registered(int rank, RankState& rs, const std::string& host, bool hosted, double now);
  EpochPlan fresh_plan(int64_t epoch, int world) const;
  void open_attempt(int world_size, const std::string& launch_id, double now);
  void fail_attempt(const std::string& reason);
  void set_state(JobState s, const std::string& reason);
  std::optional<CheckpointPlan> pending_plan() const;
  // at_step > 0: exactly there (cadence, final checkpoint); else a margin
  // ahead of every rank.
  CheckpointPlan plan_checkpoint(const std::string& why, double now, int64_t at_step = 0);
  // The fastest observed steps per second of this attempt's ranks (O(1)).
  double top_rate() const;
  // live_ for `world` ranks, nothing heard yet.
  void reset_liveness(int world);
  // Steps a plan must lead the fastest rank by (checkpoint_cadence.h).
  int64_t plan_margin() const;
  // every_steps / every_minutes: plans the next cadence checkpoint once it
  // is within reach (checkpoint_cadence.h: next_cadence_checkpoint).
  void plan_cadence(double now);
  void plan_final_checkpoint(int rank, int64_t final_step, double now);
  void commit(CheckpointRecord& rec, double now);
  // Clears a deleted checkpoint's parts and deletes their rows.
  void drop_parts(CheckpointRecord& rec);
  void validate_part(int rank, const RankState& rs, const RankPart& part);
  // Every invariant the scheduler relies on when it indexes restored data;
  // throws cnx::CheckError naming the first row that breaks one.
  void validate_restored() const;
  int64_t max_step() const;
  void event(const std::string& line);

  void mark_job() { dirty_.insert("job"); }
  void mark_rank(int r) { dirty_.insert("rank/" + std::to_string(r)); }
  void mark_plan(int64_t e) { dirty_.insert("plan/" + std::to_string(e)); }
  void mark_ckpt(int64_t id) { dirty_.insert("ckpt/" + std::to_string(id)); }

  SchedulerOptions options_;
  ShardIndex index_;

  // Durable state.
  int64_t attempt_ = 0;
  std::string launch_id_;
  std::vector<std::string> past_launches_;  // launch ids of earlier attempts (newest last, bounded)
  JobState state_ = JobState::kWaiting;
  std::string reason_;
  int world_size_ = 0;
  int64_t next_ckpt_id_ = 1;
  int64_t pending_ckpt_ = 0;  // 0 = none
  bool drain_after_commit_ = false;
  int64_t unused_samples_ = 0;
  int64_t shards_done_ = 0;
  double last_commit_unix_s_ = 0;  // or when the attempt started running
  std::vector<RankState> ranks_;
  std::map<int64_t, EpochPlan> plans_;
  std::map<int64_t, CheckpointRecord> ckpts_;

  // Volatile state.
  std::vector<Liveness> live_;
  std::multiset<double> rates_;    // live_[r].steps_per_s of every rank (top_rate: its largest)
  int registered_count_ = 0;       // ranks_[r].registered, counted
  int finished_count_ = 0;         // ranks_[r].finished, counted
  mutable int64_t top_step_ = -1;  // max over live_ of step, when not stale
  mutable bool top_step_stale_ = true;
  double restored_unix_s_ = 0;  // leases get a grace period after a restart
  std::set<std::string> dirty_;
  std::vector<std::string> deletions_;
  std::vector<std::string> events_;
};

}  // namespace cnx::coordinator
