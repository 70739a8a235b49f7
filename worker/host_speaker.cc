#include "worker/host_speaker.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "common/check.h"
#include "common/logging.h"
#include "coordinator/client.h"
#include "worker/host_relay.h"

namespace cnx::worker {

namespace pb = cnx::v1;
using coordinator::RpcError;

// ---- election ----

std::string host_entry(const std::string& advertised, int local_rank, int local_size) {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  char ns[128] = {0};
  const ssize_t n = ::readlink("/proc/self/ns/net", ns, sizeof(ns) - 1);  // "net:[4026531992]"
  const std::string netns = n > 0 ? std::string(ns, static_cast<size_t>(n)) : std::string("?");
  return str(name, "|", netns, "\t", advertised.empty() ? std::string(name) : advertised, "\t", local_rank, "\t",
             local_size);
}

HostPlan plan_hosts(const std::vector<std::string>& entries, int rank) {
  struct Entry {
    std::string key, advertised;
    int local_rank = -1, local_size = 0;
  };
  HostPlan plan;
  std::vector<Entry> es(entries.size());
  for (size_t r = 0; r < entries.size(); ++r) {
    std::istringstream in(entries[r]);
    std::string lr, ls;
    if (!std::getline(in, es[r].key, '\t') || !std::getline(in, es[r].advertised, '\t') ||
        !std::getline(in, lr, '\t') || !std::getline(in, ls)) {
      plan.why = str("rank ", r, "'s host entry '", entries[r], "' is malformed");
      return plan;
    }
    try {
      es[r].local_rank = std::stoi(lr);
      es[r].local_size = std::stoi(ls);
    } catch (const std::exception&) {
      plan.why = str("rank ", r, "'s host entry '", entries[r], "' has no local rank/size");
      return plan;
    }
  }
  std::map<std::string, std::vector<int>> groups;
  for (size_t r = 0; r < es.size(); ++r) groups[es[r].key].push_back(static_cast<int>(r));
  std::map<std::string, int> speakers;  // key -> speaker
  std::map<std::string, int> names;     // advertised name -> hosts using it
  for (const auto& [key, ranks] : groups) {
    const int n = static_cast<int>(ranks.size());
    std::set<int> local;
    for (int r : ranks) {
      if (es[r].local_size != n || es[r].local_rank < 0 || es[r].local_rank >= n ||
          !local.insert(es[r].local_rank).second) {
        plan.why = str("rank ", r, " reports local rank ", es[r].local_rank, " of ", es[r].local_size, ", but ", n,
                       " ranks share its machine and network namespace ('", key, "')");
        return plan;
      }
      if (es[r].local_rank == 0) speakers[key] = r;
    }
    ++names[es[speakers[key]].advertised];
  }
  const std::string& mine = es.at(static_cast<size_t>(rank)).key;
  plan.valid = true;
  plan.ranks = groups[mine];
  plan.speaker = speakers[mine];
  plan.host = es[plan.speaker].advertised;
  if (names[plan.host] > 1) plan.host += str("/r", plan.speaker);
  plan.hosts = static_cast<int>(groups.size());
  return plan;
}

std::string relay_name(const std::string& launch_id, int speaker) {
  return str("cnx-host-", launch_id, "-", speaker);
}

namespace {

// ---- frames ----
// Requests: 'R' RegisterRequest, 'B' RankBeat, 'A' ShardAsk, 'D' ShardDone,
// 'P' CheckpointPartsRequest (one part). Replies: the lower-case kind with
// RegisterReply / HeartbeatReply / AcquireShardReply / "" /
// CheckpointPartReply; 'F' (register per rank: the coordinator has no host
// calls); 'E' "<gRPC code>\n<message>".

template <class M>
relay::Frame frame(char kind, const M& m) {
  return relay::Frame{kind, m.SerializeAsString()};
}

relay::Frame error_frame(int code, const std::string& message) {
  return relay::Frame{'E', str(code, "\n", message)};
}

template <class M>
M parse(const relay::Frame& f, const char* what) {
  M m;
  if (!m.ParseFromString(f.body)) throw std::runtime_error(str("relay: malformed ", what));
  return m;
}

pb::RankBeat to_beat(int rank, const pb::HeartbeatRequest& q) {
  pb::RankBeat b;
  b.set_rank(rank);
  b.set_step(q.step());
  b.set_epoch(q.epoch());
  b.set_loss(q.loss());
  b.set_samples_per_s(q.samples_per_s());
  b.set_preempted(q.preempted());
  b.set_status(q.status());
  b.set_message(q.message());
  b.set_final_step(q.final_step());
  return b;
}

pb::RankPart to_part(int rank, const pb::CheckpointPartRequest& q) {
  pb::RankPart p;
  p.set_rank(rank);
  *p.mutable_files() = q.files();
  *p.mutable_progress() = q.progress();
  p.set_data_cursor(q.data_cursor());
  return p;
}

bool unreachable(const RpcError& e) {
  return e.code() == grpc::StatusCode::UNAVAILABLE || e.code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

// ---- the speaker's side ----

class HostHub {
 public:
  explicit HostHub(const HostVoiceOptions& o)
      : o_(o), client_(std::make_unique<coordinator::CoordinatorClient>(client_options(o.link))) {
    for (int r : o_.plan.ranks) locals_[r];
    locals_[speaker()].connected = true;
    last_reply_.set_action(pb::ACTION_WAIT);
    last_reply_.set_state(pb::JOB_WAITING);
    server_ = std::make_unique<relay::RelayServer>(
        relay_name(o_.launch_id, speaker()), [this](const relay::Frame& f, int64_t c) { return handle(f, c); },
        [this](int64_t c) { closed(c); });
  }

  ~HostHub() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    server_.reset();  // joins the relay's threads (none waits on cv_ any more)
  }

  int speaker() const { return o_.plan.speaker; }

  // RegisterHost for every local rank; nullopt: per-rank fallback.
  std::optional<pb::RegisterReply> register_host(int rank) {
    try {
      pb::RegisterHostReply rep =
          client_->register_host(o_.job_id, o_.plan.ranks, o_.world, o_.plan.host, o_.launch_id);
      std::lock_guard<std::mutex> lock(mu_);
      host_reply_ = std::move(rep);
      reg_ = Reg::kHost;
    } catch (const RpcError& e) {
      std::lock_guard<std::mutex> lock(mu_);
      if (e.code() == grpc::StatusCode::UNIMPLEMENTED && !o_.strict) {
        reg_ = Reg::kFallback;
      } else {
        reg_ = Reg::kError;
        reg_code_ = e.code();
        reg_error_ = e.code() == grpc::StatusCode::UNIMPLEMENTED
                         ? str("coordinator.protocol is 'host', but the coordinator at ", o_.link.target,
                               " does not implement RegisterHost (an older version): use coordinator.protocol auto "
                               "or rank. ",
                               e.what())
                         : std::string(e.what());
      }
    }
    cv_.notify_all();
    std::lock_guard<std::mutex> lock(mu_);
    if (reg_ == Reg::kFallback) return std::nullopt;
    if (reg_ == Reg::kError) throw RpcError(static_cast<grpc::StatusCode>(reg_code_), "RegisterHost", reg_error_);
    return reply_for(rank);
  }

  // `rank`'s progress; sends the host's heartbeat when `send` or when the
  // beat carries news, else answers the last reply.
  pb::HeartbeatReply beat(int rank, const pb::RankBeat& b, bool send) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      Local& l = locals_.at(rank);
      const bool news = b.status() != pb::WORKER_RUNNING || b.final_step() != l.beat.final_step() ||
                        (b.preempted() && !l.beat.preempted());
      l.beat = b;
      l.have = true;
      send = send || news;
      if (!send) return last_reply_;
    }
    cv_.notify_all();
    return send_beats();
  }

