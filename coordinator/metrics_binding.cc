#include "coordinator/metrics_binding.h"

#include <chrono>

namespace cnx::coordinator {

const char* grpc_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

CoordinatorMetricsBinding::CoordinatorMetricsBinding(metrics::Registry& registry, const std::string& job,
                                                     const CoordinatorService& service)
    : metrics_(registry, job), service_(service) {}

void CoordinatorMetricsBinding::on_rpc(std::string_view method, grpc::StatusCode code, double seconds) {
  metrics_.rpc_seconds(std::string(method), grpc_code_name(code)).Observe(seconds);
}

void CoordinatorMetricsBinding::refresh() {
  std::lock_guard<std::mutex> lock(refresh_mu_);
  const CoordinatorStatus s = service_.status(false);
  const SchedulerStatus& j = s.job;
  metrics_.workers_registered.Set(static_cast<double>(j.workers_registered));
  metrics_.workers_alive.Set(static_cast<double>(j.workers_alive));
  metrics_.attempt.Set(static_cast<double>(j.attempt));
  metrics_.epoch.Set(static_cast<double>(j.epoch));
  metrics_.shards_leased.Set(static_cast<double>(j.shards_leased));
  metrics_.shards_done.Set(static_cast<double>(j.shards_done));
  metrics_.shards_pending.Set(static_cast<double>(j.shards_pending));
  metrics_.set_job_state(job_state_name(j.state));
  metrics_.samples_per_second.Set(j.samples_per_s);
  if (j.checkpoints_committed > seen_commits_) {
    // record_commit counts one commit and restarts the age clock; the others
    // since the last refresh are counted here.
    const int64_t fresh = j.checkpoints_committed - seen_commits_;
    seen_commits_ = j.checkpoints_committed;
    if (j.seconds_since_commit >= 0) {
      const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      if (fresh > 1) metrics_.checkpoints_committed.Increment(static_cast<double>(fresh - 1));
      metrics_.record_commit(now - j.seconds_since_commit);
    } else {
      metrics_.checkpoints_committed.Increment(static_cast<double>(fresh));
    }
  }
  metrics_.refresh_commit_age();
  if (s.auth_failures > seen_auth_failures_) {
    metrics_.auth_failures.Increment(static_cast<double>(s.auth_failures - seen_auth_failures_));
    seen_auth_failures_ = s.auth_failures;
  }
  if (s.refusal_logs_suppressed > seen_suppressed_) {
    metrics_.refusal_logs_suppressed.Increment(static_cast<double>(s.refusal_logs_suppressed - seen_suppressed_));
    seen_suppressed_ = s.refusal_logs_suppressed;
  }
}

}  // namespace cnx::coordinator
