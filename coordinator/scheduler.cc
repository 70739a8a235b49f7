#include "coordinator/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "common/check.h"
#include "common/hash.h"
#include "common/rng.h"

namespace cnx::coordinator {
namespace {

// Uniform in [0, n) without modulo bias; portable (no std distributions).
uint64_t uniform_below(uint64_t& state, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t r;
  do r = splitmix64(state);
  while (r >= limit);
  return r % n;
}

[[noreturn]] void fail(ErrorCode code, const std::string& msg) {
  throw SchedulerError(code, msg);
}

// Unused pieces of one rank's sequence for `epoch` given its progress
// (epoch <= p.epoch; an earlier epoch keeps only its listed partial tails).
std::vector<WorkItem> remaining_items(const std::vector<WorkItem>& items, const RankProgress& p, int64_t epoch) {
  std::map<int64_t, int64_t> partial;
  for (const auto& ip : p.partial)
    if (ip.epoch == epoch) partial[ip.position] = ip.consumed;
  const int64_t next = epoch == p.epoch ? p.next_position : static_cast<int64_t>(items.size());
  std::vector<WorkItem> out;
  for (size_t pos = 0; pos < items.size(); ++pos) {
    const int64_t ipos = static_cast<int64_t>(pos);
    WorkItem it = items[pos];
    if (ipos < next) {
      auto f = partial.find(ipos);
      if (f == partial.end()) continue;
      it.start += f->second;
      if (it.start >= it.end) continue;
    }
    out.push_back(it);
  }
  return out;
}

void check_range(int64_t v, int64_t lo, int64_t hi, const std::string& field) {
  if (v < lo || v > hi) fail(ErrorCode::kInvalidArgument, str(field, ": ", v, " out of range [", lo, ", ", hi, "]"));
}

}  // namespace

int64_t first_epoch(const RankProgress& p) {
  int64_t e = p.epoch;
  for (const auto& ip : p.partial) e = std::min(e, ip.epoch);
  return e;
}

int64_t epoch_limit(double epochs) {
  if (!(epochs > 0)) return kMaxEpoch;
  const double e = std::ceil(epochs) + 2;
  return e < static_cast<double>(kMaxEpoch) ? static_cast<int64_t>(e) : kMaxEpoch;
}

Scheduler::Scheduler(SchedulerOptions options, ShardIndex index)
    : options_(std::move(options)), index_(std::move(index)) {
  CNX_CHECK(options_.keep >= 1, "checkpoint.keep must be >= 1");
  mark_job();
}

void Scheduler::event(const std::string& line) {
  events_.push_back(line);
}

void Scheduler::set_state(JobState s, const std::string& reason) {
  if (s != state_ || reason != reason_)
    event(str("job ", options_.job_id, " attempt ", attempt_, ": ", job_state_name(state_), " -> ", job_state_name(s),
              reason.empty() ? "" : " (" + reason + ")"));
  state_ = s;
  reason_ = reason;
  mark_job();
}

EpochPlan Scheduler::fresh_plan(int64_t epoch, int world) const {
  std::vector<int64_t> order;
  for (size_t i = 0; i < index_.shards.size(); ++i)
    if (index_.shards[i].samples > 0) order.push_back(static_cast<int64_t>(i));
  uint64_t state = static_cast<uint64_t>(options_.seed) * 0x2545f4914f6cdd1dULL ^ static_cast<uint64_t>(epoch);
  splitmix64(state);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[uniform_below(state, i)]);
  EpochPlan plan;
  plan.world_size = world;
  plan.fresh = true;
  plan.ranks.resize(world);
  for (size_t i = 0; i < order.size(); ++i)
    plan.ranks[i % world].push_back({order[i], 0, index_.shards[order[i]].samples, static_cast<int64_t>(i)});
  return plan;
}

const EpochPlan& Scheduler::plan(int64_t epoch) {
  auto it = plans_.find(epoch);
  if (it == plans_.end()) {
    CNX_CHECK(world_size_ > 0, "no world size yet");
    it = plans_.emplace(epoch, fresh_plan(epoch, world_size_)).first;
    mark_plan(epoch);
  }
  return it->second;
}

void Scheduler::check_job(const std::string& job_id) const {
  if (job_id != options_.job_id)
    fail(ErrorCode::kInvalidArgument,
         str("job_id: '", job_id, "' is not this coordinator's job ('", options_.job_id, "')"));
}