  pb::AcquireShardReply acquire(int rank, int64_t epoch, int64_t position) {
    std::lock_guard<std::mutex> g(lease_mu_);
    for (int round = 0; round < 2; ++round) {
      if (auto it = grants_.find({rank, epoch, position}); it != grants_.end()) {
        pb::AcquireShardReply r = std::move(it->second);
        grants_.erase(it);
        return r;
      }
      if (auto it = ended_.find({rank, epoch}); it != ended_.end() && position >= it->second.first)
        return it->second.second;
      if (round == 0) fetch(rank, epoch, position);
    }
    throw RpcError(grpc::StatusCode::INTERNAL, "AcquireShards",
                   str("the reply holds no lease for rank ", rank, " epoch ", epoch, " position ", position));
  }

  void done(int rank, int64_t epoch, int64_t position, int64_t consumed) {
    bool full;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pb::ShardDone d;
      d.set_rank(rank);
      d.set_epoch(epoch);
      d.set_position(position);
      d.set_consumed(consumed);
      dones_.push_back(d);
      full = dones_.size() >= max_batch();
    }
    if (full) flush_dones();
  }

  pb::CheckpointPartReply part(int rank, int64_t plan, int64_t step, pb::RankPart part) {
    std::unique_lock<std::mutex> lock(mu_);
    Parts& p = parts_[plan];
    ++p.waiting;
    struct Leave {  // on every way out
      Parts& p;
      ~Leave() { --p.waiting; }
    } leave{p};
    p.step = step;
    p.results.erase(rank);
    p.pending[rank] = std::move(part);
    cv_.notify_all();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o_.part_wait_s);
    for (;;) {
      if (auto it = p.results.find(rank); it != p.results.end()) {
        const Result r = it->second;
        if (!r.error.empty()) throw RpcError(static_cast<grpc::StatusCode>(r.code), "ReportCheckpointParts", r.error);
        pb::CheckpointPartReply rep;
        rep.set_committed(r.committed);
        return rep;
      }
      if (stopping_) throw RpcError(grpc::StatusCode::CANCELLED, "ReportCheckpointParts", "the worker is stopping");
      const bool all = p.pending.size() + p.results.size() >= o_.plan.ranks.size();
      if (!p.sending && !p.pending.empty() && (all || std::chrono::steady_clock::now() >= deadline)) {
        p.sending = true;
        pb::CheckpointPartsRequest req;
        req.set_plan_id(plan);
        req.set_step(p.step);
        std::vector<int> sent;
        for (auto& [r, part] : p.pending) {
          sent.push_back(r);
          *req.add_parts() = std::move(part);
        }
        p.pending.clear();
        if (!all)
          CNX_LOG_WARN("checkpoint plan {}: reporting {} of the host's {} parts after {} s without the others", plan,
                       sent.size(), o_.plan.ranks.size(), o_.part_wait_s);
        lock.unlock();
        Result res;
        try {
          flush_dones();
          res.committed = client_->report_checkpoint_parts(req).committed();
        } catch (const RpcError& e) {
          res.code = e.code();
          res.error = e.what();
        } catch (const std::exception& e) {
          res.code = grpc::StatusCode::UNKNOWN;
          res.error = e.what();
        }
        lock.lock();
        for (int r : sent) p.results[r] = res;
        p.sending = false;
        // Plans nobody waits for any more are forgotten, beyond the last few.
        for (auto it = parts_.begin(); parts_.size() > 8 && it != parts_.end();)
          it = it->second.waiting == 0 && it->second.pending.empty() && !it->second.sending ? parts_.erase(it) : ++it;
        cv_.notify_all();
        continue;
      }
      cv_.wait_until(lock, deadline);
    }
  }

  // Until every other local rank has closed its relay connections (it
  // reports its final status before, and must get the answer): at most
  // final_wait_s.
  void wait_members_final() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::duration<double>(o_.final_wait_s), [this] {
      for (const auto& [r, l] : locals_)
        if (r != speaker() && l.connected) return false;
      return true;
    });
  }

  // Sends the done reports collected so far (one ReportShardsDone).
  void flush_dones() {
    std::lock_guard<std::mutex> f(flush_mu_);
    std::vector<pb::ShardDone> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(dones_);
    }
    if (batch.empty()) return;
    pb::ShardsDoneRequest req;
    for (auto& d : batch) *req.add_done() = d;
    try {
      client_->report_shards_done(req);
    } catch (const RpcError& e) {
      if (unreachable(e)) {
        std::lock_guard<std::mutex> lock(mu_);
        dones_.insert(dones_.begin(), batch.begin(), batch.end());
        throw;
      }
      // A refused report (a bug, or fenced off, which the heartbeat reports)
      // must not block the next ones.
      CNX_LOG_ERROR("{} shard done reports refused by the coordinator: {}", batch.size(), e.what());
    }
  }

 private:
  enum class Reg { kPending, kHost, kFallback, kError };
  struct Local {
    bool have = false, connected = false;
    int64_t connection = 0;
    pb::RankBeat beat;
  };
  struct Result {
    bool committed = false;
    int code = 0;
    std::string error;
  };
  struct Parts {
    int64_t step = 0;
    std::map<int, pb::RankPart> pending;
    std::map<int, Result> results;
    bool sending = false;
    int waiting = 0;  // part() calls inside (the entry stays while > 0)
  };

  size_t max_batch() const { return 32 * o_.plan.ranks.size(); }  // within the coordinator's 64 per rank

  pb::RegisterReply reply_for(int rank) const {
    const pb::RegisterHostReply& h = host_reply_;
    pb::RegisterReply r;
    r.set_attempt(h.attempt());
    r.set_world_size(h.world_size());
    r.set_state(h.state());
    r.set_heartbeat_s(h.heartbeat_s());
    r.set_seed(h.seed());
    for (const auto& s : h.ranks())
      if (s.rank() == rank) r.set_start_epoch(s.start_epoch());
    if (h.has_resume()) {
      *r.mutable_resume() = h.resume();
      r.mutable_resume()->clear_parts();
      for (const auto& p : h.resume().parts())
        if (p.rank() == rank) *r.mutable_resume()->add_parts() = p;
    }
    return r;
  }

  pb::HeartbeatReply send_beats() {
    flush_dones();
    pb::HostHeartbeatRequest req;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [r, l] : locals_)
        if (l.have && (l.connected || l.beat.status() != pb::WORKER_RUNNING)) *req.add_ranks() = l.beat;
    }
    if (req.ranks_size() == 0) {
      std::lock_guard<std::mutex> lock(mu_);
      return last_reply_;
    }
    pb::HeartbeatReply rep = client_->host_heartbeat(req);
    std::lock_guard<std::mutex> lock(mu_);
    last_reply_ = rep;
    return rep;
  }

  // One AcquireShards: `rank`'s asks from `position`, the other local ranks'
  // from where their fetched items end, with the pending done reports.
  void fetch(int rank, int64_t epoch, int64_t position) {
    const auto asks_of = [&](pb::AcquireShardsRequest& req, int r, int64_t from) {
      for (int k = 0; k < o_.ask_ahead; ++k) {
        auto* a = req.add_asks();
        a->set_rank(r);
        a->set_epoch(epoch);
        a->set_position(from + k);
      }
    };
    pb::AcquireShardsRequest req;
    asks_of(req, rank, position);
    for (int r : o_.plan.ranks) {
      if (r == rank || ended_.count({r, epoch})) continue;
      auto n = next_.find({r, epoch});
      asks_of(req, r, n == next_.end() ? 0 : n->second);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& d : dones_) *req.add_done() = d;
      dones_.clear();
    }
    pb::AcquireShardsReply rep;
    try {
      rep = client_->acquire_shards(req);
    } catch (const RpcError& e) {
      const bool others = req.asks_size() > o_.ask_ahead;
      if (unreachable(e) || !others) {
        requeue(req);
        throw;
      }
      // Another local rank is not where this one is (it should be: the ranks
      // change epochs together): ask for this rank alone.
      CNX_LOG_WARN("AcquireShards for the host's ranks refused ({}); asking for rank {} alone", e.what(), rank);
      req.mutable_asks()->DeleteSubrange(o_.ask_ahead, req.asks_size() - o_.ask_ahead);
      try {
        rep = client_->acquire_shards(req);
      } catch (const RpcError&) {
        requeue(req);
        throw;
      }
    }
    if (rep.grants_size() != req.asks_size())
      throw RpcError(grpc::StatusCode::INTERNAL, "AcquireShards",
                     str(rep.grants_size(), " grants for ", req.asks_size(), " asks"));
    for (int i = 0; i < req.asks_size(); ++i) {
      const auto& a = req.asks(i);
      const auto& g = rep.grants(i);
      if (g.end_of_epoch()) {
        auto e = ended_.find({a.rank(), epoch});
        if (e == ended_.end() || a.position() < e->second.first) ended_[{a.rank(), epoch}] = {a.position(), g};
      } else {
        grants_[{a.rank(), epoch, a.position()}] = g;
        int64_t& n = next_[{a.rank(), epoch}];
        n = std::max(n, a.position() + 1);
      }
    }
    // Epochs before the previous one are over for every local rank.
    const auto old = [&](int64_t e) { return e < epoch - 1; };
    for (auto it = grants_.begin(); it != grants_.end();) it = old(std::get<1>(it->first)) ? grants_.erase(it) : ++it;
    for (auto it = next_.begin(); it != next_.end();) it = old(it->first.second) ? next_.erase(it) : ++it;
    for (auto it = ended_.begin(); it != ended_.end();) it = old(it->first.second) ? ended_.erase(it) : ++it;
  }

  void requeue(const pb::AcquireShardsRequest& req) {
    std::lock_guard<std::mutex> lock(mu_);
    dones_.insert(dones_.begin(), req.done().begin(), req.done().end());
  }

  relay::Frame handle(const relay::Frame& f, int64_t connection) {
    try {
      switch (f.kind) {
        case 'R': {
          const auto q = parse<pb::RegisterRequest>(f, "register request");
          check_local(q.rank());
          std::unique_lock<std::mutex> lock(mu_);
          Local& l = locals_.at(q.rank());
          l.connected = true;
          l.connection = connection;
          cv_.wait(lock, [this] { return stopping_ || reg_ != Reg::kPending; });
          if (stopping_) return error_frame(grpc::StatusCode::CANCELLED, "the host's speaker is stopping");
          if (reg_ == Reg::kFallback) return relay::Frame{'F', ""};
          if (reg_ == Reg::kError) return error_frame(reg_code_, reg_error_);
          return frame('r', reply_for(q.rank()));
        }
        case 'B': {
          const auto b = parse<pb::RankBeat>(f, "heartbeat");
          check_local(b.rank());
          return frame('b', beat(b.rank(), b, false));
        }
        case 'A': {
          const auto a = parse<pb::ShardAsk>(f, "shard ask");
          check_local(a.rank());
          return frame('a', acquire(a.rank(), a.epoch(), a.position()));
        }
        case 'D': {
          const auto d = parse<pb::ShardDone>(f, "shard done");
          check_local(d.rank());
          done(d.rank(), d.epoch(), d.position(), d.consumed());
          return relay::Frame{'d', ""};
        }
        case 'P': {
          auto q = parse<pb::CheckpointPartsRequest>(f, "checkpoint part");
          if (q.parts_size() != 1) throw std::runtime_error("relay: a checkpoint part request carries one part");
          const int r = q.parts(0).rank();
          check_local(r);
          return frame('p', part(r, q.plan_id(), q.step(), std::move(*q.mutable_parts(0))));
        }
        default:
          return error_frame(grpc::StatusCode::INVALID_ARGUMENT, str("relay: unknown request kind ", int(f.kind)));
      }
    } catch (const RpcError& e) {
      return error_frame(e.code(), e.what());
    } catch (const std::exception& e) {
      return error_frame(grpc::StatusCode::UNKNOWN, e.what());
    }
  }

  void check_local(int rank) const {
    if (!locals_.count(rank) || rank == speaker())
      throw RpcError(grpc::StatusCode::INVALID_ARGUMENT, "relay",
                     str("rank ", rank, " is not a local rank relayed by the speaker of host '", o_.plan.host, "'"));
  }

  void closed(int64_t connection) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [r, l] : locals_)
        if (r != speaker() && l.connection == connection) l.connected = false;
    }
    cv_.notify_all();
  }

  const HostVoiceOptions o_;
  std::unique_ptr<coordinator::CoordinatorClient> client_;

  std::mutex mu_;  // everything below except the lease cache
  std::condition_variable cv_;
  bool stopping_ = false;
  Reg reg_ = Reg::kPending;
  pb::RegisterHostReply host_reply_;
  int reg_code_ = 0;
  std::string reg_error_;
  std::map<int, Local> locals_;  // fixed keys: the host's ranks
  pb::HeartbeatReply last_reply_;
  std::vector<pb::ShardDone> dones_;
  std::map<int64_t, Parts> parts_;

  std::mutex flush_mu_;  // one done flush at a time (keeps their order)
  std::mutex lease_mu_;  // the lease cache: one fetch at a time
  std::map<std::tuple<int, int64_t, int64_t>, pb::AcquireShardReply> grants_;           // (rank, epoch, position)
  std::map<std::pair<int, int64_t>, int64_t> next_;                                     // next position to ask
  std::map<std::pair<int, int64_t>, std::pair<int64_t, pb::AcquireShardReply>> ended_;  // end position, reply

  std::unique_ptr<relay::RelayServer> server_;  // last: stopped first
};

