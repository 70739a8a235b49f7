#include "coordinator/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <utility>

#include "common/check.h"
#include "common/hash.h"
#include "common/rng.h"
#include "coordinator/checkpoint_cadence.h"

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

// A relative path with no "." / ".." components: it stays inside the folder.
bool confined_relative(const std::string& p) {
  if (p.empty() || p.size() > 1024 || p.front() == '/' || p.back() == '/') return false;
  size_t begin = 0;
  while (begin <= p.size()) {
    size_t end = p.find('/', begin);
    if (end == std::string::npos) end = p.size();
    std::string comp = p.substr(begin, end - begin);
    if (comp.empty() || comp == "." || comp == "..") return false;
    for (char c : comp)
      if (c == '\0' || c == '\\') return false;
    begin = end + 1;
  }
  return true;
}

// The lowest epoch a rank's progress refers to.
int64_t first_epoch(const RankProgress& p) {
  int64_t e = p.epoch;
  for (const auto& ip : p.partial) e = std::min(e, ip.epoch);
  return e;
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

std::optional<CheckpointPlan> Scheduler::pending_plan() const {
  if (pending_ckpt_ == 0) return std::nullopt;
  return ckpts_.at(pending_ckpt_).plan();
}

void Scheduler::plan_final_checkpoint(int rank, int64_t final_step, double now) {
  for (const auto& [id, c] : ckpts_)
    if (c.state == CheckpointRecord::State::kCommitted && c.step >= final_step) return;
  if (auto p = pending_plan()) {
    if (p->step <= final_step) return;  // reachable: it is written first
    ckpts_[p->id].state = CheckpointRecord::State::kAbandoned;
    mark_ckpt(p->id);
    deletions_.push_back(p->dir);
    pending_ckpt_ = 0;
    event(str("checkpoint ", p->id, " (step ", p->step, ") abandoned: training ends at step ", final_step));
  }
  plan_checkpoint(str("final, rank ", rank, " finished at step ", final_step), now, final_step);
}

double Scheduler::top_rate() const {
  return rates_.empty() ? 0.0 : std::max(0.0, *rates_.rbegin());
}

void Scheduler::reset_liveness(int world) {
  live_.assign(world, Liveness{});
  rates_.clear();
  for (int r = 0; r < world; ++r) rates_.insert(rates_.end(), 0.0);
  top_step_stale_ = true;
}

int64_t Scheduler::plan_margin() const {
  return coordinator::plan_margin(top_rate(), options_.heartbeat_s, kMaxStep);
}

void Scheduler::plan_cadence(double now) {
  if (pending_ckpt_ != 0 || state_ != JobState::kRunning) return;
  CadenceInput in;
  in.every_steps = options_.every_steps;
  in.every_minutes = options_.every_minutes;
  in.top_step = std::max<int64_t>(max_step(), 0);
  in.rate = top_rate();
  in.margin = plan_margin();
  for (const auto& [id, c] : ckpts_)
    if (c.attempt == attempt_ && c.state == CheckpointRecord::State::kCommitted)
      in.committed_step = std::max(in.committed_step, c.step);
  in.last_commit_unix_s = last_commit_unix_s_;
  in.now = now;
  in.cap = kMaxStep;
  if (auto next = next_cadence_checkpoint(in)) plan_checkpoint(next->why, now, next->step);
}

CheckpointPlan Scheduler::plan_checkpoint(const std::string& why, double now, int64_t at_step) {
  if (auto p = pending_plan()) return *p;
  const int64_t margin = plan_margin();
  CheckpointRecord rec;
  rec.id = next_ckpt_id_++;
  // Never behind the last commit: after a relaunch the ranks resume there.
  int64_t base = std::max<int64_t>(max_step(), 0);
  if (const CheckpointRecord* last = latest_committed()) base = std::max(base, last->step);
  rec.step = at_step > 0 ? at_step : add_capped(base, margin, kMaxStep);
  char name[64];
  std::snprintf(name, sizeof(name), "ckpt-%06lld-step-%09lld", static_cast<long long>(rec.id),
                static_cast<long long>(rec.step));
  rec.dir = options_.checkpoint_root + "/" + options_.job_id + "/" + name;
  rec.world_size = world_size_;
  rec.attempt = attempt_;
  rec.planned_unix_s = now;
  pending_ckpt_ = rec.id;
  event(str("checkpoint ", rec.id, " planned at step ", rec.step, " (", why, ") in ", rec.dir));
  ckpts_[rec.id] = rec;
  mark_ckpt(rec.id);
  mark_job();
  return rec.plan();
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

void Scheduler::validate_part(int rank, const RankState& rs, const RankPart& part) {
  if (part.files.size() > 100000) fail(ErrorCode::kInvalidArgument, "files: more than 100000 entries");
  std::set<std::string> seen;
  for (size_t i = 0; i < part.files.size(); ++i) {
    const auto& f = part.files[i];
    if (!confined_relative(f.path))
      fail(ErrorCode::kInvalidArgument,
           str("files[", i, "].path: '", f.path, "' is not a relative path inside the checkpoint folder"));
    if (!seen.insert(f.path).second)
      fail(ErrorCode::kInvalidArgument, str("files[", i, "].path: '", f.path, "' repeated"));
    if (!is_hex64(f.sha256))
      fail(ErrorCode::kInvalidArgument, str("files[", i, "].sha256: expected 64 lowercase hex digits"));
    if (f.bytes < 0) fail(ErrorCode::kInvalidArgument, str("files[", i, "].bytes: must be >= 0"));
  }
  if (part.data_cursor.size() > (1 << 20)) fail(ErrorCode::kInvalidArgument, "data_cursor: larger than 1 MiB");
  const RankProgress& p = part.progress;
  if (p.epoch < 0 || p.epoch > rs.epoch)
    fail(ErrorCode::kInvalidArgument, str("progress.epoch: ", p.epoch, " but rank ", rank, " is in epoch ", rs.epoch));
  // Only plans the scheduler still holds can be referred to (a fresh plan
  // must not be invented for an epoch the rank has left).
  auto plan_of = [&](int64_t e, const std::string& field) -> const std::vector<WorkItem>& {
    auto f = plans_.find(e);
    if (f == plans_.end() && e == rs.epoch) return plan(e).ranks[rank];
    if (f == plans_.end())
      fail(ErrorCode::kInvalidArgument, str(field, ": epoch ", e, " is no longer open for rank ", rank));
    return f->second.ranks[rank];
  };
  const auto& items = plan_of(p.epoch, "progress.epoch");
  const int64_t limit = p.epoch == rs.epoch ? rs.next_position : static_cast<int64_t>(items.size());
  if (p.next_position < 0 || p.next_position > limit)
    fail(ErrorCode::kInvalidArgument, str("progress.next_position: ", p.next_position, " out of range [0, ", limit,
                                          "] (leases handed to rank ", rank, " in epoch ", p.epoch, ")"));
  std::set<std::pair<int64_t, int64_t>> positions;
  for (size_t i = 0; i < p.partial.size(); ++i) {
    const auto& ip = p.partial[i];
    const std::string field = str("progress.partial[", i, "]");
    if (ip.epoch < 0 || ip.epoch > p.epoch)
      fail(ErrorCode::kInvalidArgument, str(field, ".epoch: ", ip.epoch, " out of range [0, ", p.epoch, "]"));
    const auto& its = ip.epoch == p.epoch ? items : plan_of(ip.epoch, field + ".epoch");
    const int64_t below = ip.epoch == p.epoch ? p.next_position : static_cast<int64_t>(its.size());
    if (ip.position < 0 || ip.position >= below || !positions.insert({ip.epoch, ip.position}).second)
      fail(ErrorCode::kInvalidArgument,
           str(field, ".position: ", ip.position, " not a distinct leased position (below ", below, ")"));
    if (ip.consumed < 0 || ip.consumed > its[ip.position].size())
      fail(ErrorCode::kInvalidArgument,
           str(field, ".consumed: ", ip.consumed, " out of range [0, ", its[ip.position].size(), "]"));
  }
}

bool Scheduler::report_part(const WorkerRef& ref, int64_t plan_id, int64_t step, RankPart part, double now) {
  RankState& rs = check_ref(ref);
  auto it = ckpts_.find(plan_id);
  if (it == ckpts_.end()) fail(ErrorCode::kNotFound, str("plan_id: no checkpoint plan ", plan_id));
  CheckpointRecord& rec = it->second;
  if (rec.state == CheckpointRecord::State::kCommitted && rec.attempt == attempt_ && rec.parts.count(ref.rank) &&
      rec.parts.at(ref.rank).step == step)
    return true;  // a retry of a part that is already committed
  if (rec.state != CheckpointRecord::State::kPending || rec.attempt != attempt_)
    fail(ErrorCode::kFailedPrecondition, str("checkpoint plan ", plan_id, " is no longer pending"));
  check_range(step, rec.step, kMaxStep, "step");
  // Every recorded part has the same step: comparing with one other is enough (O(1), not O(W)).
  for (auto o = rec.parts.begin(); o != rec.parts.end(); ++o) {
    if (o->first == ref.rank) continue;
    if (o->second.step != step)
      fail(ErrorCode::kInvalidArgument,
           str("step: ", step, " differs from rank ", o->first, "'s step ", o->second.step, " for plan ", plan_id));
    break;
  }
  validate_part(ref.rank, rs, part);
  part.rank = ref.rank;
  part.step = step;
  rec.parts[ref.rank] = std::move(part);
  // A part is its own row until the checkpoint row is written again (at the
  // commit): O(1) bytes per report, not O(parts so far).
  dirty_.insert("part/" + std::to_string(rec.id) + "/" + std::to_string(ref.rank));
  if (static_cast<int>(rec.parts.size()) < world_size_) return false;
  commit(rec, now);
  return true;
}

void Scheduler::commit(CheckpointRecord& rec, double now) {
  rec.step = rec.parts.begin()->second.step;
  int64_t e_min = INT64_MAX, e_max = 0;
  for (const auto& [r, p] : rec.parts) {
    e_min = std::min(e_min, first_epoch(p.progress));
    e_max = std::max(e_max, p.progress.epoch);
  }
  for (const auto& [e, p] : plans_)
    if (e >= e_min && !p.fresh) rec.plans[e] = p;  // a fresh plan is rebuilt from (seed, epoch, world)
  rec.state = CheckpointRecord::State::kCommitted;
  rec.committed_unix_s = now;
  rec.unused_samples = unused_samples_;
  rec.shards_done = shards_done_;
  pending_ckpt_ = 0;
  last_commit_unix_s_ = now;
  event(str("checkpoint ", rec.id, " committed at step ", rec.step, " (", rec.parts.size(), " parts) in ", rec.dir));
  mark_ckpt(rec.id);
  mark_job();
  // Retention: keep the newest `keep` committed; older committed ones and
  // abandoned plans become garbage now that a newer commit exists.
  std::vector<int64_t> committed;
  for (auto& [id, c] : ckpts_) {
    if (c.state == CheckpointRecord::State::kCommitted) committed.push_back(id);
    if (c.state == CheckpointRecord::State::kAbandoned) {
      c.state = CheckpointRecord::State::kDeleted;
      drop_parts(c);
      deletions_.push_back(c.dir);
      mark_ckpt(id);
    }
  }
  for (size_t i = 0; i + options_.keep < committed.size(); ++i) {
    CheckpointRecord& old = ckpts_[committed[i]];
    old.state = CheckpointRecord::State::kDeleted;
    drop_parts(old);
    old.plans.clear();
    deletions_.push_back(old.dir);
    mark_ckpt(old.id);
  }
  // Plans of epochs that no resume can need any more.
  for (auto p = plans_.begin(); p != plans_.end();) {
    if (p->first < e_min) {
      mark_plan(p->first);
      p = plans_.erase(p);
    } else {
      ++p;
    }
  }
  if (drain_after_commit_) {
    drain_after_commit_ = false;
    set_state(JobState::kStopped, str("drained after checkpoint ", rec.id));
  }
}

CheckpointPlan Scheduler::request_checkpoint(const std::string& job_id, double now) {
  check_job(job_id);
  if (state_ != JobState::kRunning)
    fail(ErrorCode::kFailedPrecondition,
         str("job is ", job_state_name(state_), "; checkpoints are planned only while running"));
  return plan_checkpoint("operator request", now);
}

DrainResult Scheduler::drain(const std::string& job_id, bool checkpoint, double now) {
  check_job(job_id);
  DrainResult res;
  if (checkpoint && state_ == JobState::kRunning) {
    res.plan = plan_checkpoint("drain", now);
    res.has_plan = true;
    drain_after_commit_ = true;
    mark_job();
  } else if (state_ == JobState::kRunning || state_ == JobState::kWaiting) {
    if (auto p = pending_plan()) {
      ckpts_[p->id].state = CheckpointRecord::State::kAbandoned;
      mark_ckpt(p->id);
      pending_ckpt_ = 0;
    }
    drain_after_commit_ = false;
    set_state(JobState::kStopped, "stopped by the operator");
  }
  res.state = state_;
  return res;
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

void Scheduler::drop_parts(CheckpointRecord& rec) {
  for (const auto& [r, part] : rec.parts) dirty_.insert("part/" + std::to_string(rec.id) + "/" + std::to_string(r));
  rec.parts.clear();
}

const CheckpointRecord* Scheduler::latest_committed() const {
  for (auto it = ckpts_.rbegin(); it != ckpts_.rend(); ++it)
    if (it->second.state == CheckpointRecord::State::kCommitted) return &it->second;
  return nullptr;
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
  for (const auto& [id, c] : ckpts_)
    if (c.state == CheckpointRecord::State::kCommitted) ++s.checkpoints_committed;
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
