#include "coordinator/service.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/check.h"
#include "common/logging.h"
#include "coordinator/auth.h"
#include "data/shard_index.h"

namespace cnx::coordinator {
namespace {

namespace pb = cnx::v1;

double system_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

WorkerRef to_ref(const pb::WorkerRef& r) {
  return {r.job_id(), r.attempt(), r.rank()};
}

void fill_plan(const CheckpointPlan& p, pb::CheckpointPlan* out) {
  out->set_id(p.id);
  out->set_step(p.step);
  out->set_dir(p.dir);
}

RankProgress from_pb(const pb::RankProgress& p) {
  RankProgress out;
  out.epoch = p.epoch();
  out.next_position = p.next_position();
  for (const auto& ip : p.partial()) out.partial.push_back({ip.position(), ip.consumed(), ip.epoch()});
  return out;
}

// Appends rank `rank`'s part of `c` (if it has one) to `out`.
void fill_part(const CheckpointRecord& c, int rank, pb::Checkpoint* out) {
  auto it = c.parts.find(rank);
  if (it == c.parts.end()) return;
  const RankPart& part = it->second;
  auto* p = out->add_parts();
  p->set_rank(rank);
  for (const auto& f : part.files) {
    auto* fd = p->add_files();
    fd->set_path(f.path);
    fd->set_sha256(f.sha256);
    fd->set_bytes(f.bytes);
  }
  auto* pr = p->mutable_progress();
  pr->set_epoch(part.progress.epoch);
  pr->set_next_position(part.progress.next_position);
  for (const auto& ip : part.progress.partial) {
    auto* x = pr->add_partial();
    x->set_position(ip.position);
    x->set_consumed(ip.consumed);
    x->set_epoch(ip.epoch);
  }
  p->set_data_cursor(part.data_cursor);
}

// `only_rank` >= 0: just that rank's part (a registering rank needs no other);
// -1: every part; -2: none.
void fill_checkpoint(const CheckpointRecord& c, pb::Checkpoint* out, int only_rank) {
  out->set_id(c.id);
  out->set_step(c.step);
  out->set_dir(c.dir);
  out->set_world_size(c.world_size);
  out->set_attempt(c.attempt);
  out->set_committed_unix_s(c.committed_unix_s);
  if (only_rank >= 0) {
    fill_part(c, only_rank, out);
  } else if (only_rank == -1) {
    for (const auto& [r, part] : c.parts) fill_part(c, r, out);
  }
}

HostRef checked_host(const pb::HostRef& h) {
  if (h.job_id().empty() || h.job_id().size() > 128)
    throw SchedulerError(ErrorCode::kInvalidArgument, "host.job_id: expected 1..128 characters");
  if (h.host().empty() || h.host().size() > 256)
    throw SchedulerError(ErrorCode::kInvalidArgument, "host.host: expected 1..256 characters");
  return {h.job_id(), h.attempt(), h.host()};
}

HeartbeatInfo beat_info(int64_t step, int64_t epoch, double loss, double samples_per_s, bool preempted, int status,
                        const std::string& message, int64_t final_step) {
  if (status < pb::WORKER_RUNNING || status > pb::WORKER_FAILED)
    throw SchedulerError(ErrorCode::kInvalidArgument, "status: unknown value");
  HeartbeatInfo info;
  info.step = step;
  info.epoch = epoch;
  info.loss = loss;
  info.samples_per_s = samples_per_s;
  info.preempted = preempted;
  info.final_step = final_step;
  info.status = static_cast<WorkerStatus>(status);
  info.message = message;
  return info;
}

void fill_heartbeat(const HeartbeatResult& r, pb::HeartbeatReply* rep) {
  rep->set_action(static_cast<pb::Action>(r.action));
  if (r.has_plan) fill_plan(r.plan, rep->mutable_checkpoint());
  rep->set_reason(r.reason);
  rep->set_state(static_cast<pb::JobState>(r.state));
}

void fill_acquire(const AcquireResult& r, const ShardIndex& index, pb::AcquireShardReply* rep) {
  rep->set_end_of_epoch(r.end_of_epoch);
  rep->set_rank_samples(r.rank_samples);
  rep->set_min_rank_samples(r.min_rank_samples);
  if (r.end_of_epoch) return;
  auto* l = rep->mutable_lease();
  const ShardInfo& s = index.shards.at(r.lease.item.shard);
  l->set_epoch(r.lease.epoch);
  l->set_position(r.lease.position);
  l->set_shard_id(r.lease.item.shard);
  l->set_shard_name(s.name);
  l->set_sha256(s.sha256);
  l->set_shard_samples(s.samples);
  l->set_start(r.lease.item.start);
  l->set_end(r.lease.item.end);
  l->set_deadline_unix_s(r.lease.deadline_unix_s);
}

RankPart part_from_pb(int rank, const google::protobuf::RepeatedPtrField<pb::FileDigest>& files,
                      const pb::RankProgress& progress, const std::string& cursor) {
  if (files.size() > 100000) throw SchedulerError(ErrorCode::kInvalidArgument, "files: more than 100000 entries");
  RankPart part;
  part.rank = rank;
  for (const auto& f : files) part.files.push_back({f.path(), f.sha256(), f.bytes()});
  part.progress = from_pb(progress);
  part.data_cursor = cursor;
  return part;
}

grpc::StatusCode to_code(ErrorCode c) {
  switch (c) {
    case ErrorCode::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case ErrorCode::kStale:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case ErrorCode::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case ErrorCode::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
  }
  return grpc::StatusCode::UNKNOWN;
}

void check_arg(bool ok, const std::string& msg) {
  if (!ok) throw SchedulerError(ErrorCode::kInvalidArgument, msg);
}

void check_job_id(const std::string& id) {
  check_arg(!id.empty() && id.size() <= 128, "job_id: expected 1..128 characters");
}

// The WorkerRef of a worker call, its job_id bounded before anything echoes it.
WorkerRef checked_ref(const pb::WorkerRef& r) {
  check_job_id(r.job_id());
  return to_ref(r);
}

// True when `dir` is strictly inside `root` after resolving "." and "..".
bool inside_root(const std::string& dir, const std::string& root) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path d = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) return false;
  fs::path r = fs::weakly_canonical(fs::absolute(root), ec);
  if (ec) return false;
  auto rel = d.lexically_relative(r);
  return !rel.empty() && *rel.begin() != ".." && rel != ".";
}

}  // namespace