std::string ranks_text(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ",") + std::to_string(r);
  return s;
}

class SpeakerVoice final : public CoordinatorVoice {
 public:
  SpeakerVoice(const HostVoiceOptions& o, int rank) : o_(o), rank_(rank), hub_(std::make_unique<HostHub>(o)) {}
  pb::RegisterReply register_rank(const std::string& job_id, int rank, int world, const std::string& host,
                                  const std::string& launch_id) override {
    if (auto r = hub_->register_host(rank_)) return *r;
    CNX_LOG_WARN("the coordinator at {} has no host calls (an older version): the ranks register on their own",
                 o_.link.target);
    fallback_ = make_rank_voice(o_.link);
    return fallback_->register_rank(job_id, rank, world, host, launch_id);
  }
  pb::HeartbeatReply heartbeat(const pb::HeartbeatRequest& q) override {
    if (fallback_) return fallback_->heartbeat(q);
    return hub_->beat(rank_, to_beat(rank_, q), true);
  }
  pb::AcquireShardReply acquire(int64_t epoch, int64_t position) override {
    if (fallback_) return fallback_->acquire(epoch, position);
    return hub_->acquire(rank_, epoch, position);
  }
  void done(int64_t epoch, int64_t position, int64_t consumed) override {
    if (fallback_) return fallback_->done(epoch, position, consumed);
    hub_->done(rank_, epoch, position, consumed);
  }
  pb::CheckpointPartReply report_part(const pb::CheckpointPartRequest& q) override {
    if (fallback_) return fallback_->report_part(q);
    return hub_->part(rank_, q.plan_id(), q.step(), to_part(rank_, q));
  }
  void before_final() override {
    if (!fallback_) hub_->wait_members_final();
  }
  std::string describe() const override {
    if (fallback_) return "per-rank (the coordinator has no host calls)";
    return str("speaker of host '", o_.plan.host, "' (ranks ", ranks_text(o_.plan.ranks), ")");
  }