RankState& Scheduler::check_rank(const std::string& job_id, int64_t attempt, int rank) {
  check_job(job_id);
  if (attempt != attempt_ || attempt_ == 0)
    fail(ErrorCode::kStale, str("stale attempt ", attempt, " (current attempt is ", attempt_, ")"));
  if (rank < 0 || rank >= world_size_)
    fail(ErrorCode::kInvalidArgument, str("rank: ", rank, " out of range [0, ", world_size_, ")"));
  RankState& rs = ranks_[rank];
  if (!rs.registered)
    fail(ErrorCode::kFailedPrecondition, str("rank ", rank, " has not registered in attempt ", attempt_));
  return rs;
}

RankState& Scheduler::check_ref(const WorkerRef& ref) {
  RankState& rs = check_rank(ref.job_id, ref.attempt, ref.rank);
  if (rs.hosted)
    fail(ErrorCode::kFailedPrecondition, str("rank ", ref.rank, " is served by the speaker of host '", rs.host,
                                             "' in attempt ", attempt_, " (host calls only)"));
  return rs;
}

RankState& Scheduler::check_host(const HostRef& ref, int rank) {
  RankState& rs = check_rank(ref.job_id, ref.attempt, rank);
  if (!rs.hosted || rs.host != ref.host)
    fail(ErrorCode::kFailedPrecondition,
         str("rank ", rank, " is not registered by host '", ref.host, "' in attempt ", attempt_,
             rs.hosted ? str(" (host '", rs.host, "' holds it)") : std::string(" (it registered on its own)")));
  return rs;
}

void Scheduler::open_attempt(int world, const std::string& launch_id, double now) {
  ++attempt_;
  if (!launch_id_.empty()) past_launches_.push_back(launch_id_);
  if (past_launches_.size() > 1000) past_launches_.erase(past_launches_.begin());
  launch_id_ = launch_id;
  if (auto p = pending_plan()) {
    ckpts_[p->id].state = CheckpointRecord::State::kAbandoned;
    mark_ckpt(p->id);
    deletions_.push_back(p->dir);
  }
  pending_ckpt_ = 0;
  drain_after_commit_ = false;
  const int old_world = world_size_;
  world_size_ = world;
  for (int r = 0; r < old_world; ++r) dirty_.insert("rank/" + std::to_string(r));  // rewritten or erased below
  ranks_.assign(world, RankState{});
  reset_liveness(world);
  registered_count_ = finished_count_ = 0;
  for (const auto& [e, p] : plans_) dirty_.insert("plan/" + std::to_string(e));
  plans_.clear();

  const CheckpointRecord* last = latest_committed();
  // Counters follow the state: work after the commit is redone.
  unused_samples_ = last ? last->unused_samples : 0;
  shards_done_ = last ? last->shards_done : 0;
  if (last) {
    int64_t e_min = INT64_MAX, e_max = 0;
    for (const auto& [r, part] : last->parts) {
      e_min = std::min(e_min, first_epoch(part.progress));
      e_max = std::max(e_max, part.progress.epoch);
    }
    auto snapshot_plan = [&](int64_t e) {
      auto f = last->plans.find(e);
      return f != last->plans.end() ? f->second : fresh_plan(e, last->world_size);
    };
    // Epochs past every rank may still have a plan that differs from a fresh
    // one (rebuilt by an earlier resume): carry or re-deal those as well.
    int64_t e_last = e_max;
    if (!last->plans.empty()) e_last = std::max(e_last, last->plans.rbegin()->first);
    for (int64_t e = e_min; e <= e_last; ++e) {
      const EpochPlan old = snapshot_plan(e);
      EpochPlan fresh;
      fresh.world_size = world;
      fresh.ranks.resize(world);
      std::vector<std::vector<WorkItem>> left(last->world_size);
      for (const auto& [r, part] : last->parts) {
        if (part.progress.epoch < e)
          left[r] = old.ranks[r];
        else if (first_epoch(part.progress) <= e)
          left[r] = remaining_items(old.ranks[r], part.progress, e);
      }
      if (world == last->world_size) {
        fresh.ranks = std::move(left);
      } else {
        std::vector<WorkItem> pieces;
        for (auto& l : left) pieces.insert(pieces.end(), l.begin(), l.end());
        std::sort(pieces.begin(), pieces.end(), [](const WorkItem& a, const WorkItem& b) {
          return a.order != b.order ? a.order < b.order : a.start < b.start;
        });
        for (size_t i = 0; i < pieces.size(); ++i) fresh.ranks[i % world].push_back(pieces[i]);
      }
      plans_[e] = std::move(fresh);
      mark_plan(e);
    }
    for (int r = 0; r < world; ++r) {
      ranks_[r].epoch = e_min;
      if (world == last->world_size) ranks_[r].epoch = first_epoch(last->parts.at(r).progress);
    }
  }
  for (int r = 0; r < world; ++r) mark_rank(r);
  set_state(JobState::kWaiting, str("attempt ", attempt_, " opened with world size ", world,
                                    last ? str(", resuming from checkpoint ", last->id, " at step ", last->step)
                                         : std::string(", starting from scratch")));
  (void)now;
}

