#pragma once
// The data-parallel FCMAE trainer: one instance per rank.
//
// Protocol of one optimizer step (Trainer::step), identical on every rank:
// 1. For each of accum_steps micro-batches: fetch the batch (sources that can
//    run out unevenly first agree on "every rank has a batch" with a one-
//    element all-reduce; otherwise every rank starts the next epoch), build
//    its masks from (seed, epoch, sample keys), forward, and backward. The
//    last micro-step runs with gradient sync enabled: GradSync all-reduces
//    buckets during backward (overlap) and carries this rank's control
//    values (step_control.h: checkpoint-now, preempted, non-finite loss,
//    loss, due plan, abort, drain, checkpoint written) in its last bucket.
// 2. GradSync::finish(): averaged gradients on every rank and the summed
//    control values, turned into a StepDecision. From here on every decision
//    is a function of data that is bit-identical across ranks, so all ranks
//    decide alike: with a loss scaler (fp16) the gradients are unscaled
//    first; non-finite loss anywhere (or a non-finite averaged gradient
//    norm) -> skip the update (count it) or stop, per train.nonfinite, except
//    that a loss-scaler overflow (non-finite gradients, finite loss, scale
//    >= 1) only skips and backs the scale off; else clip (optional) and AdamW
//    at the scheduled lr; then the loss scaler's update (loss_scaler.h).
// 3. Every-N blocks: progress line (rank 0), checkpoint (every_steps, a
//    checkpoint-now flag from rank 0's timer, a coordinator plan, preemption,
//    the last step).
//
// Checkpoint protocol. A checkpoint holds the state after step N
// (checkpoint.h lists its files). At the step it is due every rank:
//   a. waits for the previous checkpoint if one is still in flight (at most
//      one per rank; the wait is StepResult::checkpoint_wait_seconds);
//   b. takes a snapshot: with checkpoint.async a deep copy of model and
//      optimizer state (rank 0) plus its data cursor and CPU generator;
//   c. hands it to its writer thread (checkpoint_writer.h), which writes and
//      fsyncs this rank's files into the folder (local: <root>/.tmp-step-N;
//      planned: the coordinator's folder) and records their digests;
//   and training continues. Each step's control values carry "my write has
//   finished"; in the first step where every rank's has, every rank
//   allgathers the digests (publish) and its writer thread finishes the
//   checkpoint: locally rank 0 writes MANIFEST.json and commits (rename +
//   `latest`, checkpoint_files.h); under a coordinator rank 0 writes
//   MANIFEST.json durably and then every rank reports its part, rank 0's
//   listing the manifest, so the coordinator's commit (on the last part)
//   always finds a durable manifest. A kill at any point leaves the previous
//   committed checkpoint as the one a resume uses.
// Preemption, the final checkpoint and checkpoint.async = false wait in the
// step until the checkpoint is committed (reported); the step then holds
// references instead of a copy.
//
// Sample log (options.sample_log, config train.sample_log): when set, every
// rank appends one line "step<TAB>epoch<TAB>key\n" per sample of each of its
// micro-batches to <folder>/samples-rank<R>.tsv, where step is the 1-based
// optimizer step the sample contributed to and epoch the batch's data epoch.
// The lines of a step are flushed (stdio buffer, no fsync) once its
// micro-batches are done, before its checkpoint: after kill -9 the file holds
// every line of each committed step. A resumed run appends (never
// truncates), so steps after the checkpoint it loaded appear twice: once
// from the attempt that died, once from the one that redid them.
//
// Threading: the training thread calls everything; GradSync runs its hooks
// on the autograd thread. A Trainer is not copyable.
#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/grad_sync.h"
#include "model/precision.h"
#include "worker/batch_source.h"
#include "worker/checkpoint.h"
#include "worker/checkpoint_files.h"
#include "worker/checkpoint_writer.h"
#include "worker/loss_scaler.h"
#include "worker/lr_schedule.h"
#include "worker/optimizer.h"
#include "worker/progress.h"
#include "worker/step_control.h"
#include "worker/train_model.h"

namespace cnx {
struct Config;
}