 private:
  const HostVoiceOptions o_;
  const int rank_;
  std::unique_ptr<HostHub> hub_;
  std::unique_ptr<CoordinatorVoice> fallback_;  // set at registration, before the other calls
};

class MemberVoice final : public CoordinatorVoice {
 public:
  MemberVoice(const HostVoiceOptions& o, int rank) : o_(o), rank_(rank) {}
  pb::RegisterReply register_rank(const std::string& job_id, int rank, int world, const std::string& host,
                                  const std::string& launch_id) override {
    const std::string name = relay_name(o_.launch_id, o_.plan.speaker);
    try {
      // The speaker's registration itself may take up to unreachable_s.
      const double wait = 30.0 + o_.link.unreachable_s;
      beat_ = std::make_unique<relay::RelayClient>(name, wait);
      lease_ = std::make_unique<relay::RelayClient>(name, wait);
      part_ = std::make_unique<relay::RelayClient>(name, wait);
    } catch (const relay::RelayError& e) {
      throw std::runtime_error(str("cannot reach this host's speaker (rank ", o_.plan.speaker, "): ", e.what()));
    }
    pb::RegisterRequest q;
    q.set_job_id(job_id);
    q.set_rank(rank);
    q.set_world_size(world);
    q.set_host(host);
    q.set_launch_id(launch_id);
    const relay::Frame f = call(*beat_, frame('R', q), "rF");
    if (f.kind == 'F') {
      fallback_ = make_rank_voice(o_.link);
      return fallback_->register_rank(job_id, rank, world, host, launch_id);
    }
    return parse<pb::RegisterReply>(f, "register reply");
  }
  pb::HeartbeatReply heartbeat(const pb::HeartbeatRequest& q) override {
    if (fallback_) return fallback_->heartbeat(q);
    // A plain beat is answered at once from the speaker's last reply; one
    // with news waits for the speaker's HostHeartbeat (retried up to
    // unreachable_s). A speaker that does not answer in time is frozen
    // (SIGSTOP, swapped out): this rank stops as if it were gone, so its
    // abort watchdog can end a job that waits in a collective for it.
    const pb::RankBeat b = to_beat(rank_, q);
    bool news;
    {
      std::lock_guard<std::mutex> lock(last_mu_);  // heartbeat thread and the final report
      news = b.status() != pb::WORKER_RUNNING || b.final_step() != last_.final_step() ||
             (b.preempted() && !last_.preempted());
      last_ = b;
    }
    const double timeout = news ? 2 * o_.link.unreachable_s + 30 : o_.beat_timeout_s;
    return parse<pb::HeartbeatReply>(call(*beat_, frame('B', b), "b", timeout), "heartbeat reply");
  }
  pb::AcquireShardReply acquire(int64_t epoch, int64_t position) override {
    if (fallback_) return fallback_->acquire(epoch, position);
    pb::ShardAsk a;
    a.set_rank(rank_);
    a.set_epoch(epoch);
    a.set_position(position);
    return parse<pb::AcquireShardReply>(call(*lease_, frame('A', a), "a"), "lease");
  }
  void done(int64_t epoch, int64_t position, int64_t consumed) override {
    if (fallback_) return fallback_->done(epoch, position, consumed);
    pb::ShardDone d;
    d.set_rank(rank_);
    d.set_epoch(epoch);
    d.set_position(position);
    d.set_consumed(consumed);
    call(*lease_, frame('D', d), "d");
  }
  pb::CheckpointPartReply report_part(const pb::CheckpointPartRequest& q) override {
    if (fallback_) return fallback_->report_part(q);
    pb::CheckpointPartsRequest req;
    req.set_plan_id(q.plan_id());
    req.set_step(q.step());
    *req.add_parts() = to_part(rank_, q);
    return parse<pb::CheckpointPartReply>(call(*part_, frame('P', req), "p"), "checkpoint part reply");
  }
  std::string describe() const override {
    if (fallback_) return "per-rank (the coordinator has no host calls)";
    return str("through the speaker of host '", o_.plan.host, "' (rank ", o_.plan.speaker, ")");
  }

