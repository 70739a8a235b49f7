// The scheduler's durable rows (scheduler.h: take_changes, restore).
//
// Rows, key -> JSON (scheduler_json.cc):
//   job                  attempt, launch ids, state, world size, checkpoint
//                        ids, counters, and the seed and shard count the
//                        state was made for
//   rank/<r>             RankState of rank r of the current attempt
//   plan/<epoch>         EpochPlan (a fresh plan as {world, fresh}: O(1) bytes)
//   ckpt/<id>            CheckpointRecord without its parts (older
//                        coordinators embedded them; still read), with the
//                        plans its parts refer to that are not fresh
//   part/<id>/<r>        RankPart of rank r for checkpoint id: written once
//                        when reported, deleted with the checkpoint's data
//                        (retention, abandoned plans). A commit rewrites
//                        only the O(1) ckpt row.
// take_changes() hands out the rows changed since the last call (nullopt:
// delete); applying them in call order reproduces the state.
//
// restore() is the inverse, and trusts nothing it reads: every row must have
// a known key, parse, hold values in range and refer only to plans,
// checkpoints and shards that exist (validate_restored: every invariant the
// scheduler relies on when it indexes restored data). A row that does not
// throws cnx::CheckError "corrupt coordinator state database: row '<key>':
// <what> (...)"; a job row written for another seed or shard index throws
// cnx::CheckError saying which. Nothing else is thrown for bad rows.
#include <nlohmann/json.hpp>

#include <cmath>

#include "common/check.h"
#include "coordinator/scheduler.h"

