// JSON form of the scheduler's durable rows. Opaque bytes (data cursors)
// are stored as hex so the rows stay valid UTF-8 text.
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/hash.h"
#include "coordinator/scheduler_types.h"

namespace cnx::coordinator {
namespace {

std::string cursor_from_hex(const std::string& hex) {
  std::string out;
  CNX_CHECK(from_hex(hex, &out), "stored data cursor: not an even-length hex string");
  return out;
}

}  // namespace

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kWaiting:
      return "waiting";
    case JobState::kRunning:
      return "running";
    case JobState::kRestarting:
      return "restarting";
    case JobState::kStopped:
      return "stopped";
    case JobState::kCompleted:
      return "completed";
    case JobState::kFailed:
      return "failed";
  }
  return "unknown";
}

int64_t EpochPlan::rank_samples(int r) const {
  int64_t n = 0;
  for (const auto& it : ranks.at(r)) n += it.size();
  return n;
}

int64_t EpochPlan::min_rank_samples() const {
  if (min_rank_samples_cache >= 0) return min_rank_samples_cache;
  int64_t m = -1;
  for (size_t r = 0; r < ranks.size(); ++r) {
    int64_t n = rank_samples(static_cast<int>(r));
    if (m < 0 || n < m) m = n;
  }
  min_rank_samples_cache = m < 0 ? 0 : m;
  return min_rank_samples_cache;
}

void to_json(nlohmann::json& j, const WorkItem& v) {
  j = nlohmann::json::array({v.shard, v.start, v.end, v.order});
}
void from_json(const nlohmann::json& j, WorkItem& v) {
  v.shard = j.at(0).get<int64_t>();
  v.start = j.at(1).get<int64_t>();
  v.end = j.at(2).get<int64_t>();
  v.order = j.at(3).get<int64_t>();
}

void to_json(nlohmann::json& j, const EpochPlan& v) {
  if (v.fresh)
    j = {{"world", v.world_size}, {"fresh", true}};  // O(1) bytes: rebuilt on restore
  else
    j = {{"world", v.world_size}, {"ranks", v.ranks}};
}
// A fresh plan comes back with no ranks: Scheduler::restore rebuilds it.
void from_json(const nlohmann::json& j, EpochPlan& v) {
  v.world_size = j.at("world").get<int>();
  v.fresh = j.contains("fresh") && j.at("fresh").get<bool>();
  v.ranks.clear();
  if (!v.fresh) v.ranks = j.at("ranks").get<std::vector<std::vector<WorkItem>>>();
}

void to_json(nlohmann::json& j, const RankState& v) {
  nlohmann::json leases = nlohmann::json::array();
  for (const auto& [key, l] : v.leases)
    leases.push_back({{"epoch", l.epoch},
                      {"pos", l.position},
                      {"item", l.item},
                      {"acquired", l.acquired_unix_s},
                      {"deadline", l.deadline_unix_s}});
  j = {{"registered", v.registered}, {"host", v.host},         {"epoch", v.epoch},
       {"next", v.next_position},    {"finished", v.finished}, {"leases", leases}};
  if (v.hosted) j["hosted"] = true;  // absent in rows of per-rank jobs (and of older coordinators)
}
void from_json(const nlohmann::json& j, RankState& v) {
  v.registered = j.at("registered").get<bool>();
  v.host = j.at("host").get<std::string>();
  v.epoch = j.at("epoch").get<int64_t>();
  v.next_position = j.at("next").get<int64_t>();
  v.finished = j.at("finished").get<bool>();
  v.hosted = j.contains("hosted") && j.at("hosted").get<bool>();
  v.leases.clear();
  for (const auto& lj : j.at("leases")) {
    Lease l;
    l.epoch = lj.at("epoch").get<int64_t>();
    l.position = lj.at("pos").get<int64_t>();
    l.item = lj.at("item").get<WorkItem>();
    l.acquired_unix_s = lj.at("acquired").get<double>();
    l.deadline_unix_s = lj.at("deadline").get<double>();
    v.leases[{l.epoch, l.position}] = l;
  }
}

void to_json(nlohmann::json& j, const RankPart& v) {
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : v.files) files.push_back({f.path, f.sha256, f.bytes});
  nlohmann::json partial = nlohmann::json::array();
  for (const auto& p : v.progress.partial) partial.push_back({p.position, p.consumed, p.epoch});
  j = {{"rank", v.rank},
       {"step", v.step},
       {"files", files},
       {"epoch", v.progress.epoch},
       {"next", v.progress.next_position},
       {"partial", partial},
       {"cursor", to_hex(v.data_cursor)}};
}
void from_json(const nlohmann::json& j, RankPart& v) {
  v.rank = j.at("rank").get<int>();
  v.step = j.at("step").get<int64_t>();
  v.files.clear();
  for (const auto& f : j.at("files"))
    v.files.push_back({f.at(0).get<std::string>(), f.at(1).get<std::string>(), f.at(2).get<int64_t>()});
  v.progress.epoch = j.at("epoch").get<int64_t>();
  v.progress.next_position = j.at("next").get<int64_t>();
  v.progress.partial.clear();
  for (const auto& p : j.at("partial"))
    v.progress.partial.push_back({p.at(0).get<int64_t>(), p.at(1).get<int64_t>(), p.at(2).get<int64_t>()});
  v.data_cursor = cursor_from_hex(j.at("cursor").get<std::string>());
}

// The parts are rows of their own (part/<id>/<rank>, scheduler_rows.cc): a
// commit rewrites O(1) bytes, not O(W). Rows of older coordinators carry
// them here, and are still read.
void to_json(nlohmann::json& j, const CheckpointRecord& v) {
  nlohmann::json parts = nlohmann::json::array();
  nlohmann::json plans = nlohmann::json::object();
  for (const auto& [e, p] : v.plans) plans[std::to_string(e)] = p;
  j = {{"id", v.id},
       {"step", v.step},
       {"dir", v.dir},
       {"world", v.world_size},
       {"attempt", v.attempt},
       {"state", static_cast<int>(v.state)},
       {"planned", v.planned_unix_s},
       {"committed", v.committed_unix_s},
       {"parts", parts},
       {"plans", plans},
       {"unused", v.unused_samples},
       {"done", v.shards_done}};
}
void from_json(const nlohmann::json& j, CheckpointRecord& v) {
  v.id = j.at("id").get<int64_t>();
  v.step = j.at("step").get<int64_t>();
  v.dir = j.at("dir").get<std::string>();
  v.world_size = j.at("world").get<int>();
  v.attempt = j.at("attempt").get<int64_t>();
  v.state = static_cast<CheckpointRecord::State>(j.at("state").get<int>());
  v.planned_unix_s = j.at("planned").get<double>();
  v.committed_unix_s = j.at("committed").get<double>();
  v.unused_samples = j.at("unused").get<int64_t>();
  v.shards_done = j.at("done").get<int64_t>();
  v.parts.clear();
  for (const auto& pj : j.value("parts", nlohmann::json::array())) {
    RankPart p = pj.get<RankPart>();
    v.parts[p.rank] = std::move(p);
  }
  v.plans.clear();
  for (const auto& [k, pj] : j.at("plans").items()) v.plans[std::stoll(k)] = pj.get<EpochPlan>();
}

}  // namespace cnx::coordinator