void Scheduler::admit_launch(const std::string& job_id, int world, const std::string& host,
                             const std::string& launch_id, double now) {
  check_job(job_id);
  if (world < 1 || world > options_.max_world_size)
    fail(ErrorCode::kInvalidArgument,
         str("world_size: ", world, " out of range [1, ", options_.max_world_size, "] (coordinator.max_world_size)"));
  if (options_.world_size > 0 && world != options_.world_size)
    fail(ErrorCode::kInvalidArgument,
         str("world_size: ", world, " differs from coordinator.world_size ", options_.world_size));
  if (launch_id.empty() || launch_id.size() > 128)
    fail(ErrorCode::kInvalidArgument, "launch_id: expected 1..128 characters");
  if (host.size() > 256) fail(ErrorCode::kInvalidArgument, "host: longer than 256 characters");
  if (state_ == JobState::kCompleted)
    fail(ErrorCode::kFailedPrecondition, str("job ", options_.job_id, " is completed"));
  if (state_ == JobState::kFailed)
    fail(ErrorCode::kFailedPrecondition, str("job ", options_.job_id, " has failed: ", reason_));

  if (std::find(past_launches_.begin(), past_launches_.end(), launch_id) != past_launches_.end())
    fail(ErrorCode::kStale,
         str("launch '", launch_id, "' belongs to an earlier attempt (current attempt is ", attempt_, ")"));
  if (attempt_ == 0 || launch_id != launch_id_) {
    open_attempt(world, launch_id, now);
  } else {
    if (world != world_size_)
      fail(ErrorCode::kInvalidArgument,
           str("world_size: ", world, " differs from attempt ", attempt_, "'s world size ", world_size_));
    if (state_ == JobState::kRestarting)
      fail(ErrorCode::kFailedPrecondition,
           str("attempt ", attempt_, " has failed (", reason_, "); relaunch the workers"));
  }
}

void Scheduler::mark_registered(int rank, RankState& rs, const std::string& host, bool hosted, double now) {
  if (!rs.registered) ++registered_count_;
  if (!rs.registered || rs.host != host || rs.hosted != hosted) {
    rs.registered = true;
    rs.host = host;
    rs.hosted = hosted;
    mark_rank(rank);
  }
  live_[rank].last_heartbeat = now;
  if (state_ == JobState::kWaiting && registered_count_ == world_size_) {
    for (auto& l : live_) l.last_heartbeat = l.step_changed = now;
    last_commit_unix_s_ = now;
    set_state(JobState::kRunning, str("all ", world_size_, " ranks registered"));
  }
}

RegisterResult Scheduler::register_worker(const std::string& job_id, int rank, int world, const std::string& host,
                                          const std::string& launch_id, double now) {
  check_job(job_id);
  if (world >= 1 && world <= options_.max_world_size && (rank < 0 || rank >= world))
    fail(ErrorCode::kInvalidArgument, str("rank: ", rank, " out of range [0, ", world, ")"));
  admit_launch(job_id, world, host, launch_id, now);
  RankState& rs = ranks_[rank];
  if (rs.registered && rs.hosted)
    fail(ErrorCode::kFailedPrecondition, str("rank ", rank, " is registered by the speaker of host '", rs.host,
                                             "' in attempt ", attempt_, "; it cannot also register on its own"));
  mark_registered(rank, rs, host, false, now);
  RegisterResult res;
  res.attempt = attempt_;
  res.world_size = world_size_;
  res.state = state_;
  res.start_epoch = rs.epoch;
  res.resume = latest_committed();
  return res;
}

