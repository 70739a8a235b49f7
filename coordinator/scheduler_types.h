#pragma once
// Plain data of the scheduler (see scheduler.h for the protocol), plus
// their JSON form for the durable store (scheduler_json.cc).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace cnx::coordinator {

enum class JobState { kWaiting = 1, kRunning = 2, kRestarting = 3, kStopped = 4, kCompleted = 5, kFailed = 6 };
enum class Action { kContinue = 0, kWait = 1, kCheckpoint = 2, kAbort = 3, kDrain = 4 };
enum class WorkerStatus { kRunning = 0, kFinished = 1, kFailed = 2 };

const char* job_state_name(JobState s);

struct WorkerRef {
  std::string job_id;
  int64_t attempt = 0;
  int rank = 0;
};

// Samples [start, end) of shard `shard`; `order` is the shard's index in the
// epoch's permutation (sort key for re-partitioning).
struct WorkItem {
  int64_t shard = 0;
  int64_t start = 0;
  int64_t end = 0;
  int64_t order = 0;
  int64_t size() const { return end - start; }
  bool operator==(const WorkItem& o) const {
    return shard == o.shard && start == o.start && end == o.end && order == o.order;
  }
};

struct EpochPlan {
  int world_size = 0;
  // The deterministic plan of (seed, epoch, world_size) (Scheduler::fresh_plan):
  // stored as that triple, not item by item, and not copied into checkpoint
  // snapshots (a missing snapshot means the fresh plan).
  bool fresh = false;
  std::vector<std::vector<WorkItem>> ranks;  // rank -> items in order
  int64_t rank_samples(int r) const;
  // O(items) on the first call, then cached (AcquireShard replies carry it):
  // `ranks` must not change once it has been called.
  int64_t min_rank_samples() const;
  mutable int64_t min_rank_samples_cache = -1;
};

struct Lease {
  int64_t epoch = 0;
  int64_t position = 0;
  WorkItem item;
  double acquired_unix_s = 0;
  double deadline_unix_s = 0;
};

struct RankState {
  bool registered = false;
  std::string host;
  bool hosted = false;        // registered by its host's speaker (RegisterHost): only host calls serve it
  int64_t epoch = 0;          // the epoch the rank is in
  int64_t next_position = 0;  // next item of its sequence in `epoch`
  std::map<std::pair<int64_t, int64_t>, Lease> leases;  // (epoch, position) -> active lease
  bool finished = false;
};

struct ItemProgress {
  int64_t position = 0;
  int64_t consumed = 0;
  int64_t epoch = 0;  // <= RankProgress::epoch (see proto/coordinator.proto)
};

struct RankProgress {
  int64_t epoch = 0;
  int64_t next_position = 0;
  std::vector<ItemProgress> partial;
};
// The lowest epoch a rank's progress refers to (scheduler.cc).
int64_t first_epoch(const RankProgress& p);

struct FileDigest {
  std::string path;
  std::string sha256;
  int64_t bytes = 0;
};

struct RankPart {
  int rank = 0;
  int64_t step = 0;
  std::vector<FileDigest> files;
  RankProgress progress;
  std::string data_cursor;  // opaque bytes
};

struct CheckpointPlan {
  int64_t id = 0;
  int64_t step = 0;
  std::string dir;
};

struct CheckpointRecord {
  enum class State { kPending = 0, kCommitted = 1, kAbandoned = 2, kDeleted = 3 };
  int64_t id = 0;
  int64_t step = 0;
  std::string dir;
  int world_size = 0;
  int64_t attempt = 0;
  State state = State::kPending;
  double planned_unix_s = 0;
  double committed_unix_s = 0;
  std::map<int, RankPart> parts;
  std::map<int64_t, EpochPlan> plans;  // snapshot of the plans the parts refer to
  int64_t unused_samples = 0;          // job counters at the commit (restored on resume)
  int64_t shards_done = 0;
  CheckpointPlan plan() const { return {id, step, dir}; }
};