namespace cnx::worker {

// Thrown on every rank, in the same step, when training must stop because
// of non-finite losses (train.nonfinite = stop, or max_skipped exceeded).
class NonFiniteLossError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainerOptions {
  int64_t batch_size = 32;  // per rank and micro-step
  int64_t accum_steps = 1;
  // > 0: the global batch is fixed and accum_steps is derived from it at
  // construction (global_batch / (batch_size x ranks); must divide).
  int64_t global_batch = 0;
  uint64_t seed = 0;
  int64_t image_size = 224;
  double mask_ratio = 0.6;
  double blr = 1.5e-4, lr = 0.0, min_lr = 0.0;
  double epochs = 800, warmup_epochs = 40;
  int64_t max_steps = 0;  // 0 = the whole schedule
  AdamWOptions adamw;
  double clip_grad = 0.0;
  std::string nonfinite = "skip";  // skip|stop
  int64_t max_skipped = 10;        // consecutive skipped steps before stopping
  comm::GradSyncOptions sync;      // control_slots is set by the trainer
  // Mixed precision of the forward pass (model/precision.h): the forward
  // runs under autocast with the precision's dtype; parameters, gradients and
  // optimizer state stay float32. fp16 needs a CUDA device (ConfigError).
  model::Precision precision = model::Precision::kFp32;
  // Dynamic loss scaling (loss_scaler.h); trainer_options enables it for
  // fp16. Any precision may use it (tests run it in fp32 on CPU).
  LossScalerOptions loss_scaler;
  // Where the model and the batches live: the communicator's device (the
  // constructor moves the model there before the initial broadcast).
  at::Device device = at::kCPU;
  std::string checkpoint_root;  // "" = checkpoints disabled
  int64_t checkpoint_every_steps = 0;
  double checkpoint_every_minutes = 0.0;
  int64_t checkpoint_keep = 3;
  bool checkpoint_async = true;  // write in the background (see the protocol above)
  int64_t log_every = 10;        // 0 = no progress lines
  // Resume a checkpoint written by another number of ranks (leased data
  // only: the coordinator re-deals the epoch's unused samples). The step
  // count is rescaled to the new global batch (same samples seen, same point
  // of the schedule); each rank's generator is reseeded from (seed, rank,
  // step). Not bit-exact, by nature.
  bool allow_world_change = false;
  double final_checkpoint_wait_s = 120.0;  // see Trainer::final_checkpoint
  std::string sample_log;                  // "" = off; else the folder of samples-rank<R>.tsv (see above)
  // Saved with every checkpoint (rank 0): config.yaml's text (the effective
  // config, "" = none) and the build version (trainer.json "version").
  std::string run_config;
  std::string version;
  // Test hook: may replace the loss of (step, micro-step) before the
  // non-finite check (e.g. inject NaN on one rank).
  std::function<void(int64_t step, int64_t micro, at::Tensor& loss)> loss_hook;
};

// From the job config (sections optimizer, schedule, mask, data, train,
// distributed, checkpoint).
TrainerOptions trainer_options(const Config& config);

struct StepResult {
  int64_t step = 0;  // steps done after this one
  double loss = 0;   // mean loss over ranks (NaN if non-finite somewhere)
  double lr = 0;
  double grad_norm = 0;
  bool skipped = false;  // non-finite: no update
  // The skip was a loss-scaler overflow (fp16: non-finite gradients under a
  // scale >= 1 with a finite loss): the scale was backed off; such skips do
  // not count toward train.max_skipped / train.nonfinite.
  bool overflow = false;
  double loss_scale = 1;  // the scale this step's loss was multiplied by (1 without a loss scaler)
  bool checkpointed = false;
  bool preempted = false;  // a rank got SIGTERM; checkpoint written if enabled
  bool aborted = false;    // the control plane aborted this attempt
  bool drained = false;    // the control plane asked to stop cleanly
  // Checkpoint work on the training thread in this step (the stall): waiting
  // for the previous checkpoint, the snapshot, publishing, and the whole write
  // when the step waits for it.
  double checkpoint_seconds = 0;
  double checkpoint_wait_seconds = 0;     // part of the stall spent waiting for the previous write
  double checkpoint_write_seconds = 0;    // a checkpoint finished in this step: its time after the snapshot
  int64_t checkpoint_snapshot_bytes = 0;  // bytes copied by this step's snapshot
  StepTimes times;
};

enum class RunOutcome { kCompleted, kPreempted, kAborted, kDrained };

// An external control plane (the coordinator, via worker/coordinator_link.h).
// Called on the training thread only. The trainer turns its answers into
// control values reduced with the step's gradients, so ranks act together.
class ControlPlane {
 public:
  virtual ~ControlPlane() = default;
  // Id of a checkpoint plan due at or before `next_step` (0 = none).
  virtual int64_t due_plan_id(int64_t next_step) = 0;
  virtual bool abort_requested() = 0;
  virtual bool drain_requested() = 0;
  // After every step (progress for heartbeats).
  virtual void on_step(int64_t step, int64_t epoch, double loss, double images_per_s, bool preempted) = 0;
  // Training has ended at `final_step` (after its last step): ask for the
  // final checkpoint plan (exactly at that step; see due_plan_id).
  virtual void finishing(int64_t final_step) = 0;
  // The folder that plan `id` is written into.
  virtual std::string plan_dir(int64_t id) = 0;
  // This rank's files of plan `id`, written and fsynced at `step`. Called
  // on the checkpoint writer thread (concurrently with the calls above).
  virtual void report_part(int64_t id, int64_t step, const Manifest& files, int64_t epoch,
                           const std::string& cursor) = 0;
};

class SampleLog;  // trainer.cc

class Trainer {
 public:
  // Takes the model and data source; broadcasts parameters and buffers
  // from rank 0 (so ranks start identical whatever their init).
  Trainer(TrainerOptions options, comm::Communicator& comm, std::unique_ptr<TrainModel> model,
          std::unique_ptr<BatchSource> data);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  StepResult step();
  // Steps until total_steps() or preemption. Progress on rank 0 via the
  // logger; `observer` (if set) sees every step's result (metrics).
  RunOutcome run(const std::function<void(const StepResult&)>& observer = {});