int64_t Scheduler::max_step() const {
  if (top_step_stale_) {
    top_step_ = -1;
    for (const auto& l : live_) top_step_ = std::max(top_step_, l.step);
    top_step_stale_ = false;
  }
  return top_step_;
}

HeartbeatResult Scheduler::heartbeat(const WorkerRef& ref, const HeartbeatInfo& info, double now) {
  RankState& rs = check_ref(ref);
  check_beat(info);
  apply_beat(ref.rank, rs, info, now);
  return beat_result();
}

void Scheduler::check_beat(const HeartbeatInfo& info) {
  check_range(info.step, 0, kMaxStep, "step");
  check_range(info.epoch, 0, kMaxEpoch, "epoch");
  if (!std::isfinite(info.samples_per_s) || info.samples_per_s < 0)
    fail(ErrorCode::kInvalidArgument, "samples_per_s: must be a finite number >= 0");
  if (info.message.size() > 4096) fail(ErrorCode::kInvalidArgument, "message: longer than 4096 characters");
  check_range(info.final_step, 0, kMaxStep, "final_step");
  if (info.final_step > 0 && info.final_step != info.step)
    fail(ErrorCode::kInvalidArgument, str("final_step: ", info.final_step, " differs from step ", info.step));
}

void Scheduler::apply_beat(int rank, RankState& rs, const HeartbeatInfo& info, double now) {
  Liveness& l = live_[rank];
  if (info.step != l.step) {
    // max_step() is asked on every heartbeat: keep it O(1) unless the top rank goes back.
    // Stale only when the rank that held the top goes back (a rank behind the
    // top moving up does not change it): O(1) per heartbeat in lockstep.
    if (!top_step_stale_ && info.step >= top_step_)
      top_step_ = info.step;
    else if (l.step >= top_step_)
      top_step_stale_ = true;
    if (l.step >= 0 && info.step > l.step && now > l.step_changed && l.rate_baseline) {
      rates_.erase(rates_.find(l.steps_per_s));
      l.steps_per_s = static_cast<double>(info.step - l.step) / (now - l.step_changed);
      rates_.insert(l.steps_per_s);
    }
    l.rate_baseline = true;
    l.step = info.step;
    l.step_changed = now;
    // Renewals are soft state (not persisted): a restored coordinator gives
    // every lease a fresh lease_s of grace anyway.
    for (auto& [k, lease] : rs.leases) lease.deadline_unix_s = now + options_.lease_s;
  }
  l.last_heartbeat = now;
  l.loss = info.loss;
  l.samples_per_s = info.samples_per_s;

  if (info.status == WorkerStatus::kFailed && state_ != JobState::kFailed) {
    if (auto p = pending_plan()) {
      ckpts_[p->id].state = CheckpointRecord::State::kAbandoned;
      mark_ckpt(p->id);
      pending_ckpt_ = 0;
    }
    set_state(JobState::kFailed, str("rank ", rank, " failed: ", info.message));
  } else if (info.status == WorkerStatus::kFinished && !rs.finished) {
    rs.finished = true;
    mark_rank(rank);
    if (++finished_count_ == world_size_) set_state(JobState::kCompleted, "every rank finished");
  }
  if (state_ == JobState::kRunning && info.final_step > 0) {
    plan_final_checkpoint(rank, info.final_step, now);
  } else if (state_ == JobState::kRunning) {
    if (info.preempted && !drain_after_commit_) {
      plan_checkpoint(str("rank ", rank, " preempted"), now);
      drain_after_commit_ = true;
      mark_job();
    } else {
      plan_cadence(now);
    }
  }
}

HeartbeatResult Scheduler::beat_result() const {
  HeartbeatResult res;
  res.state = state_;
  res.reason = reason_;
  switch (state_) {
    case JobState::kWaiting:
      res.action = Action::kWait;
      break;
    case JobState::kRunning:
      res.action = Action::kContinue;
      break;
    case JobState::kRestarting:
    case JobState::kFailed:
      res.action = Action::kAbort;
      break;
    case JobState::kStopped:
    case JobState::kCompleted:
      res.action = Action::kDrain;
      break;
  }
  if (auto p = pending_plan(); p && state_ == JobState::kRunning) {
    res.action = Action::kCheckpoint;
    res.has_plan = true;
    res.plan = *p;
  }
  return res;
}