struct HeartbeatInfo {
  int64_t step = 0;
  int64_t epoch = 0;
  double loss = 0;
  double samples_per_s = 0;
  bool preempted = false;
  WorkerStatus status = WorkerStatus::kRunning;
  std::string message;
  int64_t final_step = 0;  // > 0: the rank finished training there; plan the final checkpoint
};

struct HeartbeatResult {
  Action action = Action::kContinue;
  bool has_plan = false;
  CheckpointPlan plan;
  std::string reason;
  JobState state = JobState::kWaiting;
};

struct RegisterResult {
  int64_t attempt = 0;
  int world_size = 0;
  JobState state = JobState::kWaiting;
  int64_t start_epoch = 0;
  const CheckpointRecord* resume = nullptr;  // valid until the next scheduler call
};

struct AcquireResult {
  bool end_of_epoch = false;
  Lease lease;
  int64_t rank_samples = 0;
  int64_t min_rank_samples = 0;
};

// The host speaker protocol (proto/coordinator.proto RegisterHost ...).
struct HostRef {
  std::string job_id;
  int64_t attempt = 0;
  std::string host;
};

struct RankBeat {
  int rank = 0;
  HeartbeatInfo info;
};

struct ShardAskInfo {
  int rank = 0;
  int64_t epoch = 0;
  int64_t position = 0;
};

struct ShardDoneInfo {
  int rank = 0;
  int64_t epoch = 0;
  int64_t position = 0;
  int64_t consumed = 0;
};

struct HostRegisterResult {
  int64_t attempt = 0;
  int world_size = 0;
  JobState state = JobState::kWaiting;
  std::vector<int64_t> start_epochs;         // per rank of the request, in its order
  const CheckpointRecord* resume = nullptr;  // valid until the next scheduler call
};

struct DrainResult {
  JobState state = JobState::kWaiting;
  bool has_plan = false;
  CheckpointPlan plan;
};

struct RankStatusInfo {
  int rank = 0;
  std::string host;
  bool registered = false;
  bool alive = false;
  int64_t step = -1;
  int64_t epoch = 0;
  double loss = 0;
  double samples_per_s = 0;
  double seconds_since_heartbeat = -1;
  int64_t leases_held = 0;
};

struct SchedulerStatus {
  std::string job_id;
  JobState state = JobState::kWaiting;
  std::string reason;
  int64_t attempt = 0;
  int world_size = 0;
  int64_t epoch = 0;  // lowest epoch of the registered ranks
  int64_t step = -1;  // highest step reported
  int64_t workers_registered = 0;
  int64_t workers_alive = 0;
  int64_t shards_leased = 0;
  int64_t shards_done = 0;
  int64_t shards_pending = 0;         // items of the current epochs not yet leased
  int64_t checkpoints_committed = 0;  // every commit of the job, including those retention deleted since
  int64_t checkpoints_retained = 0;   // committed and kept (checkpoint.keep)
  int64_t last_committed_step = -1;
  double seconds_since_commit = -1;
  bool checkpoint_pending = false;
  CheckpointPlan pending;
  int64_t unused_samples = 0;
  double samples_per_s = 0;  // sum over the alive ranks
  std::vector<RankStatusInfo> ranks;
};

// JSON (de)serialisation for the durable rows.
void to_json(nlohmann::json& j, const WorkItem& v);
void from_json(const nlohmann::json& j, WorkItem& v);
void to_json(nlohmann::json& j, const EpochPlan& v);
void from_json(const nlohmann::json& j, EpochPlan& v);
void to_json(nlohmann::json& j, const RankState& v);
void from_json(const nlohmann::json& j, RankState& v);
void to_json(nlohmann::json& j, const RankPart& v);
void from_json(const nlohmann::json& j, RankPart& v);
void to_json(nlohmann::json& j, const CheckpointRecord& v);
void from_json(const nlohmann::json& j, CheckpointRecord& v);

}  // namespace cnx::coordinator
