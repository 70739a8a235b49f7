#include "worker/coordinator_link.h"

#include <optional>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/config.h"
#include "common/logging.h"
#include "coordinator/auth.h"
#include "coordinator/client.h"
#include "worker/coordinator_voice.h"

namespace cnx::worker {

LinkOptions link_options_from_config(const Config& config, const std::string& target) {
  LinkOptions o;
  o.target = target;
  o.tls_ca = config.coordinator.tls_ca;
  o.tls_cert = config.coordinator.tls_client_cert;
  o.tls_key = config.coordinator.tls_client_key;
  o.unreachable_s = config.coordinator.unreachable_s;
  o.checkpoint_root = config.checkpoint.root;
  try {
    o.token = coordinator::load_token(config.coordinator.token_file, config.coordinator.token_env);
  } catch (const std::exception& e) {
    throw ConfigError(std::string("coordinator.token_file / coordinator.token_env: ") + e.what());
  }
  try {
    coordinator::check_plaintext_allowed(target, !o.tls_ca.empty(), config.coordinator.allow_plaintext,
                                         "--coordinator");
  } catch (const std::exception& e) {
    throw ConfigError(e.what());
  }
  return o;
}

CoordinatorLink::CoordinatorLink(const LinkOptions& options, std::string job_id, int rank, int world,
                                 std::string launch_id)
    : CoordinatorLink(options, std::move(job_id), rank, world, std::move(launch_id), make_rank_voice(options)) {}

CoordinatorLink::CoordinatorLink(const LinkOptions& options, std::string job_id, int rank, int world,
                                 std::string launch_id, std::unique_ptr<CoordinatorVoice> voice)
    : voice_(std::move(voice)),
      target_(options.target),
      host_(options.host),
      unreachable_s_(options.unreachable_s),
      job_id_(std::move(job_id)),
      launch_id_(std::move(launch_id)),
      options_root_(options.checkpoint_root),
      rank_(rank),
      world_(world) {}

CoordinatorLink::~CoordinatorLink() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

CoordinatorRegistration CoordinatorLink::register_and_wait() {
  char name[256] = {0};
  ::gethostname(name, sizeof(name) - 1);
  cnx::v1::RegisterReply reply;
  try {
    reply = voice_->register_rank(job_id_, rank_, world_, host_.empty() ? std::string(name) : host_, launch_id_);
  } catch (const coordinator::RpcError& e) {
    if (e.code() != grpc::StatusCode::UNAVAILABLE && e.code() != grpc::StatusCode::DEADLINE_EXCEEDED) throw;
    throw coordinator::RpcError(
        e.code(), "Register",
        "cannot reach the coordinator at " + target_ + " for " + std::to_string(static_cast<int>(unreachable_s_)) +
            " s (coordinator.unreachable_s). Check the address and port, that the coordinator listens on an "
            "address this host can reach (coordinator.listen, not 127.0.0.1 across hosts), firewalls, and with TLS "
            "that coordinator.tls_ca verifies the coordinator's certificate and its SAN names the host in the "
            "address. Last error: " +
            e.what());
  }
  attempt_ = reply.attempt();
  lease_epoch_ = reply.start_epoch();
  CoordinatorRegistration r;
  r.attempt = reply.attempt();
  r.heartbeat_s = reply.heartbeat_s() > 0 ? reply.heartbeat_s() : 2.0;
  if (reply.has_resume() && !reply.resume().dir().empty()) {
    r.resume_dir = confined_to_root(options_root_, reply.resume().dir(), "the coordinator's resume checkpoint");
    r.resume_step = reply.resume().step();
    r.resume_world_size = reply.resume().world_size();
  }
  r.start_epoch = reply.start_epoch();
  // Wait for the other ranks of this launch.
  for (;;) {
    cnx::v1::HeartbeatRequest req;
    req.set_status(cnx::v1::WORKER_RUNNING);
    const cnx::v1::HeartbeatReply hb = voice_->heartbeat(req);
    if (hb.action() == cnx::v1::ACTION_ABORT)
      throw coordinator::RpcError(grpc::StatusCode::ABORTED, "Heartbeat", "coordinator aborted: " + hb.reason());
    if (hb.action() != cnx::v1::ACTION_WAIT) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return r;
}

void CoordinatorLink::start_heartbeats(double period_s) {
  thread_ = std::thread([this, period_s] { loop(period_s); });
}

void CoordinatorLink::set_progress(int64_t step, int64_t epoch, double loss, double samples_per_s, bool preempted) {
  std::lock_guard<std::mutex> lock(mu_);
  step_ = step;
  epoch_ = epoch;
  loss_ = loss;
  samples_per_s_ = samples_per_s;
  preempted_ = preempted_ || preempted;
}

void CoordinatorLink::set_final_step(int64_t step) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    step_ = step;
    final_step_ = step;
    wake_ = true;
  }
  cv_.notify_all();
}