std::string log_escape(std::string_view s, size_t max_bytes) {
  std::string out;
  const size_t n = std::min(s.size(), max_bytes);
  out.reserve(n + 8);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out;
}

bool LogLimiter::allow(double now_s, int64_t* suppressed_before) {
  std::lock_guard<std::mutex> lock(mu_);
  if (now_s - window_start_ >= interval_s_) {
    window_start_ = now_s;
    used_ = 0;
  }
  if (used_ >= burst_) {
    ++pending_;
    ++total_;
    return false;
  }
  ++used_;
  *suppressed_before = std::exchange(pending_, 0);
  return true;
}

int64_t LogLimiter::suppressed_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

ServerOptions server_options_from_config(const Config& c) {
  ServerOptions o;
  o.listen = c.coordinator.listen;
  o.token = load_token(c.coordinator.token_file, c.coordinator.token_env);
  o.operator_token = load_operator_token(c.coordinator.operator_token_file, c.coordinator.operator_token_env);
  o.tls_cert = c.coordinator.tls_cert;
  o.tls_key = c.coordinator.tls_key;
  o.tls_client_ca = c.coordinator.tls_client_ca;
  o.state_db = c.coordinator.state_db;
  o.shard_index = c.data.index;
  auto& s = o.scheduler;
  s.job_id = c.job.id;
  s.seed = c.job.seed;
  s.world_size = static_cast<int>(c.coordinator.world_size);
  s.max_world_size = static_cast<int>(c.coordinator.max_world_size);
  s.max_epochs = epoch_limit(c.schedule.epochs);
  s.heartbeat_s = c.coordinator.heartbeat_s;
  s.heartbeat_timeout_s = c.coordinator.heartbeat_timeout_s;
  s.lease_s = c.coordinator.lease_s;
  s.stall_s = c.coordinator.stall_s;
  s.checkpoint_root = c.checkpoint.root;
  s.every_steps = c.checkpoint.every_steps;
  s.every_minutes = c.checkpoint.every_minutes;
  s.keep = c.checkpoint.keep;
  return o;
}