AcquireResult Scheduler::acquire(const WorkerRef& ref, int64_t epoch, int64_t position, double now) {
  RankState& rs = check_ref(ref);
  return acquire_for(ref.rank, rs, epoch, position, now);
}

AcquireResult Scheduler::acquire_for(int rank, RankState& rs, int64_t epoch, int64_t position, double now) {
  const int64_t max_epochs = options_.max_epochs > 0 ? std::min(options_.max_epochs, kMaxEpoch) : kMaxEpoch;
  if (epoch < 0 || epoch >= max_epochs)
    fail(ErrorCode::kInvalidArgument,
         str("epoch: ", epoch, " out of range [0, ", max_epochs, ") (the schedule's epochs plus two of slack)"));
  if (state_ != JobState::kRunning)
    fail(ErrorCode::kFailedPrecondition, str("job is ", job_state_name(state_), ", not running; no shards are leased"));
  if (auto again = rs.leases.find({epoch, position}); again != rs.leases.end()) {
    const EpochPlan& p = plan(epoch);
    AcquireResult res;
    res.rank_samples = p.rank_samples(rank);
    res.min_rank_samples = p.min_rank_samples();
    res.lease = again->second;
    return res;
  }
  if (epoch < rs.epoch || epoch > rs.epoch + 1 || (epoch == rs.epoch + 1 && position != 0))
    fail(ErrorCode::kInvalidArgument,
         str("epoch: ", epoch, " but rank ", rank, " is in epoch ", rs.epoch, " (expected it or the next one)"));
  if (epoch == rs.epoch + 1) {
    // Moving on: the rank's items never leased in the old epoch stay unused.
    const EpochPlan& old = plan(rs.epoch);
    for (size_t pos = rs.next_position; pos < old.ranks[rank].size(); ++pos)
      unused_samples_ += old.ranks[rank][pos].size();
    rs.epoch = epoch;
    rs.next_position = 0;
    mark_job();
  }
  if (position != rs.next_position)
    fail(ErrorCode::kInvalidArgument, str("position: ", position, " but rank ", rank, "'s next position in epoch ",
                                          epoch, " is ", rs.next_position));
  const EpochPlan& p = plan(epoch);
  const auto& items = p.ranks[rank];
  AcquireResult res;
  res.rank_samples = p.rank_samples(rank);
  res.min_rank_samples = p.min_rank_samples();
  if (rs.next_position >= static_cast<int64_t>(items.size())) {
    res.end_of_epoch = true;
    mark_rank(rank);
    return res;
  }
  Lease l;
  l.epoch = epoch;
  l.position = rs.next_position++;
  l.item = items[l.position];
  l.acquired_unix_s = now;
  l.deadline_unix_s = now + options_.lease_s;
  rs.leases[{l.epoch, l.position}] = l;
  mark_rank(rank);
  res.lease = l;
  return res;
}

void Scheduler::shard_done(const WorkerRef& ref, int64_t epoch, int64_t position, int64_t consumed, double now) {
  RankState& rs = check_ref(ref);
  done_for(ref.rank, rs, epoch, position, consumed);
  (void)now;
}

void Scheduler::done_for(int rank, RankState& rs, int64_t epoch, int64_t position, int64_t consumed) {
  auto it = rs.leases.find({epoch, position});
  if (it == rs.leases.end() && ((epoch == rs.epoch && position >= 0 && position < rs.next_position) ||
                                (epoch >= 0 && epoch < rs.epoch && position >= 0)))
    return;  // already reported (a retry)
  if (it == rs.leases.end())
    fail(ErrorCode::kInvalidArgument,
         str("no active lease at epoch ", epoch, " position ", position, " for rank ", rank));
  if (consumed < 0 || consumed > it->second.item.size())
    fail(ErrorCode::kInvalidArgument, str("consumed: ", consumed, " out of range [0, ", it->second.item.size(), "]"));
  unused_samples_ += it->second.item.size() - consumed;
  ++shards_done_;
  rs.leases.erase(it);
  mark_rank(rank);
  mark_job();
}

