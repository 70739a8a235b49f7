#include "common/metrics_catalogue.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "common/build_info.h"
#include "common/check.h"

namespace cnx::metrics {

namespace n = names;

const std::vector<MetricSpec>& metric_catalogue() {
  using T = MetricType;
  const std::vector<std::string> w = {"attempt", n::kJobLabel, n::kHostLabel, "rank"};  // sorted
  auto plus = [](std::vector<std::string> v, std::vector<std::string> more) {
    v.insert(v.end(), more.begin(), more.end());
    std::sort(v.begin(), v.end());
    return v;
  };
  static const std::vector<MetricSpec> catalogue = {
      {n::kWorkerLoss, T::Gauge, "Training loss of the last step on this rank.", w},
      {n::kWorkerLr, T::Gauge, "Learning rate of the last step.", w},
      {n::kWorkerStep, T::Gauge, "Optimizer steps completed (global step).", w},
      {n::kWorkerEpoch, T::Gauge, "Current epoch (fractional: epoch + progress within it).", w},
      {n::kWorkerSamplesTotal, T::Counter, "Training samples consumed by this rank.", w},
      {n::kWorkerImagesPerSecond, T::Gauge, "Training throughput of this rank in images per second.", w},
      {n::kWorkerStepPhaseSeconds, T::Histogram,
       "Duration of each phase of a training step in seconds (data_wait, forward, backward, comm_wait, "
       "optimizer).",
       plus(w, {"phase"})},
      {n::kWorkerAllreduceBytesTotal, T::Counter, "Bytes of gradients all-reduced by this rank.", w},
      {n::kWorkerAllreduceSecondsTotal, T::Counter, "Seconds spent in gradient all-reduce calls.", w},
      {n::kWorkerGradNorm, T::Gauge, "Global L2 norm of the gradients of the last step (before clipping).", w},
      {n::kWorkerNonfiniteStepsTotal, T::Counter, "Steps skipped because the loss or gradients were not finite.", w},
      {n::kWorkerCorruptSamplesTotal, T::Counter, "Corrupt samples skipped by the data pipeline, by reason.",
       plus(w, {"reason"})},
      {n::kWorkerCheckpointWriteSeconds, T::Histogram,
       "Time from a checkpoint's snapshot until this rank's part is written, fsynced and committed or reported, "
       "in seconds (in the background with checkpoint.async).",
       w},
      {n::kWorkerCheckpointStallSeconds, T::Histogram,
       "Time a checkpoint held up a training step on this rank in seconds: waiting for the previous write, the "
       "snapshot, publishing (and the whole write when the step waits for it).",
       w},
      {n::kWorkerCheckpointWaitSecondsTotal, T::Counter,
       "Seconds training steps waited for the previous checkpoint write to finish (part of the stall).", w},
      {n::kWorkerCheckpointSnapshotBytes, T::Gauge,
       "Bytes of state copied by the last checkpoint snapshot on this rank (the memory a background write holds).", w},
      {n::kWorkerBlasInfo, T::Gauge,
       "The BLAS this rank computes with: library, version and kernel set (core) as labels, and the path its "
       "float32 GEMMs take (gemm: cnx, onednn, blas or cuda); always 1.",
       plus(w, {"core", "gemm", "library", "version"})},
      {n::kWorkerGpuMemoryUsedBytes, T::Gauge,
       "Memory in use on this rank's GPU in bytes, by every process on it (NVML; CUDA ranks only).", plus(w, {"gpu"})},
      {n::kWorkerGpuMemoryTotalBytes, T::Gauge, "Memory of this rank's GPU in bytes (NVML; CUDA ranks only).",
       plus(w, {"gpu"})},
      {n::kWorkerGpuUtilizationRatio, T::Gauge,
       "Share of the last sample period (1/6 s to 1 s) in which a kernel ran on this rank's GPU, 0..1 (NVML; CUDA "
       "ranks only).",
       plus(w, {"gpu"})},
      {n::kWorkerGpuAllocatedBytes, T::Gauge,
       "Bytes of this rank's tensors on its GPU (LibTorch's caching allocator; CUDA ranks only).", plus(w, {"gpu"})},
      {n::kWorkerGpuReservedBytes, T::Gauge,
       "Bytes LibTorch's caching allocator holds on this rank's GPU, used or cached (CUDA ranks only).",
       plus(w, {"gpu"})},
      {n::kCoordinatorWorkersRegistered, T::Gauge, "Workers registered in the current attempt.", {n::kJobLabel}},
      {n::kCoordinatorWorkersAlive, T::Gauge, "Registered workers whose heartbeat is current.", {n::kJobLabel}},
      {n::kCoordinatorAttempt, T::Gauge, "Current attempt number of the job.", {n::kJobLabel}},
      {n::kCoordinatorJobState,
       T::Gauge,
       "Job state: 1 for the current state, 0 for the others.",
       {n::kJobLabel, "state"}},
      {n::kCoordinatorEpoch, T::Gauge, "Epoch the coordinator is planning shards for.", {n::kJobLabel}},
      {n::kCoordinatorShards,
       T::Gauge,
       "Data shards of the current epoch by state (leased, done, pending).",
       {n::kJobLabel, "state"}},
      {n::kCoordinatorSamplesPerSecond,
       T::Gauge,
       "Job-wide training throughput in samples per second.",
       {n::kJobLabel}},
      {n::kCoordinatorCheckpointsCommittedTotal,
       T::Counter,
       "Checkpoints committed by the coordinator.",
       {n::kJobLabel}},
      {n::kCoordinatorSecondsSinceLastCommit,
       T::Gauge,
       "Seconds since the last committed checkpoint (since coordinator start if none).",
       {n::kJobLabel}},
      {n::kCoordinatorRpcSeconds,
       T::Histogram,
       "Latency of coordinator RPCs in seconds by method and status code.",
       {n::kJobLabel, "code", "method"}},
      {n::kCoordinatorAuthFailuresTotal, T::Counter, "RPCs rejected for a missing or wrong job token.", {n::kJobLabel}},
      {n::kCoordinatorRefusalLogsSuppressedTotal,
       T::Counter,
       "Refused calls (bad token, oversized, unknown method) not logged because of the log rate limit.",
       {n::kJobLabel}},
      {n::kBuildInfo, T::Gauge, "Always 1; the label version is the build's git describe.", {"version"}},
      {n::kProcessCpuSecondsTotal, T::Counter, "Total user and system CPU time spent in seconds.", w},
      {n::kProcessResidentMemoryBytes, T::Gauge, "Resident memory size in bytes.", w},
      {n::kProcessVirtualMemoryBytes, T::Gauge, "Virtual memory size in bytes.", w},
      {n::kProcessStartTimeSeconds, T::Gauge, "Start time of the process since unix epoch in seconds.", w},
      {n::kProcessOpenFds, T::Gauge, "Number of open file descriptors.", w},
      {n::kProcessMaxFds, T::Gauge, "Maximum number of open file descriptors.", w},
  };
  return catalogue;
}

const MetricSpec* find_metric(const std::string& name) {
  for (const auto& s : metric_catalogue()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

const char* phase_name(StepPhase phase) {
  switch (phase) {
    case StepPhase::kDataWait:
      return "data_wait";
    case StepPhase::kForward:
      return "forward";
    case StepPhase::kBackward:
      return "backward";
    case StepPhase::kCommWait:
      return "comm_wait";
    case StepPhase::kOptimizer:
      return "optimizer";
  }
  return "unknown";
}

Histogram::BucketBoundaries step_phase_buckets() {
  return ExponentialBuckets(0.0005, 2.0, 18);
}
Histogram::BucketBoundaries checkpoint_write_buckets() {
  return ExponentialBuckets(0.1, 2.0, 14);
}
Histogram::BucketBoundaries rpc_buckets() {
  return ExponentialBuckets(0.0001, 2.0, 17);
}

namespace {

template <class T>
Family<T>& family(Registry& registry, const char* name) {
  const MetricSpec* spec = find_metric(name);
  CNX_CHECK(spec != nullptr, "metric '", name, "' is not in the catalogue");
  CNX_CHECK(spec->type == T::kType, "metric '", name, "' is a ", type_name(spec->type), " in the catalogue");
  return registry.Add<T>(name, spec->help, {});
}

template <class T, class... Args>
T& series(Registry& registry, const char* name, const Labels& labels, Args&&... args) {
  return family<T>(registry, name).Add(labels, std::forward<Args>(args)...);
}

Labels with(Labels base, const std::string& key, const std::string& value) {
  base[key] = value;
  return base;
}

// cnx_build_info{version} = 1, once per registry.
void register_build_info(Registry& registry) {
  series<Gauge>(registry, n::kBuildInfo, {{"version", build_version()}}).Set(1.0);
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "unknown";
  return name;
}

Labels worker_labels(const std::string& job, int64_t rank, int64_t attempt, const std::string& host) {
  CNX_CHECK(rank >= 0, "WorkerMetrics: rank must be >= 0, got ", rank);
  CNX_CHECK(attempt >= 0, "WorkerMetrics: attempt must be >= 0, got ", attempt);
  return {{n::kJobLabel, job},
          {n::kHostLabel, host.empty() ? this_host() : host},
          {"rank", std::to_string(rank)},
          {"attempt", std::to_string(attempt)}};
}

}  // namespace

WorkerMetrics::WorkerMetrics(Registry& r, const std::string& job, int64_t rank, int64_t attempt,
                             const std::string& host)
    : registry_(&r),
      labels_(worker_labels(job, rank, attempt, host)),
      corrupt_family_(&family<Counter>(r, n::kWorkerCorruptSamplesTotal)),
      phases_{},
      loss(series<Gauge>(r, n::kWorkerLoss, labels_)),
      lr(series<Gauge>(r, n::kWorkerLr, labels_)),
      step(series<Gauge>(r, n::kWorkerStep, labels_)),
      epoch(series<Gauge>(r, n::kWorkerEpoch, labels_)),
      samples(series<Counter>(r, n::kWorkerSamplesTotal, labels_)),
      images_per_second(series<Gauge>(r, n::kWorkerImagesPerSecond, labels_)),
      allreduce_bytes(series<Counter>(r, n::kWorkerAllreduceBytesTotal, labels_)),
      allreduce_seconds(series<Counter>(r, n::kWorkerAllreduceSecondsTotal, labels_)),
      grad_norm(series<Gauge>(r, n::kWorkerGradNorm, labels_)),
      nonfinite_steps(series<Counter>(r, n::kWorkerNonfiniteStepsTotal, labels_)),
      checkpoint_write_seconds(
          series<Histogram>(r, n::kWorkerCheckpointWriteSeconds, labels_, checkpoint_write_buckets())),
      checkpoint_stall_seconds(series<Histogram>(r, n::kWorkerCheckpointStallSeconds, labels_, step_phase_buckets())),
      checkpoint_wait_seconds(series<Counter>(r, n::kWorkerCheckpointWaitSecondsTotal, labels_)),
      checkpoint_snapshot_bytes(series<Gauge>(r, n::kWorkerCheckpointSnapshotBytes, labels_)) {
  auto& phases = family<Histogram>(r, n::kWorkerStepPhaseSeconds);
  for (int p = 0; p < kNumStepPhases; ++p) {
    phases_[p] = &phases.Add(with(labels_, "phase", phase_name(static_cast<StepPhase>(p))), step_phase_buckets());
  }
  register_build_info(r);
}

void WorkerMetrics::set_blas_info(const std::string& library, const std::string& version, const std::string& core,
                                  const std::string& gemm) {
  Labels l = with(with(with(with(labels_, "library", library), "version", version), "core", core), "gemm", gemm);
  series<Gauge>(*registry_, n::kWorkerBlasInfo, l).Set(1);
}

Counter& WorkerMetrics::corrupt_samples(const std::string& reason) {
  return corrupt_family_->Add(with(labels_, "reason", reason));
}

CoordinatorMetrics::CoordinatorMetrics(Registry& r, const std::string& job)
    : labels_{{n::kJobLabel, job}},
      job_state_family_(&family<Gauge>(r, n::kCoordinatorJobState)),
      rpc_family_(&family<Histogram>(r, n::kCoordinatorRpcSeconds)),
      workers_registered(series<Gauge>(r, n::kCoordinatorWorkersRegistered, labels_)),
      workers_alive(series<Gauge>(r, n::kCoordinatorWorkersAlive, labels_)),
      attempt(series<Gauge>(r, n::kCoordinatorAttempt, labels_)),
      epoch(series<Gauge>(r, n::kCoordinatorEpoch, labels_)),
      shards_leased(series<Gauge>(r, n::kCoordinatorShards, with(labels_, "state", "leased"))),
      shards_done(series<Gauge>(r, n::kCoordinatorShards, with(labels_, "state", "done"))),
      shards_pending(series<Gauge>(r, n::kCoordinatorShards, with(labels_, "state", "pending"))),
      samples_per_second(series<Gauge>(r, n::kCoordinatorSamplesPerSecond, labels_)),
      checkpoints_committed(series<Counter>(r, n::kCoordinatorCheckpointsCommittedTotal, labels_)),
      seconds_since_last_commit(series<Gauge>(r, n::kCoordinatorSecondsSinceLastCommit, labels_)),
      auth_failures(series<Counter>(r, n::kCoordinatorAuthFailuresTotal, labels_)),
      refusal_logs_suppressed(series<Counter>(r, n::kCoordinatorRefusalLogsSuppressedTotal, labels_)) {
  last_commit_unix_s_.store(unix_now());
  register_build_info(r);
}

void CoordinatorMetrics::record_commit(double unix_seconds) {
  checkpoints_committed.Increment();
  last_commit_unix_s_.store(unix_seconds >= 0 ? unix_seconds : unix_now());
  refresh_commit_age();
}

void CoordinatorMetrics::refresh_commit_age() {
  seconds_since_last_commit.Set(std::max(0.0, unix_now() - last_commit_unix_s_.load()));
}

void CoordinatorMetrics::set_job_state(const std::string& state) {
  std::lock_guard<std::mutex> lock(state_mutex_);
  Gauge* current = &job_state_family_->Add(with(labels_, "state", state));
  bool seen = false;
  for (Gauge* g : states_) {
    g->Set(g == current ? 1.0 : 0.0);
    seen = seen || g == current;
  }
  if (!seen) {
    states_.push_back(current);
    current->Set(1.0);
  }
}

Histogram& CoordinatorMetrics::rpc_seconds(const std::string& method, const std::string& code) {
  return rpc_family_->Add(with(with(labels_, "method", method), "code", code), rpc_buckets());
}

}  // namespace cnx::metrics