CoordinatorService::CoordinatorService(const ServerOptions& o, Store* store)
    : token_(o.token),
      operator_token_(o.operator_token),
      checkpoint_root_(o.scheduler.checkpoint_root),
      clock_(o.clock ? o.clock : system_now),
      tick_s_(o.tick_s),
      scheduler_([&] {
        CNX_CHECK(!o.shard_index.empty(), "data.index: the coordinator needs the shard index (cnx-make-shards output)");
        return Scheduler::restore(o.scheduler, data::load_index(o.shard_index), store->load(), clock_());
      }()),
      writer_(store) {
  CNX_CHECK(token_.size() >= 16, "the job token must be at least 16 characters");
  CNX_CHECK(operator_token_.empty() || (operator_token_.size() >= 16 && operator_token_ != token_),
            "the operator token must be at least 16 characters and differ from the job token");
  uint64_t seq;
  {
    std::lock_guard<std::mutex> lock(mu_);
    seq = persist_locked();
  }
  writer_.wait(seq);
  ticker_ = std::thread([this] { tick_loop(); });
}

CoordinatorService::~CoordinatorService() {
  {
    std::lock_guard<std::mutex> lock(tick_mu_);
    stop_ = true;
  }
  tick_cv_.notify_all();
  ticker_.join();
}

uint64_t CoordinatorService::persist_locked() {
  for (const auto& e : scheduler_.take_events()) CNX_LOG_INFO("{}", log_escape(e, 4096));
  return writer_.submit(scheduler_.take_changes());
}

void CoordinatorService::check_visible(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::is_directory(dir, ec)) return;
  // Retention deletes old checkpoints from here: on a path this host cannot
  // see, nothing would be deleted and the disk would fill up unnoticed.
  CNX_LOG_ERROR(
      "checkpoint '{}' was committed by the workers but does not exist on the coordinator's host (working folder "
      "'{}'): retention (checkpoint.keep) cannot delete old checkpoints. checkpoint.root must be one shared "
      "filesystem mounted at the same absolute path on the coordinator and on every worker host (a relative "
      "checkpoint.root resolves against each process's own working folder)",
      log_escape(dir, 4096), log_escape(std::filesystem::current_path(ec).string(), 4096));
}

void CoordinatorService::delete_garbage(std::vector<std::string> dirs) {
  std::string committed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    committed.swap(committed_dir_to_check_);
  }
  if (!committed.empty()) check_visible(committed);
  for (const auto& d : dirs) {
    if (!inside_root(d, checkpoint_root_)) {
      CNX_LOG_ERROR("not deleting '{}': outside checkpoint.root '{}'", log_escape(d, 4096), checkpoint_root_);
      continue;
    }
    std::error_code ec;
    auto n = std::filesystem::remove_all(d, ec);
    if (ec)
      CNX_LOG_WARN("could not delete old checkpoint folder '{}': {}", log_escape(d, 4096), ec.message());
    else if (n > 0)
      CNX_LOG_INFO("deleted old checkpoint folder '{}'", log_escape(d, 4096));
  }
}

