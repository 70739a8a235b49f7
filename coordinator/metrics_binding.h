#pragma once
// Exports the coordinator's state as Prometheus metrics.
//
// CoordinatorMetricsBinding is the service's RpcObserver (latency histogram by
// method and gRPC code, called concurrently on gRPC threads: it only touches
// lock-free series after the first call per (method, code)) and a scrape hook
// (refresh()) that copies one consistent CoordinatorService::status()
// snapshot into the gauges and counters just before each scrape, on the
// metrics server's thread. Owned by main; must outlive the service's use of it.
#include <grpcpp/grpcpp.h>

#include <mutex>
#include <string>

#include "common/metrics_catalogue.h"
#include "coordinator/service.h"

namespace cnx::coordinator {

// "OK", "INVALID_ARGUMENT", ... as gRPC spells the codes.
const char* grpc_code_name(grpc::StatusCode code);

class CoordinatorMetricsBinding final : public RpcObserver {
 public:
  CoordinatorMetricsBinding(metrics::Registry& registry, const std::string& job, const CoordinatorService& service);

  void on_rpc(std::string_view method, grpc::StatusCode code, double seconds) override;
  // Pulls the service status into the metrics (scrape hook).
  void refresh();

  metrics::CoordinatorMetrics& metrics() { return metrics_; }

 private:
  metrics::CoordinatorMetrics metrics_;
  const CoordinatorService& service_;
  std::mutex refresh_mu_;  // serialises refresh(): counters advance by deltas
  int64_t seen_commits_ = 0;
  int64_t seen_auth_failures_ = 0;
  int64_t seen_suppressed_ = 0;
};

}  // namespace cnx::coordinator
