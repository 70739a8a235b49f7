// The checkpoint side of the Scheduler (scheduler.h; docs/protocols.md,
// "Checkpoint protocol"): when checkpoints are planned (cadence, operator,
// preemption, drain, the final step), how a rank's part is validated and
// recorded, and the commit that makes a checkpoint the one a resume uses.
// Membership, liveness and leases are in scheduler.cc, the host speaker's
// calls in scheduler_host.cc.
#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "common/check.h"
#include "coordinator/checkpoint_cadence.h"
#include "coordinator/scheduler.h"

namespace cnx::coordinator {
namespace {

[[noreturn]] void fail(ErrorCode code, const std::string& msg) {
  throw SchedulerError(code, msg);
}

void check_range(int64_t v, int64_t lo, int64_t hi, const std::string& field) {
  if (v < lo || v > hi) fail(ErrorCode::kInvalidArgument, str(field, ": ", v, " out of range [", lo, ", ", hi, "]"));
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

}  // namespace

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

void Scheduler::drop_parts(CheckpointRecord& rec) {
  for (const auto& [r, part] : rec.parts) dirty_.insert("part/" + std::to_string(rec.id) + "/" + std::to_string(r));
  rec.parts.clear();
}

const CheckpointRecord* Scheduler::latest_committed() const {
  for (auto it = ckpts_.rbegin(); it != ckpts_.rend(); ++it)
    if (it->second.state == CheckpointRecord::State::kCommitted) return &it->second;
  return nullptr;
}

}  // namespace cnx::coordinator
