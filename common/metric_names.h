#pragma once
// The metric catalogue: every metric name the worker and the coordinator
// export. The Grafana dashboard (deploy/grafana/) queries only these names;
// tests/deploy checks that, and tests/metrics checks that WorkerMetrics and
// CoordinatorMetrics (common/metrics_catalogue.h) export exactly these.
//
// Label conventions:
// * worker series carry cnx_job (the job id from the config), host (the
//   rank's host name: the pod name on Kubernetes), rank (global MPI rank) and
//   attempt; coordinator series carry cnx_job.
// * The job id is "cnx_job", not "job": Prometheus gives every scrape target
//   its own "job" label (the scrape job), and an exported "job" would either
//   be renamed exported_job or, with honor_labels, replace it. None of our
//   labels collides with a target label (job, instance), so scrape configs
//   need no honor_labels.
// Units are base units (seconds, bytes, ratios 0..1), as Prometheus recommends.

namespace cnx::metrics::names {

inline constexpr const char kJobLabel[] = "cnx_job";
inline constexpr const char kHostLabel[] = "host";

// ---- worker (labels: cnx_job, host, rank, attempt) ---------------------------
inline constexpr const char kWorkerLoss[] = "cnx_worker_loss";
inline constexpr const char kWorkerLr[] = "cnx_worker_lr";
inline constexpr const char kWorkerStep[] = "cnx_worker_step";
inline constexpr const char kWorkerEpoch[] = "cnx_worker_epoch";
inline constexpr const char kWorkerSamplesTotal[] = "cnx_worker_samples_total";
inline constexpr const char kWorkerImagesPerSecond[] = "cnx_worker_images_per_second";
// histogram; extra label phase = data_wait|forward|backward|comm_wait|optimizer
inline constexpr const char kWorkerStepPhaseSeconds[] = "cnx_worker_step_phase_seconds";
inline constexpr const char kWorkerAllreduceBytesTotal[] = "cnx_worker_allreduce_bytes_total";
inline constexpr const char kWorkerAllreduceSecondsTotal[] = "cnx_worker_allreduce_seconds_total";
inline constexpr const char kWorkerGradNorm[] = "cnx_worker_grad_norm";
inline constexpr const char kWorkerNonfiniteStepsTotal[] = "cnx_worker_nonfinite_steps_total";
// extra label reason (e.g. decode, truncated, checksum)
inline constexpr const char kWorkerCorruptSamplesTotal[] = "cnx_worker_corrupt_samples_total";
// histogram
inline constexpr const char kWorkerCheckpointWriteSeconds[] = "cnx_worker_checkpoint_write_seconds";
inline constexpr const char kWorkerCheckpointStallSeconds[] = "cnx_worker_checkpoint_stall_seconds";
inline constexpr const char kWorkerCheckpointWaitSecondsTotal[] = "cnx_worker_checkpoint_wait_seconds_total";
inline constexpr const char kWorkerCheckpointSnapshotBytes[] = "cnx_worker_checkpoint_snapshot_bytes";
// info gauge (always 1); extra labels library, version, core (the BLAS kernel set)
inline constexpr const char kWorkerBlasInfo[] = "cnx_worker_blas_info";
// The rank's GPU, read at scrape time (common/gpu_metrics.h); only ranks that
// train on a CUDA device export them. Extra label gpu (the PCI bus id).
// NVML (absent without libnvidia-ml.so.1): the whole device, every process on it
inline constexpr const char kWorkerGpuMemoryUsedBytes[] = "cnx_worker_gpu_memory_used_bytes";
inline constexpr const char kWorkerGpuMemoryTotalBytes[] = "cnx_worker_gpu_memory_total_bytes";
inline constexpr const char kWorkerGpuUtilizationRatio[] = "cnx_worker_gpu_utilization_ratio";  // 0..1
// LibTorch's CUDA caching allocator: this rank's process only
inline constexpr const char kWorkerGpuAllocatedBytes[] = "cnx_worker_gpu_allocated_bytes";
inline constexpr const char kWorkerGpuReservedBytes[] = "cnx_worker_gpu_reserved_bytes";

// ---- coordinator (label: cnx_job) ------------------------------------------
inline constexpr const char kCoordinatorWorkersRegistered[] = "cnx_coordinator_workers_registered";
inline constexpr const char kCoordinatorWorkersAlive[] = "cnx_coordinator_workers_alive";
inline constexpr const char kCoordinatorAttempt[] = "cnx_coordinator_attempt";
// extra label state; 1 for the current state, 0 for states seen before
inline constexpr const char kCoordinatorJobState[] = "cnx_coordinator_job_state";
inline constexpr const char kCoordinatorEpoch[] = "cnx_coordinator_epoch";
// extra label state = leased|done|pending
inline constexpr const char kCoordinatorShards[] = "cnx_coordinator_shards";
inline constexpr const char kCoordinatorSamplesPerSecond[] = "cnx_coordinator_samples_per_second";
inline constexpr const char kCoordinatorCheckpointsCommittedTotal[] = "cnx_coordinator_checkpoints_committed_total";
inline constexpr const char kCoordinatorSecondsSinceLastCommit[] = "cnx_coordinator_seconds_since_last_commit";
// histogram; extra labels method (RPC name), code (gRPC status name)
inline constexpr const char kCoordinatorRpcSeconds[] = "cnx_coordinator_rpc_seconds";
inline constexpr const char kCoordinatorAuthFailuresTotal[] = "cnx_coordinator_auth_failures_total";
inline constexpr const char kCoordinatorRefusalLogsSuppressedTotal[] = "cnx_coordinator_refusal_logs_suppressed_total";

// ---- worker and coordinator (label: version) -------------------------------
// gauge, always 1; version = the build's git describe (common/build_info.h)
inline constexpr const char kBuildInfo[] = "cnx_build_info";

// ---- every process (ProcessCollector, common/metrics_process.h) -------------
inline constexpr const char kProcessCpuSecondsTotal[] = "process_cpu_seconds_total";
inline constexpr const char kProcessResidentMemoryBytes[] = "process_resident_memory_bytes";
inline constexpr const char kProcessVirtualMemoryBytes[] = "process_virtual_memory_bytes";
inline constexpr const char kProcessStartTimeSeconds[] = "process_start_time_seconds";
inline constexpr const char kProcessOpenFds[] = "process_open_fds";
inline constexpr const char kProcessMaxFds[] = "process_max_fds";

}  // namespace cnx::metrics::names