namespace cnx::coordinator {
namespace {

[[noreturn]] void corrupt_row(const std::string& key, const std::string& what) {
  throw CheckError(str("corrupt coordinator state database: row '", key, "': ", what,
                       " (restore the database from a backup, or move it away to start the job from scratch)"));
}

// The id of a "kind/<id>" row key: decimal digits only.
int64_t row_id(const std::string& key, size_t slash) {
  const std::string digits = key.substr(slash + 1);
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
    corrupt_row(key, "the id after '/' is not a number");
  return std::stoll(digits);
}

}  // namespace

std::map<std::string, std::optional<std::string>> Scheduler::take_changes() {
  std::map<std::string, std::optional<std::string>> out;
  for (const std::string& key : dirty_) {
    const auto slash = key.find('/');
    const std::string kind = key.substr(0, slash);
    if (kind == "job") {
      nlohmann::json j = {{"attempt", attempt_},
                          {"launch", launch_id_},
                          {"past_launches", past_launches_},
                          {"state", static_cast<int>(state_)},
                          {"reason", reason_},
                          {"world", world_size_},
                          {"next_ckpt", next_ckpt_id_},
                          {"pending", pending_ckpt_},
                          {"drain", drain_after_commit_},
                          {"unused", unused_samples_},
                          {"done", shards_done_},
                          {"last_commit", last_commit_unix_s_},
                          {"index_shards", index_.shards.size()},
                          {"seed", options_.seed}};
      out[key] = j.dump();
      continue;
    }
    const int64_t id = std::stoll(key.substr(slash + 1));
    if (kind == "rank") {
      if (id < world_size_)
        out[key] = nlohmann::json(ranks_[id]).dump();
      else
        out[key] = std::nullopt;
    } else if (kind == "plan") {
      auto p = plans_.find(id);
      if (p != plans_.end())
        out[key] = nlohmann::json(p->second).dump();
      else
        out[key] = std::nullopt;
    } else if (kind == "ckpt") {
      out[key] = nlohmann::json(ckpts_.at(id)).dump();
    } else if (kind == "part") {
      const auto& parts = ckpts_.at(id).parts;
      auto p = parts.find(std::stoi(key.substr(key.rfind('/') + 1)));
      if (p != parts.end())
        out[key] = nlohmann::json(p->second).dump();
      else
        out[key] = std::nullopt;  // dropped with its checkpoint's data
    }
  }
  dirty_.clear();
  return out;
}

Scheduler Scheduler::restore(SchedulerOptions options, ShardIndex index, const std::map<std::string, std::string>& rows,
                             double now) {
  Scheduler s(std::move(options), std::move(index));
  s.dirty_.clear();
  auto job = rows.find("job");
  if (job == rows.end()) {
    if (!rows.empty()) corrupt_row(rows.begin()->first, "present, but the 'job' row is missing");
    s.mark_job();
    return s;
  }
  std::string key = "job";
  try {
    const auto j = nlohmann::json::parse(job->second);
    const auto seed = j.at("seed").get<int64_t>();
    const auto shards = j.at("index_shards").get<size_t>();
    if (seed != s.options_.seed)
      throw CheckError(
          str("the state database was written with job.seed ", seed, ", the config says ", s.options_.seed));
    if (shards != s.index_.shards.size())
      throw CheckError(
          str("the state database was written for ", shards, " shards, the shard index has ", s.index_.shards.size()));
    s.attempt_ = j.at("attempt").get<int64_t>();
    s.launch_id_ = j.at("launch").get<std::string>();
    s.past_launches_ = j.at("past_launches").get<std::vector<std::string>>();
    const int state = j.at("state").get<int>();
    if (state < static_cast<int>(JobState::kWaiting) || state > static_cast<int>(JobState::kFailed))
      corrupt_row(key, str("unknown job state ", state));
    s.state_ = static_cast<JobState>(state);
    s.reason_ = j.at("reason").get<std::string>();
    s.world_size_ = j.at("world").get<int>();
    if (s.world_size_ < 0 || s.world_size_ > (1 << 16) || (s.attempt_ > 0) != (s.world_size_ > 0))
      corrupt_row(key, str("world size ", s.world_size_, " with attempt ", s.attempt_));
    s.next_ckpt_id_ = j.at("next_ckpt").get<int64_t>();
    s.pending_ckpt_ = j.at("pending").get<int64_t>();
    s.drain_after_commit_ = j.at("drain").get<bool>();
    s.unused_samples_ = j.at("unused").get<int64_t>();
    s.shards_done_ = j.at("done").get<int64_t>();
    s.last_commit_unix_s_ = j.at("last_commit").get<double>();
    s.ranks_.assign(s.world_size_, RankState{});
    s.reset_liveness(s.world_size_);
    for (const auto& [k, value] : rows) {
      if (k == "job") continue;
      key = k;
      const auto slash = k.find('/');
      const std::string kind = k.substr(0, slash == std::string::npos ? k.size() : slash);
      if (slash == std::string::npos || (kind != "rank" && kind != "plan" && kind != "ckpt" && kind != "part"))
        corrupt_row(k, "unknown kind of row (expected job, rank/<r>, plan/<epoch>, ckpt/<id> or part/<id>/<rank>)");
      const auto second = kind == "part" ? k.find('/', slash + 1) : std::string::npos;
      if (kind == "part" && second == std::string::npos) corrupt_row(k, "expected part/<checkpoint id>/<rank>");
      const int64_t id = row_id(kind == "part" ? k.substr(0, second) : k, slash);
      const auto v = nlohmann::json::parse(value);
      if (kind == "rank") {
        if (id >= s.world_size_) corrupt_row(k, str("rank ", id, " outside the job's world size ", s.world_size_));
        s.ranks_[id] = v.get<RankState>();
      } else if (kind == "plan") {
        s.plans_[id] = v.get<EpochPlan>();
      } else if (kind == "ckpt") {
        s.ckpts_[id] = v.get<CheckpointRecord>();
        // Parts embedded by an older coordinator move to their own rows
        // (written by the first take_changes): a later rewrite of this
        // checkpoint's row, which no longer carries parts, cannot drop them.
        for (const auto& [r, part] : s.ckpts_[id].parts) s.dirty_.insert(str("part/", id, "/", r));
      } else {
        // "part/<id>/<rank>" sorts after "ckpt/<id>": the parts of a pending
        // checkpoint, reported since its row was last written.
        const int64_t rank = row_id(k, second);
        RankPart p = v.get<RankPart>();
        if (p.rank != rank) corrupt_row(k, str("part of rank ", p.rank, " stored under rank ", rank));
        auto c = s.ckpts_.find(id);
        if (c == s.ckpts_.end()) corrupt_row(k, str("part of checkpoint ", id, ", which has no row 'ckpt/", id, "'"));
        c->second.parts[p.rank] = std::move(p);
      }
    }
  } catch (const CheckError&) {
    throw;
  } catch (const std::exception& e) {
    corrupt_row(key, e.what());
  }
  // Fresh plans are stored as (world, fresh): rebuild their items.
  auto expand = [&](const std::string& k, EpochPlan& p, int64_t e) {
    if (!p.fresh) return;
    if (p.world_size < 1 || p.world_size > (1 << 16)) corrupt_row(k, str("fresh plan for world size ", p.world_size));
    p = s.fresh_plan(e, p.world_size);
  };
  for (auto& [e, p] : s.plans_) expand(str("plan/", e), p, e);
  for (auto& [id, c] : s.ckpts_)
    for (auto& [e, p] : c.plans) expand(str("ckpt/", id), p, e);
  s.validate_restored();
  for (const RankState& rs : s.ranks_) {
    s.registered_count_ += rs.registered;
    s.finished_count_ += rs.finished;
  }
  for (auto& l : s.live_) {
    l.last_heartbeat = l.step_changed = now;
    l.rate_baseline = false;
  }
  s.restored_unix_s_ = now;
  if (s.state_ == JobState::kRunning && s.last_commit_unix_s_ < now - 1e9) s.last_commit_unix_s_ = now;
  s.event(str("restored job ", s.options_.job_id, " attempt ", s.attempt_, " in state ", job_state_name(s.state_)));
  return s;
}

// Every invariant the scheduler relies on when it indexes restored data.
void Scheduler::validate_restored() const {
  const int64_t n_shards = static_cast<int64_t>(index_.shards.size());
  auto check_item = [&](const std::string& key, const WorkItem& it, const std::string& where) {
    if (it.shard < 0 || it.shard >= n_shards)
      corrupt_row(key, str(where, ": shard ", it.shard, " outside the shard index (", n_shards, " shards)"));
    const int64_t samples = index_.shards[it.shard].samples;
    if (it.start < 0 || it.start > it.end || it.end > samples || it.order < 0)
      corrupt_row(key, str(where, ": samples [", it.start, ", ", it.end, ") of shard ", it.shard, " (", samples,
                           " samples), order ", it.order));
  };
  auto check_plan = [&](const std::string& key, const EpochPlan& p, int world) {
    if (p.world_size != world || static_cast<int>(p.ranks.size()) != world)
      corrupt_row(key,
                  str("plan for world size ", p.world_size, " with ", p.ranks.size(), " rank lists, expected ", world));
    for (size_t r = 0; r < p.ranks.size(); ++r)
      for (size_t i = 0; i < p.ranks[r].size(); ++i) check_item(key, p.ranks[r][i], str("rank ", r, " item ", i));
  };
  auto check_progress = [&](const std::string& key, const RankProgress& p, const std::string& where) {
    if (p.epoch < 0 || p.epoch > kMaxEpoch || p.next_position < 0)
      corrupt_row(key, str(where, ": epoch ", p.epoch, ", next position ", p.next_position));
    for (const auto& ip : p.partial)
      if (ip.epoch < 0 || ip.epoch > p.epoch || ip.position < 0 || ip.consumed < 0)
        corrupt_row(key, str(where, ": partial item (epoch ", ip.epoch, ", position ", ip.position, ", consumed ",
                             ip.consumed, ")"));
  };

  const std::string job = "job";
  if (attempt_ < 0 || next_ckpt_id_ < 1 || pending_ckpt_ < 0 || pending_ckpt_ >= next_ckpt_id_ || unused_samples_ < 0 ||
      shards_done_ < 0 || !std::isfinite(last_commit_unix_s_) || past_launches_.size() > 1000)
    corrupt_row(job, str("attempt ", attempt_, ", next checkpoint id ", next_ckpt_id_, ", pending ", pending_ckpt_,
                         ", unused ", unused_samples_, ", done ", shards_done_));
  if (pending_ckpt_ > 0) {
    auto it = ckpts_.find(pending_ckpt_);
    if (it == ckpts_.end())
      corrupt_row(job, str("pending checkpoint ", pending_ckpt_, " has no row 'ckpt/", pending_ckpt_, "'"));
    if (it->second.state != CheckpointRecord::State::kPending)
      corrupt_row(str("ckpt/", pending_ckpt_), "the job's pending checkpoint is not in state pending");
  }
  for (const auto& [e, p] : plans_) {
    const std::string key = str("plan/", e);
    if (e < 0 || e > kMaxEpoch) corrupt_row(key, "epoch out of range");
    check_plan(key, p, world_size_);
  }
  for (int r = 0; r < world_size_; ++r) {
    const std::string key = str("rank/", r);
    const RankState& rs = ranks_[r];
    if (rs.epoch < 0 || rs.epoch > kMaxEpoch || rs.next_position < 0)
      corrupt_row(key, str("epoch ", rs.epoch, ", next position ", rs.next_position));
    auto plan = plans_.find(rs.epoch);
    if (plan != plans_.end() && rs.next_position > static_cast<int64_t>(plan->second.ranks[r].size()))
      corrupt_row(key, str("next position ", rs.next_position, " beyond the ", plan->second.ranks[r].size(),
                           " items of plan/", rs.epoch));
    for (const auto& [k, l] : rs.leases) {
      if (l.epoch < 0 || l.epoch > rs.epoch || l.position < 0 || !std::isfinite(l.deadline_unix_s))
        corrupt_row(key, str("lease at epoch ", l.epoch, " position ", l.position));
      check_item(key, l.item, str("lease at epoch ", l.epoch, " position ", l.position));
    }
  }
  for (const auto& [id, c] : ckpts_) {
    const std::string key = str("ckpt/", id);
    if (c.id != id || id < 1 || id >= next_ckpt_id_)
      corrupt_row(key, str("checkpoint id ", c.id, " (next id is ", next_ckpt_id_, ")"));
    if (c.state < CheckpointRecord::State::kPending || c.state > CheckpointRecord::State::kDeleted)
      corrupt_row(key, str("unknown checkpoint state ", static_cast<int>(c.state)));
    if (c.step < 0 || c.step > kMaxStep || c.dir.empty() || c.attempt < 0 || c.attempt > attempt_)
      corrupt_row(key, str("step ", c.step, ", attempt ", c.attempt, ", folder '", c.dir, "'"));
    if (c.state == CheckpointRecord::State::kPending && id != pending_ckpt_ && c.attempt == attempt_)
      corrupt_row(key, str("pending, but the job's pending checkpoint is ", pending_ckpt_));
    for (const auto& [r, part] : c.parts) {
      if (r < 0 || r >= c.world_size || part.rank != r)
        corrupt_row(key, str("part of rank ", part.rank, " stored as rank ", r, " (world size ", c.world_size, ")"));
      check_progress(key, part.progress, str("rank ", r, "'s progress"));
    }
    if (c.state != CheckpointRecord::State::kCommitted) continue;
    // A committed checkpoint is what a new attempt resumes from: every
    // rank's part and the plans its progress refers to must be there.
    if (c.world_size < 1 || static_cast<int>(c.parts.size()) != c.world_size)
      corrupt_row(key, str("committed with ", c.parts.size(), " parts for world size ", c.world_size));
    for (const auto& [e, p] : c.plans) check_plan(key, p, c.world_size);
  }
}

}  // namespace cnx::coordinator