void Scheduler::fail_attempt(const std::string& reason) {
  if (auto p = pending_plan()) {
    ckpts_[p->id].state = CheckpointRecord::State::kAbandoned;
    mark_ckpt(p->id);
    pending_ckpt_ = 0;
  }
  drain_after_commit_ = false;
  set_state(JobState::kRestarting, reason + "; telling every rank to abort");
}

void Scheduler::tick(double now) {
  if (state_ != JobState::kRunning) return;
  const int64_t top = max_step();
  for (int r = 0; r < world_size_; ++r) {
    const Liveness& l = live_[r];
    if (l.finished || ranks_[r].finished) continue;
    if (now - l.last_heartbeat > options_.heartbeat_timeout_s) {
      fail_attempt(str("rank ", r, " lost: no heartbeat for ", static_cast<int64_t>(now - l.last_heartbeat), " s"));
      return;
    }
    if (now - l.step_changed > options_.stall_s) {
      fail_attempt(str("rank ", r, " stalled at step ", l.step, " for ", static_cast<int64_t>(now - l.step_changed),
                       " s (highest step ", top, ")"));
      return;
    }
    for (const auto& [k, lease] : ranks_[r].leases)
      if (now > lease.deadline_unix_s && now > restored_unix_s_ + options_.lease_s) {
        fail_attempt(str("rank ", r, "'s lease of shard ", lease.item.shard, " (epoch ", lease.epoch, ") expired"));
        return;
      }
  }
  plan_cadence(now);
}

SchedulerStatus Scheduler::status(double now, bool with_ranks) const {
  SchedulerStatus s;
  s.job_id = options_.job_id;
  s.state = state_;
  s.reason = reason_;
  s.attempt = attempt_;
  s.world_size = world_size_;
  s.step = max_step();
  s.shards_done = shards_done_;
  s.unused_samples = unused_samples_;
  s.epoch = ranks_.empty() ? 0 : INT64_MAX;
  if (with_ranks) s.ranks.reserve(world_size_);
  for (int r = 0; r < world_size_; ++r) {
    const RankState& rs = ranks_[r];
    const Liveness& l = live_[r];
    RankStatusInfo ri;
    ri.rank = r;
    ri.host = rs.host;
    ri.registered = rs.registered;
    ri.alive = rs.registered && now - l.last_heartbeat <= options_.heartbeat_timeout_s;
    ri.step = l.step;
    ri.epoch = rs.epoch;
    ri.loss = l.loss;
    ri.samples_per_s = l.samples_per_s;
    ri.seconds_since_heartbeat = rs.registered ? now - l.last_heartbeat : -1;
    ri.leases_held = static_cast<int64_t>(rs.leases.size());
    s.workers_registered += rs.registered;
    s.workers_alive += ri.alive;
    if (ri.alive) s.samples_per_s += ri.samples_per_s;
    s.shards_leased += ri.leases_held;
    s.epoch = std::min(s.epoch, rs.epoch);
    auto p = plans_.find(rs.epoch);
    if (p != plans_.end()) s.shards_pending += static_cast<int64_t>(p->second.ranks[r].size()) - rs.next_position;
    if (with_ranks) s.ranks.push_back(std::move(ri));
  }
  // Committed ever (retention deletes the old ones; their records keep the
  // commit time) and committed and still on disk.
  for (const auto& [id, c] : ckpts_) {
    if (c.state == CheckpointRecord::State::kCommitted) ++s.checkpoints_retained;
    if (c.state == CheckpointRecord::State::kCommitted ||
        (c.state == CheckpointRecord::State::kDeleted && c.committed_unix_s > 0))
      ++s.checkpoints_committed;
  }
  if (const CheckpointRecord* last = latest_committed()) {
    s.last_committed_step = last->step;
    s.seconds_since_commit = now - last->committed_unix_s;
  }
  if (auto p = pending_plan()) {
    s.checkpoint_pending = true;
    s.pending = *p;
  }
  return s;
}

std::vector<std::string> Scheduler::take_deletions() {
  return std::exchange(deletions_, {});
}
std::vector<std::string> Scheduler::take_events() {
  return std::exchange(events_, {});
}

}  // namespace cnx::coordinator
