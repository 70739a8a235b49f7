// The host speaker protocol of the Scheduler (scheduler.h; docs/protocols.md,
// "Host speaker"): one speaker per host registers, heartbeats, leases and
// reports checkpoint parts for all the host's ranks. Each entry obeys the rule
// of the matching per-rank call, so the guarantees (fencing, deterministic
// assignment, at-most-once, commit only when all W parts are in) are those of
// the per-rank protocol; only the number of calls (and of durable
// transactions: one per host call) changes.
#include <set>
#include <utility>

#include "common/check.h"
#include "coordinator/scheduler.h"

namespace cnx::coordinator {
namespace {

[[noreturn]] void fail(ErrorCode code, const std::string& msg) {
  throw SchedulerError(code, msg);
}

void check_count(size_t n, int world, const char* field) {
  if (n == 0) fail(ErrorCode::kInvalidArgument, str(field, ": empty"));
  if (n > static_cast<size_t>(std::max(world, 1)) * 64)
    fail(ErrorCode::kInvalidArgument, str(field, ": ", n, " entries, more than 64 per rank of the job"));
}

}  // namespace

HostRegisterResult Scheduler::register_host(const std::string& job_id, const std::vector<int>& ranks, int world,
                                            const std::string& host, const std::string& launch_id, double now) {
  check_job(job_id);
  if (host.empty()) fail(ErrorCode::kInvalidArgument, "host: empty (a host speaker names its host)");
  if (ranks.empty()) fail(ErrorCode::kInvalidArgument, "ranks: empty (a host speaker registers its local ranks)");
  if (world >= 1 && world <= options_.max_world_size) {
    std::set<int> seen;
    for (size_t i = 0; i < ranks.size(); ++i) {
      if (ranks[i] < 0 || ranks[i] >= world)
        fail(ErrorCode::kInvalidArgument, str("ranks[", i, "]: ", ranks[i], " out of range [0, ", world, ")"));
      if (!seen.insert(ranks[i]).second)
        fail(ErrorCode::kInvalidArgument, str("ranks[", i, "]: rank ", ranks[i], " repeated"));
    }
  }
  admit_launch(job_id, world, host, launch_id, now);
  // Two hosts claiming one rank: the first claim of this attempt holds; the
  // second host is refused as a whole (none of its ranks is registered).
  for (int r : ranks) {
    const RankState& rs = ranks_[r];
    if (rs.registered && rs.hosted && rs.host != host)
      fail(ErrorCode::kFailedPrecondition, str("rank ", r, " is already registered by host '", rs.host, "' in attempt ",
                                               attempt_, "; host '", host, "' cannot claim it"));
    if (rs.registered && !rs.hosted)
      fail(ErrorCode::kFailedPrecondition,
           str("rank ", r, " registered on its own in attempt ", attempt_, "; host '", host, "' cannot claim it"));
  }
  HostRegisterResult res;
  for (int r : ranks) {
    mark_registered(r, ranks_[r], host, true, now);
    res.start_epochs.push_back(ranks_[r].epoch);
  }
  res.attempt = attempt_;
  res.world_size = world_size_;
  res.state = state_;
  res.resume = latest_committed();
  return res;
}

HeartbeatResult Scheduler::host_heartbeat(const HostRef& ref, const std::vector<RankBeat>& beats, double now) {
  check_job(ref.job_id);
  check_count(beats.size(), world_size_, "ranks");
  std::vector<RankState*> states;
  std::set<int> seen;
  for (size_t i = 0; i < beats.size(); ++i) {
    states.push_back(&check_host(ref, beats[i].rank));
    if (!seen.insert(beats[i].rank).second)
      fail(ErrorCode::kInvalidArgument, str("ranks[", i, "]: rank ", beats[i].rank, " repeated"));
    try {
      check_beat(beats[i].info);
    } catch (const SchedulerError& e) {
      fail(e.code(), str("ranks[", i, "] (rank ", beats[i].rank, "): ", e.what()));
    }
  }
  for (size_t i = 0; i < beats.size(); ++i) apply_beat(beats[i].rank, *states[i], beats[i].info, now);
  return beat_result();
}

std::vector<AcquireResult> Scheduler::acquire_many(const HostRef& ref, const std::vector<ShardAskInfo>& asks,
                                                   double now) {
  check_job(ref.job_id);
  check_count(asks.size(), world_size_, "asks");
  for (const auto& a : asks) check_host(ref, a.rank);
  std::vector<AcquireResult> out;
  out.reserve(asks.size());
  std::set<std::pair<int, int64_t>> ended;  // (rank, epoch) whose sequence ended in this call
  for (size_t i = 0; i < asks.size(); ++i) {
    const ShardAskInfo& a = asks[i];
    RankState& rs = ranks_[a.rank];
    if (ended.count({a.rank, a.epoch}) && rs.epoch == a.epoch && a.position > rs.next_position) {
      AcquireResult end;
      end.end_of_epoch = true;
      const EpochPlan& p = plan(a.epoch);
      end.rank_samples = p.rank_samples(a.rank);
      end.min_rank_samples = p.min_rank_samples();
      out.push_back(end);
      continue;
    }
    try {
      out.push_back(acquire_for(a.rank, rs, a.epoch, a.position, now));
    } catch (const SchedulerError& e) {
      fail(e.code(), str("asks[", i, "] (rank ", a.rank, "): ", e.what()));
    }
    if (out.back().end_of_epoch) ended.insert({a.rank, a.epoch});
  }
  return out;
}

void Scheduler::shards_done(const HostRef& ref, const std::vector<ShardDoneInfo>& done, double now) {
  check_job(ref.job_id);
  check_count(done.size(), world_size_, "done");
  for (const auto& d : done) check_host(ref, d.rank);
  for (size_t i = 0; i < done.size(); ++i) {
    const ShardDoneInfo& d = done[i];
    try {
      done_for(d.rank, ranks_[d.rank], d.epoch, d.position, d.consumed);
    } catch (const SchedulerError& e) {
      fail(e.code(), str("done[", i, "] (rank ", d.rank, "): ", e.what()));
    }
  }
  (void)now;
}

bool Scheduler::report_parts(const HostRef& ref, int64_t plan_id, int64_t step, std::vector<RankPart> parts,
                             double now) {
  check_job(ref.job_id);
  check_count(parts.size(), world_size_, "parts");
  std::set<int> seen;
  for (size_t i = 0; i < parts.size(); ++i) {
    check_host(ref, parts[i].rank);
    if (!seen.insert(parts[i].rank).second)
      fail(ErrorCode::kInvalidArgument, str("parts[", i, "]: rank ", parts[i].rank, " repeated"));
  }
  auto it = ckpts_.find(plan_id);
  if (it == ckpts_.end()) fail(ErrorCode::kNotFound, str("plan_id: no checkpoint plan ", plan_id));
  CheckpointRecord& rec = it->second;
  if (rec.state == CheckpointRecord::State::kCommitted && rec.attempt == attempt_) {
    bool all = true;
    for (const auto& p : parts) {
      auto f = rec.parts.find(p.rank);
      all = all && f != rec.parts.end() && f->second.step == step;
    }
    if (all) return true;  // a retry of parts that are already committed
  }
  if (rec.state != CheckpointRecord::State::kPending || rec.attempt != attempt_)
    fail(ErrorCode::kFailedPrecondition, str("checkpoint plan ", plan_id, " is no longer pending"));
  if (step < rec.step || step > kMaxStep)
    fail(ErrorCode::kInvalidArgument, str("step: ", step, " out of range [", rec.step, ", ", kMaxStep, "]"));
  // Every recorded part has the same step: one recorded part of another host is enough (O(host), not O(W)).
  for (auto o = rec.parts.begin(); o != rec.parts.end(); ++o) {
    if (seen.count(o->first)) continue;
    if (o->second.step != step)
      fail(ErrorCode::kInvalidArgument,
           str("step: ", step, " differs from rank ", o->first, "'s step ", o->second.step, " for plan ", plan_id));
    break;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    try {
      validate_part(parts[i].rank, ranks_[parts[i].rank], parts[i]);
    } catch (const SchedulerError& e) {
      fail(e.code(), str("parts[", i, "] (rank ", parts[i].rank, "): ", e.what()));
    }
  }
  for (auto& part : parts) {
    const int r = part.rank;
    part.step = step;
    rec.parts[r] = std::move(part);
    dirty_.insert("part/" + std::to_string(rec.id) + "/" + std::to_string(r));
  }
  if (static_cast<int>(rec.parts.size()) < world_size_) return false;
  commit(rec, now);
  return true;
}

}  // namespace cnx::coordinator