CoordinatorPlan CoordinatorLink::due_plan(int64_t next_step) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (plan_ && plan_->step <= next_step) return *plan_;
  return CoordinatorPlan{};
}

std::string CoordinatorLink::reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reason_;
}

void CoordinatorLink::heartbeat_once(int status, const std::string& message) {
  cnx::v1::HeartbeatRequest req;
  {
    std::lock_guard<std::mutex> lock(mu_);
    req.set_step(step_);
    req.set_epoch(epoch_);
    req.set_loss(std::isfinite(loss_) ? loss_ : 0.0);
    req.set_samples_per_s(samples_per_s_);
    req.set_preempted(preempted_);
    req.set_final_step(final_step_);
  }
  req.set_status(static_cast<cnx::v1::WorkerStatus>(status));
  req.set_message(message);
  const cnx::v1::HeartbeatReply reply = voice_->heartbeat(req);
  std::lock_guard<std::mutex> lock(mu_);
  if (reply.has_checkpoint() && reply.checkpoint().id() > 0 && !done_.count(reply.checkpoint().id())) {
    try {
      confined_to_root(options_root_, reply.checkpoint().dir(), "the coordinator's checkpoint folder");
      plan_ = CoordinatorPlan{reply.checkpoint().id(), reply.checkpoint().step(), reply.checkpoint().dir()};
    } catch (const CheckpointError& e) {
      reason_ = e.what();
      abort_ = true;
      plan_.reset();
    }
  } else if (reply.action() == cnx::v1::ACTION_CONTINUE) {
    plan_.reset();
  }
  if (reply.action() == cnx::v1::ACTION_ABORT) {
    reason_ = reply.reason();
    abort_ = true;
  }
  if (reply.action() == cnx::v1::ACTION_DRAIN) {
    reason_ = reply.reason();
    drain_ = true;
  }
}

void CoordinatorLink::set_abort_watchdog(double grace_s, std::function<void(const std::string&)> on_stuck) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_grace_s_ = grace_s;
  on_stuck_abort_ = std::move(on_stuck);
}

void CoordinatorLink::loop(double period_s) {
  std::unique_lock<std::mutex> lock(mu_);
  std::optional<std::chrono::steady_clock::time_point> abort_seen;
  int64_t step_at_abort = 0;
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::duration<double>(period_s), [this] { return stop_ || wake_; });
    if (stop_) break;
    wake_ = false;
    if (abort_ && on_stuck_abort_) {
      const auto now = std::chrono::steady_clock::now();
      if (!abort_seen) {
        abort_seen = now;
        step_at_abort = step_;
      } else if (step_ == step_at_abort && now - *abort_seen > std::chrono::duration<double>(abort_grace_s_)) {
        const std::string why = "no step completed " + std::to_string(abort_grace_s_) +
                                " s after the coordinator's abort (" + reason_ + "): stuck in a collective";
        auto on_stuck = on_stuck_abort_;
        lock.unlock();
        CNX_LOG_ERROR("{}", why);
        on_stuck(why);
        lock.lock();
        on_stuck_abort_ = nullptr;
      }
    }
    lock.unlock();
    try {
      heartbeat_once(cnx::v1::WORKER_RUNNING, "");
    } catch (const coordinator::RpcError& e) {
      CNX_LOG_ERROR("heartbeat failed: {}", e.what());
      if (e.code() == grpc::StatusCode::FAILED_PRECONDITION) {
        std::lock_guard<std::mutex> g(mu_);
        reason_ = std::string("fenced off by the coordinator: ") + e.what();
        abort_ = true;
      } else if (e.code() == grpc::StatusCode::UNAVAILABLE || e.code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        // The client retried for unreachable_s: stop rather than train on
        // with no checkpoint commits (a relaunch resumes from the last one).
        std::lock_guard<std::mutex> g(mu_);
        reason_ = "the coordinator at " + target_ + " has been unreachable for " +
                  std::to_string(static_cast<int>(unreachable_s_)) + " s (coordinator.unreachable_s)";
        abort_ = true;
      }
    } catch (const CoordinatorUnreachable& e) {
      // The host's speaker is gone (host protocol): this rank cannot reach
      // the coordinator any more; stop as for an unreachable coordinator.
      std::lock_guard<std::mutex> g(mu_);
      if (!abort_) CNX_LOG_ERROR("heartbeat failed: {}", e.what());  // once
      reason_ = e.what();
      abort_ = true;
    } catch (const std::exception& e) {
      CNX_LOG_ERROR("heartbeat failed: {}", e.what());
    }
    lock.lock();
  }
}