void CoordinatorService::tick_loop() {
  std::unique_lock<std::mutex> tl(tick_mu_);
  while (!stop_) {
    tick_cv_.wait_for(tl, std::chrono::duration<double>(tick_s_), [&] { return stop_; });
    if (stop_) break;
    uint64_t seq;
    std::vector<std::string> garbage;
    {
      std::lock_guard<std::mutex> lock(mu_);
      scheduler_.tick(now());
      seq = persist_locked();
      garbage = scheduler_.take_deletions();
    }
    try {
      writer_.wait(seq);
      delete_garbage(std::move(garbage));
    } catch (const std::exception& e) {
      CNX_LOG_ERROR("{}", e.what());
    }
  }
}

void CoordinatorService::record(std::string_view method, grpc::StatusCode code,
                                std::chrono::steady_clock::time_point started) {
  ++rpcs_total_;
  if (code != grpc::StatusCode::OK) ++rpcs_failed_;
  if (RpcObserver* obs = observer_.load())
    obs->on_rpc(method, code, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

void CoordinatorService::refuse(std::string_view method, const std::string& peer, const std::string& why) {
  int64_t suppressed = 0;
  if (refusal_log_.allow(now(), &suppressed))
    CNX_LOG_WARN("{} from {}: refused ({}){}", log_escape(method, 64), log_escape(peer, 128), why,
                 suppressed > 0 ? str(" [", suppressed, " more refusals not logged]") : std::string());
}

grpc::Status CoordinatorService::authenticate(std::string_view method, const grpc::string_ref* authorization,
                                              const std::string& peer) {
  const TokenRole role = authorization ? bearer_role(std::string_view(authorization->data(), authorization->size()),
                                                     token_, operator_token_)
                                       : TokenRole::kNone;
  const bool operator_call = method == "Drain" || method == "RequestCheckpoint";
  const bool read_call = method == "GetStatus" || method == "LatestCheckpoint";
  const bool allowed = read_call ? role != TokenRole::kNone
                       : operator_call
                           ? role == TokenRole::kOperator || (operator_token_.empty() && role == TokenRole::kJob)
                           : role == TokenRole::kJob;
  if (allowed) return grpc::Status::OK;
  ++auth_failures_;
  if (role == TokenRole::kNone) {
    refuse(method, peer, authorization ? "wrong job token" : "missing job token");
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing or wrong job token (authorization: Bearer <token>)");
  }
  refuse(method, peer, role == TokenRole::kJob ? "job token on an operator call" : "operator token on a worker call");
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      role == TokenRole::kJob
                          ? "this call needs the operator token (coordinator.operator_token_file), not the job token"
                          : "the operator token does not authorise worker calls");
}

void CoordinatorService::run(std::string_view method, std::chrono::steady_clock::time_point started,
                             const std::function<uint64_t()>& body, std::function<void(const grpc::Status&)> done,
                             std::function<void()> after_durable) {
  auto finish = [this, method, started, done = std::move(done)](const grpc::Status& st) {
    record(method, st.error_code(), started);
    done(st);
  };
  uint64_t seq = 0;
  try {
    seq = body();
  } catch (const SchedulerError& e) {
    finish(grpc::Status(to_code(e.code()), log_escape(e.what(), 1024)));
    return;
  } catch (const std::exception& e) {
    CNX_LOG_ERROR("{}: internal error: {}", std::string(method), log_escape(e.what(), 1024));
    finish(grpc::Status(grpc::StatusCode::INTERNAL, log_escape(e.what(), 1024)));
    return;
  }
  writer_.when_durable(
      seq, [this, finish = std::move(finish), after = std::move(after_durable)](const std::string& err) {
        if (!err.empty()) {
          finish(grpc::Status(grpc::StatusCode::INTERNAL, "coordinator state database failed: " + err));
          return;
        }
        finish(grpc::Status::OK);
        if (after) after();
      });
}

uint64_t CoordinatorService::Register(const pb::RegisterRequest& req, pb::RegisterReply* rep) {
  check_job_id(req.job_id());
  std::lock_guard<std::mutex> lock(mu_);
  RegisterResult r =
      scheduler_.register_worker(req.job_id(), req.rank(), req.world_size(), req.host(), req.launch_id(), now());
  CNX_LOG_INFO("rank {} of {} registered from '{}' (attempt {}, launch '{}')", req.rank(), req.world_size(),
               log_escape(req.host()), r.attempt, log_escape(req.launch_id()));
  rep->set_attempt(r.attempt);
  rep->set_world_size(r.world_size);
  rep->set_state(static_cast<pb::JobState>(r.state));
  rep->set_heartbeat_s(scheduler_.options().heartbeat_s);
  rep->set_seed(scheduler_.options().seed);
  rep->set_start_epoch(r.start_epoch);
  if (r.resume) fill_checkpoint(*r.resume, rep->mutable_resume(), req.rank());
  return persist_locked();
}

uint64_t CoordinatorService::Heartbeat(const pb::HeartbeatRequest& req, pb::HeartbeatReply* rep) {
  const HeartbeatInfo info = beat_info(req.step(), req.epoch(), req.loss(), req.samples_per_s(), req.preempted(),
                                       req.status(), req.message(), req.final_step());
  const WorkerRef ref = checked_ref(req.worker());
  std::lock_guard<std::mutex> lock(mu_);
  HeartbeatResult r = scheduler_.heartbeat(ref, info, now());
  fill_heartbeat(r, rep);
  uint64_t seq = persist_locked();
  // An instruction must not be acted upon before it is durable.
  if (r.action != Action::kContinue) seq = std::max(seq, writer_.last_submitted());
  return seq;
}

uint64_t CoordinatorService::AcquireShard(const pb::AcquireShardRequest& req, pb::AcquireShardReply* rep) {
  const WorkerRef ref = checked_ref(req.worker());
  std::lock_guard<std::mutex> lock(mu_);
  fill_acquire(scheduler_.acquire(ref, req.epoch(), req.position(), now()), scheduler_.index(), rep);
  // A retry of a granted lease must not be answered before the grant is durable.
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::ReportShardDone(const pb::ShardDoneRequest& req, pb::ShardDoneReply*) {
  const WorkerRef ref = checked_ref(req.worker());
  std::lock_guard<std::mutex> lock(mu_);
  scheduler_.shard_done(ref, req.epoch(), req.position(), req.consumed(), now());
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::ReportCheckpointPart(const pb::CheckpointPartRequest& req, pb::CheckpointPartReply* rep,
                                                  std::vector<std::string>* garbage) {
  const WorkerRef ref = checked_ref(req.worker());
  RankPart part = part_from_pb(ref.rank, req.files(), req.progress(), req.data_cursor());
  std::lock_guard<std::mutex> lock(mu_);
  bool committed = scheduler_.report_part(ref, req.plan_id(), req.step(), std::move(part), now());
  rep->set_committed(committed);
  if (committed) {
    // Checked by delete_garbage(), after the reply and outside the lock (a stat on a hung NFS mount must not
    // stall the coordinator).
    if (const CheckpointRecord* c = scheduler_.latest_committed()) committed_dir_to_check_ = c->dir;
  }
  *garbage = scheduler_.take_deletions();
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::RegisterHost(const pb::RegisterHostRequest& req, pb::RegisterHostReply* rep) {
  check_job_id(req.job_id());
  check_arg(req.ranks_size() <= (1 << 16), "ranks: more than 65536 entries");
  const std::vector<int> ranks(req.ranks().begin(), req.ranks().end());
  std::lock_guard<std::mutex> lock(mu_);
  HostRegisterResult r =
      scheduler_.register_host(req.job_id(), ranks, req.world_size(), req.host(), req.launch_id(), now());
  CNX_LOG_INFO("host '{}' registered {} ranks ({}..{}) of {} (attempt {}, launch '{}')", log_escape(req.host()),
               ranks.size(), ranks.front(), ranks.back(), req.world_size(), r.attempt, log_escape(req.launch_id()));
  rep->set_attempt(r.attempt);
  rep->set_world_size(r.world_size);
  rep->set_state(static_cast<pb::JobState>(r.state));
  rep->set_heartbeat_s(scheduler_.options().heartbeat_s);
  rep->set_seed(scheduler_.options().seed);
  for (size_t i = 0; i < ranks.size(); ++i) {
    auto* x = rep->add_ranks();
    x->set_rank(ranks[i]);
    x->set_start_epoch(r.start_epochs[i]);
  }
  if (r.resume) {
    fill_checkpoint(*r.resume, rep->mutable_resume(), -2);
    for (int rank : ranks) fill_part(*r.resume, rank, rep->mutable_resume());
  }
  return persist_locked();
}

uint64_t CoordinatorService::HostHeartbeat(const pb::HostHeartbeatRequest& req, pb::HeartbeatReply* rep) {
  const HostRef ref = checked_host(req.host());
  std::vector<RankBeat> beats;
  beats.reserve(req.ranks_size());
  for (const auto& b : req.ranks())
    beats.push_back({b.rank(), beat_info(b.step(), b.epoch(), b.loss(), b.samples_per_s(), b.preempted(), b.status(),
                                         b.message(), b.final_step())});
  std::lock_guard<std::mutex> lock(mu_);
  HeartbeatResult r = scheduler_.host_heartbeat(ref, beats, now());
  fill_heartbeat(r, rep);
  uint64_t seq = persist_locked();
  if (r.action != Action::kContinue) seq = std::max(seq, writer_.last_submitted());
  return seq;
}

uint64_t CoordinatorService::AcquireShards(const pb::AcquireShardsRequest& req, pb::AcquireShardsReply* rep) {
  const HostRef ref = checked_host(req.host());
  std::vector<ShardAskInfo> asks;
  asks.reserve(req.asks_size());
  for (const auto& a : req.asks()) asks.push_back({a.rank(), a.epoch(), a.position()});
  std::vector<ShardDoneInfo> done;
  done.reserve(req.done_size());
  for (const auto& d : req.done()) done.push_back({d.rank(), d.epoch(), d.position(), d.consumed()});
  check_arg(!asks.empty() || !done.empty(), "asks: empty (and no done items)");
  std::lock_guard<std::mutex> lock(mu_);
  if (!done.empty()) scheduler_.shards_done(ref, done, now());
  if (!asks.empty())
    for (const auto& g : scheduler_.acquire_many(ref, asks, now()))
      fill_acquire(g, scheduler_.index(), rep->add_grants());
  // One durable write for all the host's grants; a retry waits for it too.
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::ReportShardsDone(const pb::ShardsDoneRequest& req, pb::ShardDoneReply*) {
  const HostRef ref = checked_host(req.host());
  std::vector<ShardDoneInfo> done;
  done.reserve(req.done_size());
  for (const auto& d : req.done()) done.push_back({d.rank(), d.epoch(), d.position(), d.consumed()});
  std::lock_guard<std::mutex> lock(mu_);
  scheduler_.shards_done(ref, done, now());
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::ReportCheckpointParts(const pb::CheckpointPartsRequest& req, pb::CheckpointPartReply* rep,
                                                   std::vector<std::string>* garbage) {
  const HostRef ref = checked_host(req.host());
  std::vector<RankPart> parts;
  parts.reserve(req.parts_size());
  for (const auto& p : req.parts()) parts.push_back(part_from_pb(p.rank(), p.files(), p.progress(), p.data_cursor()));
  std::lock_guard<std::mutex> lock(mu_);
  const bool committed = scheduler_.report_parts(ref, req.plan_id(), req.step(), std::move(parts), now());
  rep->set_committed(committed);
  if (committed) {
    if (const CheckpointRecord* c = scheduler_.latest_committed()) committed_dir_to_check_ = c->dir;  // see above
  }
  *garbage = scheduler_.take_deletions();
  // The host's parts are one transaction (and the commit, when it is the last host).
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::LatestCheckpoint(const pb::LatestCheckpointRequest& req, pb::LatestCheckpointReply* rep) {
  check_job_id(req.job_id());
  check_arg(req.job_id() == scheduler_.options().job_id, "job_id: not this coordinator's job");
  std::lock_guard<std::mutex> lock(mu_);
  const CheckpointRecord* c = scheduler_.latest_committed();
  rep->set_found(c != nullptr);
  if (c) fill_checkpoint(*c, rep->mutable_checkpoint(), -1);
  return writer_.last_submitted();
}

uint64_t CoordinatorService::GetStatus(const pb::StatusRequest& req, pb::StatusReply* rep) {
  check_job_id(req.job_id());
  check_arg(req.job_id() == scheduler_.options().job_id, "job_id: not this coordinator's job");
  SchedulerStatus s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s = scheduler_.status(now());
  }
  rep->set_job_id(s.job_id);
  rep->set_state(static_cast<pb::JobState>(s.state));
  rep->set_reason(s.reason);
  rep->set_attempt(s.attempt);
  rep->set_world_size(s.world_size);
  rep->set_epoch(s.epoch);
  rep->set_step(s.step);
  rep->set_shards_leased(s.shards_leased);
  rep->set_shards_done(s.shards_done);
  rep->set_shards_pending(s.shards_pending);
  rep->set_checkpoints_committed(s.checkpoints_committed);
  rep->set_checkpoints_retained(s.checkpoints_retained);
  rep->set_last_committed_step(s.last_committed_step);
  rep->set_seconds_since_commit(s.seconds_since_commit);
  rep->set_checkpoint_pending(s.checkpoint_pending);
  if (s.checkpoint_pending) fill_plan(s.pending, rep->mutable_pending());
  rep->set_unused_samples(s.unused_samples);
  for (const auto& r : s.ranks) {
    auto* x = rep->add_ranks();
    x->set_rank(r.rank);
    x->set_host(r.host);
    x->set_registered(r.registered);
    x->set_alive(r.alive);
    x->set_step(r.step);
    x->set_epoch(r.epoch);
    x->set_loss(r.loss);
    x->set_samples_per_s(r.samples_per_s);
    x->set_seconds_since_heartbeat(r.seconds_since_heartbeat);
    x->set_leases_held(r.leases_held);
  }
  return 0;
}

uint64_t CoordinatorService::RequestCheckpoint(const pb::RequestCheckpointRequest& req,
                                               pb::RequestCheckpointReply* rep) {
  check_job_id(req.job_id());
  std::lock_guard<std::mutex> lock(mu_);
  fill_plan(scheduler_.request_checkpoint(req.job_id(), now()), rep->mutable_plan());
  return std::max(persist_locked(), writer_.last_submitted());
}

uint64_t CoordinatorService::Drain(const pb::DrainRequest& req, pb::DrainReply* rep) {
  check_job_id(req.job_id());
  std::lock_guard<std::mutex> lock(mu_);
  DrainResult r = scheduler_.drain(req.job_id(), req.checkpoint(), now());
  rep->set_state(static_cast<pb::JobState>(r.state));
  if (r.has_plan) fill_plan(r.plan, rep->mutable_plan());
  return std::max(persist_locked(), writer_.last_submitted());
}

CoordinatorStatus CoordinatorService::status(bool with_ranks) const {
  CoordinatorStatus s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.job = scheduler_.status(now(), with_ranks);
  }
  s.auth_failures = auth_failures_.load();
  s.rpcs_total = rpcs_total_.load();
  s.rpcs_failed = rpcs_failed_.load();
  s.store_transactions = writer_.transactions();
  s.refusal_logs_suppressed = refusal_log_.suppressed_total();
  return s;
}

}  // namespace cnx::coordinator