 private:
  // One relayed call; `kinds` are the reply kinds expected besides 'E'.
  relay::Frame call(relay::RelayClient& c, const relay::Frame& req, const char* kinds, double timeout_s = 0) {
    relay::Frame rep;
    try {
      rep = c.call(req, timeout_s);
    } catch (const relay::RelayError& e) {
      throw CoordinatorUnreachable(str("this host's speaker (rank ", o_.plan.speaker, ") is gone: ", e.what()));
    }
    if (rep.kind == 'E') {
      const size_t nl = rep.body.find('\n');
      int code = grpc::StatusCode::UNKNOWN;
      try {
        code = std::stoi(rep.body.substr(0, nl));
      } catch (const std::exception&) {
      }
      throw RpcError(static_cast<grpc::StatusCode>(code),
                     str("call relayed by the speaker (rank ", o_.plan.speaker, ")"),
                     nl == std::string::npos ? rep.body : rep.body.substr(nl + 1));
    }
    if (std::string(kinds).find(rep.kind) == std::string::npos)
      throw std::runtime_error(str("relay: reply of kind '", rep.kind, "' to a request of kind '", req.kind, "'"));
    return rep;
  }

  const HostVoiceOptions o_;
  const int rank_;
  std::unique_ptr<relay::RelayClient> beat_, lease_, part_;  // one connection per calling thread
  std::mutex last_mu_;
  pb::RankBeat last_;  // the last beat sent
  std::unique_ptr<CoordinatorVoice> fallback_;
};

}  // namespace

std::unique_ptr<CoordinatorVoice> make_host_voice(const HostVoiceOptions& options, int rank) {
  CNX_CHECK(options.plan.valid, "make_host_voice needs a valid host plan");
  CNX_CHECK(std::find(options.plan.ranks.begin(), options.plan.ranks.end(), rank) != options.plan.ranks.end(), "rank ",
            rank, " is not on the host of the plan");
  if (rank == options.plan.speaker) return std::make_unique<SpeakerVoice>(options, rank);
  return std::make_unique<MemberVoice>(options, rank);
}

}  // namespace cnx::worker