  // Writes and commits the checkpoint of the current step and waits for it
  // (collective): locally (atomic rename + `latest`) without a control
  // plane, else into plan `plan_id`'s folder, committed by the coordinator.
  // Returns the committed folder.
  std::string save_checkpoint(int64_t plan_id = 0);
  // Waits until the checkpoint in flight (if any) is committed or reported
  // by every rank (collective: every rank calls it at the same point). `r`
  // (optional) receives its write time.
  void wait_for_checkpoint(StepResult* r = nullptr);
  // Attaches the coordinator (not owned; must outlive the trainer's use).
  void set_control_plane(ControlPlane* plane) { plane_ = plane; }
  // Restores model, optimizer, schedule/step, data cursor and RNG from a
  // committed checkpoint folder (collective only in that every rank calls it).
  // Throws CheckpointError for a corrupt or mismatching checkpoint.
  void load_checkpoint(const std::string& dir);
  // "auto" (latest committed under the root, if any), "none", or a folder.
  // Returns the folder loaded, or "" when starting fresh.
  std::string resume(const std::string& how);

  int64_t steps_done() const { return step_; }
  int64_t total_steps() const { return total_steps_; }
  int64_t epoch() const { return epoch_; }
  int64_t skipped_steps() const { return skipped_total_; }
  const LrSchedule& schedule() const { return *schedule_; }
  const LossScaler& loss_scaler() const { return scaler_; }
  TrainModel& model() { return *model_; }
  AdamW& optimizer() { return *optimizer_; }
  comm::GradSync& grad_sync() { return *sync_; }
  const TrainerOptions& options() const { return options_; }
  // The data source (e.g. its skipped-sample counts for metrics).
  const BatchSource& data() const { return *data_; }
  // Parameters and buffers by name (what model.pt holds).
  NamedTensors model_state() const;

 private:
  struct InFlight {
    enum Phase { kWriting, kPublishing } phase = kWriting;
    int64_t plan_id = 0;  // 0 = local
    int64_t step = 0, epoch = 0;
    std::string cursor, dir, final_dir;
    Manifest files;  // this rank's files, filled by the writer thread
    std::chrono::steady_clock::time_point started;
    double snapshot_seconds = 0;
    int64_t snapshot_bytes = 0;
  };

  std::optional<TrainBatch> next_batch();
  bool all_ranks_have_batch(bool mine);
  StepSignals local_signals(bool nonfinite, double loss);
  // The coordinator's due plan id, 0 when none or already taken.
  int64_t due_plan(int64_t next_step);
  void skip_update(int nonfinite_ranks);
  void checkpoint_block(const StepDecision& d, StepResult* r);
  TrainerRecord trainer_record() const;
  // Steps a-c of the protocol above.
  void begin_checkpoint(int64_t plan_id, StepResult* r);
  // Collective: allgather the digests; the writer commits or reports.
  void publish_checkpoint();
  // Local: waits for the publication, logs, clears the flight.
  void retire_checkpoint(StepResult* r);
  // Waits for the writer and drops the flight (abort, drain).
  void abandon_checkpoint();
  // Under a control plane, after the last step: every rank waits (agreeing
  // by all-reduce) for the coordinator's plan at this step and writes it;
  // false when the coordinator aborted meanwhile. Gives up with an error
  // line after final_checkpoint_wait_s (training itself has completed).
  bool final_checkpoint();
  void log_progress(const StepResult& r);

  TrainerOptions options_;
  comm::Communicator& comm_;
  std::unique_ptr<TrainModel> model_;
  std::unique_ptr<BatchSource> data_;
  NamedTensors params_;
  std::unique_ptr<AdamW> optimizer_;
  std::unique_ptr<comm::GradSync> sync_;
  std::unique_ptr<LrSchedule> schedule_;
  int64_t global_batch_ = 0;
  int64_t total_steps_ = 0;
  int64_t grid_ = 0;  // patches per image side
  int64_t step_ = 0;
  int64_t epoch_ = 0;
  int64_t skipped_total_ = 0;
  int64_t skipped_consecutive_ = 0;
  LossScaler scaler_;
  ProgressMeter progress_;
  ControlPlane* plane_ = nullptr;
  bool preempt_pending_ = false;  // preempted under a control plane: waiting for its checkpoint plan
  std::chrono::steady_clock::time_point last_checkpoint_time_;
  int64_t last_checkpoint_step_ = -1;         // written or loaded
  std::unique_ptr<SampleLog> sample_log_;     // null when options_.sample_log is ""
  int64_t last_plan_taken_ = 0;               // the newest coordinator plan begun
  std::unique_ptr<InFlight> inflight_;        // the checkpoint in flight, if any
  std::unique_ptr<CheckpointWriter> writer_;  // after inflight_: its tasks use the flight
};

}  // namespace cnx::worker
