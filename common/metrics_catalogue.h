#pragma once
// The project's metrics, registered once: WorkerMetrics for a training rank,
// CoordinatorMetrics for the coordinator, and metric_catalogue() describing
// every exported family (name, type, help, labels) for tests and docs.
//
// Usage (worker):
//   auto registry = std::make_shared<metrics::Registry>();
//   metrics::WorkerMetrics m(*registry, cfg.job.id, rank, attempt);
//   auto process = std::make_shared<metrics::ProcessCollector>(m.labels());
//   metrics::MetricsServer server(cfg.metrics.listen_host, cfg.metrics.worker_port + local_rank);
//   server.RegisterCollectable(registry); server.RegisterCollectable(process);
//   ... in the step: m.loss.Set(loss); m.phase(StepPhase::kForward).Observe(dt);
//
// Threading: the Gauge/Counter/Histogram members are lock-free to update from
// any thread. corrupt_samples(), rpc_seconds() and set_job_state() look up or
// create a labelled series under the family's mutex: fine per sample error
// or per RPC, not inside a tight loop (keep the returned reference instead).
// The objects must not outlive the Registry they were built on.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/metric_names.h"
#include "common/metrics.h"

namespace cnx::metrics {

struct MetricSpec {
  std::string name;
  MetricType type;
  std::string help;
  std::vector<std::string> labels;  // all label names of a series (sorted), excluding "le"
};

// Every cnx_* family WorkerMetrics and CoordinatorMetrics register (both
// register cnx_build_info{version} = 1), the cnx_worker_gpu_* families of
// GpuCollector (common/gpu_metrics.h; ranks on a CUDA device only), plus the
// process_* families of ProcessCollector (labels: those passed to it; listed
// here as the worker's cnx_job, host, rank, attempt).
const std::vector<MetricSpec>& metric_catalogue();
// The entry for `name`, or nullptr.
const MetricSpec* find_metric(const std::string& name);

enum class StepPhase { kDataWait = 0, kForward, kBackward, kCommWait, kOptimizer };
inline constexpr int kNumStepPhases = 5;
const char* phase_name(StepPhase phase);  // "data_wait", "forward", ...

// Bucket layouts (seconds).
Histogram::BucketBoundaries step_phase_buckets();        // 0.5 ms .. ~65 s
Histogram::BucketBoundaries checkpoint_write_buckets();  // 0.1 s .. ~820 s
Histogram::BucketBoundaries rpc_buckets();               // 0.1 ms .. ~6.5 s

class WorkerMetrics {
 public:
  // host "" = this machine's host name (gethostname).
  WorkerMetrics(Registry& registry, const std::string& job, int64_t rank, int64_t attempt,
                const std::string& host = "");
  // {cnx_job, host, rank, attempt}: pass to ProcessCollector so process_* match.
  const Labels& labels() const { return labels_; }

  Histogram& phase(StepPhase p) { return *phases_[static_cast<int>(p)]; }
  // The counter for corrupt samples skipped for `reason` (created on first use).
  Counter& corrupt_samples(const std::string& reason);
  // cnx_worker_blas_info{library, version, core, gemm} = 1 (common/blas_info.h's
  // query_blas(); gemm: the path float32 GEMMs take, "onednn", "blas" or
  // "cuda"); call once at start-up.
  void set_blas_info(const std::string& library, const std::string& version, const std::string& core,
                     const std::string& gemm);

 private:
  Registry* registry_;
  Labels labels_;
  Family<Counter>* corrupt_family_;
  Histogram* phases_[kNumStepPhases];

 public:
  Gauge& loss;
  Gauge& lr;
  Gauge& step;
  Gauge& epoch;
  Counter& samples;
  Gauge& images_per_second;
  Counter& allreduce_bytes;
  Counter& allreduce_seconds;
  Gauge& grad_norm;
  Counter& nonfinite_steps;
  Histogram& checkpoint_write_seconds;
  Histogram& checkpoint_stall_seconds;
  Counter& checkpoint_wait_seconds;
  Gauge& checkpoint_snapshot_bytes;
};

class CoordinatorMetrics {
 public:
  CoordinatorMetrics(Registry& registry, const std::string& job);
  const Labels& labels() const { return labels_; }

  // Sets state=`state` to 1 and every other state seen so far to 0.
  void set_job_state(const std::string& state);
  // Latency histogram of one RPC method / gRPC status code pair.
  Histogram& rpc_seconds(const std::string& method, const std::string& code);
  // A checkpoint was committed at `unix_seconds` (default: now): counts it
  // and restarts the commit-age clock. Pass the commit time recovered from
  // the store after a coordinator restart.
  void record_commit(double unix_seconds = -1.0);
  // Sets seconds_since_last_commit = now - last commit (or - construction
  // when none). Call it from MetricsServer::add_scrape_hook so the age is
  // current at every scrape.
  void refresh_commit_age();

 private:
  Labels labels_;
  Family<Gauge>* job_state_family_;
  Family<Histogram>* rpc_family_;
  std::mutex state_mutex_;
  std::vector<Gauge*> states_;
  std::atomic<double> last_commit_unix_s_;

 public:
  Gauge& workers_registered;
  Gauge& workers_alive;
  Gauge& attempt;
  Gauge& epoch;
  Gauge& shards_leased;
  Gauge& shards_done;
  Gauge& shards_pending;
  Gauge& samples_per_second;
  Counter& checkpoints_committed;
  // Maintained by record_commit / refresh_commit_age.
  Gauge& seconds_since_last_commit;
  Counter& auth_failures;
  Counter& refusal_logs_suppressed;
};

}  // namespace cnx::metrics