bool CoordinatorLink::report_part(const CoordinatorPlan& plan, int64_t step, const Manifest& files, int64_t epoch,
                                  const std::string& cursor) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_.insert(plan.id);
    if (plan_ && plan_->id == plan.id) plan_.reset();
  }
  cnx::v1::CheckpointPartRequest req;
  req.set_plan_id(plan.id);
  req.set_step(step);
  for (const auto& [name, d] : files) {
    auto* f = req.add_files();
    f->set_path(name);
    f->set_sha256(d.sha256);
    f->set_bytes(d.bytes);
  }
  auto* progress = req.mutable_progress();
  if (LeaseCursor::is_lease_cursor(cursor)) {
    const LeaseProgress p = LeaseCursor::from_string(cursor).progress();
    progress->set_epoch(p.epoch);
    progress->set_next_position(p.next_position);
    for (const auto& part : p.partial) {
      auto* ip = progress->add_partial();
      ip->set_epoch(p.epoch);
      ip->set_position(part.position);
      ip->set_consumed(part.consumed);
    }
  } else {
    // Data not leased (synthetic): the lease epoch the coordinator assigned
    // at registration with nothing consumed; the real position is the cursor.
    (void)epoch;
    progress->set_epoch(lease_epoch_);
    progress->set_next_position(0);
  }
  req.set_data_cursor(cursor);
  const cnx::v1::CheckpointPartReply reply = reach("checkpoint part", [&] { return voice_->report_part(req); });
  return reply.committed();
}

template <class Fn>
auto CoordinatorLink::reach(const char* what, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const coordinator::RpcError& e) {
    if (e.code() != grpc::StatusCode::UNAVAILABLE && e.code() != grpc::StatusCode::DEADLINE_EXCEEDED) throw;
    throw CoordinatorUnreachable(std::string(what) + ": the coordinator at " + target_ + " has been unreachable for " +
                                 std::to_string(static_cast<int>(unreachable_s_)) +
                                 " s (coordinator.unreachable_s): " + e.what());
  }
}

LeaseGrant CoordinatorLink::acquire(int64_t epoch, int64_t position) {
  const cnx::v1::AcquireShardReply r = reach("shard lease", [&] { return voice_->acquire(epoch, position); });
  LeaseGrant g;
  g.end_of_epoch = r.end_of_epoch();
  if (g.end_of_epoch) return g;
  const cnx::v1::ShardLease& l = r.lease();
  g.epoch = l.epoch();
  g.position = l.position();
  g.shard_id = l.shard_id();
  g.shard_name = l.shard_name();
  g.sha256 = l.sha256();
  g.shard_samples = l.shard_samples();
  g.start = l.start();
  g.end = l.end();
  return g;
}

void CoordinatorLink::done(int64_t epoch, int64_t position, int64_t consumed) {
  reach("shard done", [&] {
    voice_->done(epoch, position, consumed);
    return 0;
  });
}

void CoordinatorLink::report_finished() {
  try {
    voice_->before_final();
    heartbeat_once(cnx::v1::WORKER_FINISHED, "training completed");
  } catch (const std::exception& e) {
    CNX_LOG_WARN("could not report completion to the coordinator: {}", e.what());
  }
}

void CoordinatorLink::report_failed(const std::string& message) {
  try {
    heartbeat_once(cnx::v1::WORKER_FAILED, message);
  } catch (const std::exception& e) {
    CNX_LOG_WARN("could not report the failure to the coordinator: {}", e.what());
  }
}

}  // namespace cnx::worker
