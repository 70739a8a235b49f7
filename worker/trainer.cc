#include "worker/trainer.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "common/build_info.h"
#include "common/check.h"
#include "common/config.h"
#include "common/logging.h"
#include "common/rng.h"
#include "worker/checkpoint.h"
#include "worker/checkpoint_files.h"
#include "worker/signals.h"
#include "worker/step_control.h"

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

// The seed of rank `rank`'s generator stream (drop path etc.).
uint64_t rank_stream_seed(uint64_t seed, int rank) {
  return mix_seed(seed, 0x72616e6bULL + static_cast<uint64_t>(rank));
}

}  // namespace

// train.sample_log (trainer.h): a step's lines are collected in memory and
// written with one fwrite + fflush when the step's micro-batches are done.
class SampleLog {
 public:
  SampleLog(const std::string& folder, int rank) {
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec) throw std::runtime_error("train.sample_log: cannot create folder '" + folder + "': " + ec.message());
    path_ = (fs::path(folder) / ("samples-rank" + std::to_string(rank) + ".tsv")).string();
    // An attempt killed inside a write may have left a partial last line:
    // end it, so that this attempt's first line stands on its own.
    {
      std::ifstream in(path_, std::ios::binary | std::ios::ate);
      if (in && in.tellg() > 0) {
        in.seekg(-1, std::ios::end);
        if (in.get() != '\n') pending_ = "\n";
      }
    }
    file_ = std::fopen(path_.c_str(), "ab");
    if (!file_)
      throw std::runtime_error("train.sample_log: cannot open '" + path_ + "' for appending: " + std::strerror(errno));
  }
  ~SampleLog() { std::fclose(file_); }
  SampleLog(const SampleLog&) = delete;
  SampleLog& operator=(const SampleLog&) = delete;

  void add(int64_t step, const TrainBatch& batch) {
    const std::string prefix = std::to_string(step) + "\t" + std::to_string(batch.epoch) + "\t";
    for (const auto& key : batch.keys) pending_ += prefix + key + "\n";
  }
  void flush() {
    if (pending_.empty()) return;
    if (std::fwrite(pending_.data(), 1, pending_.size(), file_) != pending_.size() || std::fflush(file_) != 0)
      throw std::runtime_error("train.sample_log: writing '" + path_ + "' failed: " + std::strerror(errno));
    pending_.clear();
  }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::string pending_;
};

TrainerOptions trainer_options(const Config& c) {
  TrainerOptions o;
  o.batch_size = c.data.batch_size;
  o.accum_steps = c.optimizer.accum_steps;
  o.seed = static_cast<uint64_t>(c.job.seed);
  o.image_size = c.data.input_size;
  o.mask_ratio = c.mask.ratio;
  o.blr = c.optimizer.blr;
  o.lr = c.optimizer.lr;
  o.min_lr = c.optimizer.min_lr;
  o.epochs = c.schedule.epochs;
  o.warmup_epochs = c.schedule.warmup_epochs;
  o.max_steps = c.schedule.max_steps;
  CNX_CHECK(c.optimizer.betas.size() == 2, "optimizer.betas must have 2 values, got ", c.optimizer.betas.size());
  o.adamw.beta1 = c.optimizer.betas[0];
  o.adamw.beta2 = c.optimizer.betas[1];
  o.adamw.eps = c.optimizer.eps;
  o.adamw.weight_decay = c.optimizer.weight_decay;
  o.adamw.no_decay = c.optimizer.no_decay;
  o.clip_grad = c.optimizer.clip_grad;
  o.nonfinite = c.train.nonfinite;
  o.max_skipped = c.train.max_skipped;
  o.sync.bucket_cap_mb = c.distributed.bucket_cap_mb;
  o.sync.first_bucket_mb = c.distributed.first_bucket_mb;
  o.sync.overlap = c.distributed.overlap;
  o.checkpoint_root = c.checkpoint.root;
  o.checkpoint_every_steps = c.checkpoint.every_steps;
  o.checkpoint_every_minutes = c.checkpoint.every_minutes;
  o.checkpoint_keep = c.checkpoint.keep;
  o.checkpoint_async = c.checkpoint.async;
  o.log_every = c.schedule.log_every;
  o.sample_log = c.train.sample_log;
  try {
    o.precision = model::parse_precision(c.train.precision, "train.precision");
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
  o.loss_scaler.enabled = o.precision == model::Precision::kFp16;
  o.global_batch = c.optimizer.global_batch;
  o.version = build_version();
  o.run_config = "# The effective config of job '" + c.job.id + "' (after --set), written by cnx-worker " + o.version +
                 ".\n# Tools that open this checkpoint take data.input_size, mean and std from it.\n" + to_yaml(c);
  return o;
}

Trainer::Trainer(TrainerOptions options, comm::Communicator& comm, std::unique_ptr<TrainModel> model,
                 std::unique_ptr<BatchSource> data)
    : options_(std::move(options)),
      comm_(comm),
      model_(std::move(model)),
      data_(std::move(data)),
      scaler_(options_.loss_scaler) {
  CNX_CHECK(model_ && data_, "trainer needs a model and a data source");
  if (options_.precision == model::Precision::kFp16 && !options_.device.is_cuda())
    throw ConfigError(
        cnx::str("train.precision: fp16 needs a CUDA device (LibTorch's CPU autocast runs bfloat16 "
                 "only); this rank trains on ",
                 options_.device.str(), ": use bf16 or fp32"));
  CNX_CHECK(options_.nonfinite == "skip" || options_.nonfinite == "stop", "train.nonfinite must be skip|stop, got '",
            options_.nonfinite, "'");
  model_->module().to(options_.device);
  for (const auto& item : model_->module().named_parameters(/*recurse=*/true)) {
    if (item.value().requires_grad()) params_.emplace_back(item.key(), item.value());
  }
  CNX_CHECK(!params_.empty(), "the model has no trainable parameters");

  // Identical start on every rank.
  std::vector<at::Tensor> state;
  for (const auto& [name, t] : model_state()) state.push_back(t);
  {
    torch::NoGradGuard no_grad;
    for (auto& t : state) {
      if (t.is_contiguous()) {
        comm::broadcast_tensors(comm_, {t}, 0);
      } else {
        at::Tensor tmp = t.contiguous();
        comm::broadcast_tensors(comm_, {tmp}, 0);
        t.copy_(tmp);
      }
    }
  }

  optimizer_ = std::make_unique<AdamW>(params_, options_.adamw);
  comm::GradSyncOptions sync_options = options_.sync;
  sync_options.control_slots = control_slot_count();
  sync_options.prescaled = true;                          // step() scales the loss by gradient_scale()
  const bool auto_cap = sync_options.bucket_cap_mb <= 0;  // distributed.bucket_cap_mb: 0 = auto
  if (auto_cap) sync_options.bucket_cap_mb = comm::auto_bucket_cap_mb(comm_.device_type());
  std::vector<at::Tensor> plist;
  for (const auto& [name, p] : params_) plist.push_back(p);
  sync_ = std::make_unique<comm::GradSync>(comm_, plist, sync_options);
  if (comm_.rank() == 0 && comm_.size() > 1) {
    int64_t bytes = 0;
    for (const auto& b : sync_->buckets()) bytes += b.bytes;
    CNX_LOG_INFO("gradient all-reduce: {} buckets, {:.1f} MiB in all, cap {:g} MiB{}, {} backward",
                 sync_->buckets().size(), static_cast<double>(bytes) / (1 << 20), sync_options.bucket_cap_mb,
                 auto_cap ? " (auto)" : "", sync_options.overlap ? "overlapped with" : "after");
  }

  if (options_.global_batch > 0) {
    // The recipe's global batch is fixed: accumulation makes up for the
    // ranks (a relaunch on fewer ranks keeps global batch and peak lr).
    options_.accum_steps =
        accum_steps_for_global_batch(options_.global_batch, options_.batch_size, comm_.size(), options_.accum_steps);
  }
  global_batch_ = global_batch_size(options_.batch_size, comm_.size(), options_.accum_steps);
  LrScheduleOptions lo;
  lo.peak_lr = peak_lr(options_.blr, options_.lr, global_batch_);
  lo.min_lr = options_.min_lr;
  lo.epochs = options_.epochs;
  lo.warmup_epochs = options_.warmup_epochs;
  lo.steps_per_epoch = data_->epoch_samples_total() / global_batch_;
  if (lo.steps_per_epoch <= 0)
    throw ConfigError(str("the data set (", data_->epoch_samples_total(),
                          " samples) is smaller than one global batch (", global_batch_,
                          "): lower data.batch_size or optimizer.accum_steps, or use fewer ranks"));
  schedule_ = std::make_unique<LrSchedule>(lo);
  total_steps_ = schedule_->total_steps();
  if (options_.max_steps > 0) total_steps_ = std::min(total_steps_, options_.max_steps);
  if (comm_.rank() == 0)
    CNX_LOG_INFO("global batch {} = {} per rank x {} ranks x {} accumulation steps{}; peak lr {:.4g}", global_batch_,
                 options_.batch_size, comm_.size(), options_.accum_steps,
                 options_.global_batch > 0 ? " (optimizer.global_batch)" : "", lo.peak_lr);
  const int64_t patch = model_->patch_size();
  if (patch <= 0 || options_.image_size % patch != 0)
    throw ConfigError(
        str("data.input_size (", options_.image_size, ") must be a multiple of the mask patch size ", patch));
  grid_ = options_.image_size / patch;

  // Per-rank generator stream (drop path etc.); saved in checkpoints.
  seed_cpu_rng(rank_stream_seed(options_.seed, comm_.rank()));
  data_->start_epoch(0);
  last_checkpoint_time_ = std::chrono::steady_clock::now();
  if (!options_.sample_log.empty()) sample_log_ = std::make_unique<SampleLog>(options_.sample_log, comm_.rank());
  writer_ = std::make_unique<CheckpointWriter>();
  if (comm_.rank() == 0 && options_.precision != model::Precision::kFp32)
    CNX_LOG_INFO("mixed precision {}: forward under autocast, float32 weights and optimizer state{}",
                 model::precision_name(options_.precision),
                 scaler_.enabled() ? cnx::str(", dynamic loss scale from ", scaler_.scale()) : std::string());
}

Trainer::~Trainer() = default;

NamedTensors Trainer::model_state() const {
  NamedTensors out;
  for (const auto& item : model_->module().named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : model_->module().named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

bool Trainer::all_ranks_have_batch(bool mine) {
  at::Tensor flag = at::full({1}, mine ? 1.0f : 0.0f, at::kFloat);
  comm_.allreduce({flag}, comm::ReduceOp::kSum)->wait();
  return flag.item<float>() == static_cast<float>(comm_.size());
}

std::optional<TrainBatch> Trainer::next_batch() {
  // At most two epoch starts: an epoch with no batch at all is an error.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::optional<TrainBatch> b = data_->next();
    const bool ok = data_->uneven() ? all_ranks_have_batch(b.has_value()) : b.has_value();
    if (ok) return b;
    ++epoch_;
    data_->start_epoch(epoch_);
  }
  throw UserError(
      str("epoch ", epoch_, " yields no batch on some rank (too little data for ", comm_.size(), " ranks?)"));
  return std::nullopt;
}

StepResult Trainer::step() {
  StepResult r;
  PhaseTimer timer;
  for (auto& [name, p] : params_) p.mutable_grad() = at::Tensor();
  bool nonfinite = false;
  double loss_sum = 0.0;

  for (int64_t micro = 0; micro < options_.accum_steps; ++micro) {
    const bool last = micro + 1 == options_.accum_steps;
    TrainBatch batch = *next_batch();
    if (sample_log_) sample_log_->add(step_ + 1, batch);
    r.times.data_wait += timer.lap();

    at::Tensor masks = make_masks(batch.keys, batch.epoch, options_.seed, grid_, grid_, options_.mask_ratio);
    at::Tensor loss;
    {
      // Autocast for the forward only; backward runs outside, as in PyTorch.
      model::PrecisionScope amp(options_.precision, options_.device.type());
      loss = model_->loss(batch.images.to(options_.device), masks.to(options_.device));
    }
    if (options_.loss_hook) options_.loss_hook(step_, micro, loss);
    const double value = loss.item<double>();
    nonfinite = nonfinite || !std::isfinite(value);
    loss_sum += value / static_cast<double>(options_.accum_steps);
    r.times.forward += timer.lap();

    std::optional<comm::GradSync::NoSyncScope> no_sync;
    if (!last) no_sync.emplace(*sync_);
    if (last) sync_->set_control(encode_signals(local_signals(nonfinite, loss_sum)));
    // The 1 / world of the gradient average is folded into the loss
    // (GradSyncOptions::prescaled): the all-reduce then sums, and no pass
    // divides the gradients afterwards.
    // With a loss scaler the loss is also multiplied by its scale (a power
    // of two, so unscaling is exact); without one the factor is unchanged.
    double factor = sync_->gradient_scale() / static_cast<double>(options_.accum_steps);
    if (scaler_.enabled()) factor *= scaler_.scale();
    (loss * factor).backward();
    r.times.backward += timer.lap();
  }
  sync_->finish();
  r.times.comm_wait = timer.lap();
  if (sample_log_) sample_log_->flush();  // before this step's checkpoint

  // Everything below depends only on values identical across ranks.
  const StepDecision d = decide(sync_->control_result(), comm_.size());
  r.lr = schedule_->lr_at(step_);
  r.loss = d.mean_loss;
  r.loss_scale = scaler_.scale();
  scaler_.unscale(params_);  // no-op without a loss scaler
  r.grad_norm = clip_grad_norm(params_, options_.clip_grad);
  // GradScaler's found_inf: a non-finite unscaled gradient (any inf/NaN
  // element makes the norm non-finite), identical on every rank.
  const bool found_inf = !std::isfinite(r.grad_norm);
  if (d.nonfinite_ranks > 0 || found_inf) {
    r.skipped = true;
    if (scaler_.enabled() && d.nonfinite_ranks == 0 && scaler_.scale() >= 1.0) {
      r.overflow = true;
      ++skipped_total_;
      if (comm_.rank() == 0)
        CNX_LOG_INFO("fp16 gradient overflow at step {}: update skipped, loss scale {} -> {}", step_ + 1,
                     scaler_.scale(), scaler_.scale() * scaler_.options().backoff_factor);
    } else {
      skip_update(d.nonfinite_ranks);
    }
  } else {
    skipped_consecutive_ = 0;
    optimizer_->step(r.lr);
  }
  scaler_.update(found_inf);
  ++step_;
  r.step = step_;
  r.times.optimizer = timer.lap();

  // Every-N blocks.
  progress_.add(r.times);
  if (options_.log_every > 0 && (step_ % options_.log_every == 0 || step_ == total_steps_)) log_progress(r);
  r.preempted = d.preempted;
  r.aborted = d.abort;
  r.drained = d.drain;
  checkpoint_block(d, &r);
  if (plane_)
    plane_->on_step(step_, epoch_, r.loss, r.times.total() > 0 ? global_batch_ / r.times.total() : 0.0,
                    preempt_pending_);
  return r;
}

StepSignals Trainer::local_signals(bool nonfinite, double loss) {
  StepSignals s;
  s.checkpoint_now = !plane_ && options_.checkpoint_every_minutes > 0 && comm_.rank() == 0 &&
                     std::chrono::steady_clock::now() - last_checkpoint_time_ >
                         std::chrono::duration<double>(60.0 * options_.checkpoint_every_minutes);
  s.preempted = termination_requested();
  s.nonfinite = nonfinite;
  s.loss = loss;
  s.plan = due_plan(step_ + 1);
  s.abort = plane_ && plane_->abort_requested();
  s.drain = plane_ && plane_->drain_requested();
  s.checkpoint_written = inflight_ && inflight_->phase == InFlight::kWriting && !writer_->busy();
  return s;
}

int64_t Trainer::due_plan(int64_t next_step) {
  if (!plane_) return 0;
  const int64_t id = plane_->due_plan_id(next_step);
  return id > last_plan_taken_ ? id : 0;  // plan ids grow; a taken plan is not due again
}

void Trainer::skip_update(int nonfinite_ranks) {
  ++skipped_total_;
  ++skipped_consecutive_;
  const std::string what =
      cnx::str("non-finite ", nonfinite_ranks > 0 ? "loss" : "gradient norm", " at step ", step_ + 1, " (",
               nonfinite_ranks, " of ", comm_.size(), " ranks reported a non-finite loss)");
  if (options_.nonfinite == "stop") throw NonFiniteLossError(what + "; train.nonfinite = stop");
  if (skipped_consecutive_ > options_.max_skipped)
    throw NonFiniteLossError(
        what + "; " + std::to_string(skipped_consecutive_) +
        " consecutive steps skipped, more than train.max_skipped = " + std::to_string(options_.max_skipped));
  if (comm_.rank() == 0) CNX_LOG_WARN("{}; update skipped ({} skipped so far)", what, skipped_total_);
}

void Trainer::checkpoint_block(const StepDecision& d, StepResult* r) {
  const auto t0 = std::chrono::steady_clock::now();
  bool worked = false;
  // The write in flight: publish once every rank's files are durable (an
  // agreed value, so every rank takes this collective branch together),
  // retire once the publication (commit or report) is done (local).
  if (inflight_ && !d.abort) {
    if (inflight_->phase == InFlight::kWriting && d.checkpoint_written) {
      publish_checkpoint();
      worked = true;
    }
    if (inflight_->phase == InFlight::kPublishing && !writer_->busy()) retire_checkpoint(r);
  }
  bool due = false, wait_now = false;
  int64_t plan = 0;
  if (plane_) {
    // Checkpoints go through the coordinator's plans; preemption is reported
    // by heartbeat, and training continues until the plan it causes has run
    // (then written to the end before the step returns).
    preempt_pending_ = preempt_pending_ || r->preempted;
    due = d.plan > 0 && !r->aborted;
    plan = d.plan;
    wait_now = preempt_pending_;
    r->preempted = preempt_pending_ && due;
  } else {
    // Also at the last step, so a completed run always leaves its final state.
    due = !options_.checkpoint_root.empty() &&
          ((options_.checkpoint_every_steps > 0 && step_ % options_.checkpoint_every_steps == 0) || d.checkpoint_now ||
           r->preempted || step_ == total_steps_);
    wait_now = r->preempted || step_ == total_steps_;
  }
  if (due) {
    begin_checkpoint(plan, r);
    if (wait_now || !options_.checkpoint_async) wait_for_checkpoint(r);
    r->checkpointed = true;
    worked = true;
  }
  if (worked) r->checkpoint_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Trainer::log_progress(const StepResult& r) {
  ProgressPoint p;
  p.step = r.step;
  p.total_steps = total_steps_;
  p.epoch = schedule_->epoch_at(r.step);
  p.loss = r.loss;
  p.lr = r.lr;
  p.images_per_step = global_batch_;
  const std::string line = progress_.line(p);
  if (comm_.rank() == 0) CNX_LOG_INFO("{}", line);
}

RunOutcome Trainer::run(const std::function<void(const StepResult&)>& observer) {
  while (step_ < total_steps_) {
    const StepResult r = step();
    if (observer) observer(r);
    if (r.aborted) {
      if (comm_.rank() == 0) CNX_LOG_ERROR("aborted by the coordinator at step {}", step_);
      abandon_checkpoint();
      return RunOutcome::kAborted;
    }
    if (r.drained) {
      // The coordinator stops after the drain checkpoint committed: a write
      // still in flight belongs to no pending plan.
      if (comm_.rank() == 0) CNX_LOG_WARN("drained by the coordinator at step {}", step_);
      abandon_checkpoint();
      return RunOutcome::kDrained;
    }
    if (r.preempted) {
      if (comm_.rank() == 0) {
        CNX_LOG_WARN("preempted (SIGTERM) at step {}: {}", step_,
                     r.checkpointed ? "checkpoint written" : "no checkpoint root configured");
      }
      return RunOutcome::kPreempted;
    }
  }
  wait_for_checkpoint();  // the coordinator plans the final one after this commit
  if (plane_ && step_ == total_steps_ && last_checkpoint_step_ != step_ && !final_checkpoint()) {
    if (comm_.rank() == 0) CNX_LOG_ERROR("aborted by the coordinator while waiting for the final checkpoint");
    return RunOutcome::kAborted;
  }
  return RunOutcome::kCompleted;
}

bool Trainer::final_checkpoint() {
  plane_->finishing(step_);
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const int64_t id = due_plan(step_);
    const bool late = comm_.rank() == 0 && std::chrono::steady_clock::now() - t0 >
                                               std::chrono::duration<double>(options_.final_checkpoint_wait_s);
    // Max-reduced: [no plan here, id, -id, rank 0 gave up, abort]: every rank
    // holds the same plan iff no one lacks one and max id == min id.
    at::Tensor v = at::tensor({id > 0 ? 0.0 : 1.0, static_cast<double>(id), -static_cast<double>(id), late ? 1.0 : 0.0,
                               plane_->abort_requested() ? 1.0 : 0.0},
                              at::kDouble);
    comm_.allreduce({v}, comm::ReduceOp::kMax)->wait();
    const double* x = v.data_ptr<double>();
    if (x[4] > 0) return false;
    if (x[0] == 0 && x[1] == -x[2]) {
      save_checkpoint(static_cast<int64_t>(x[1]));
      return true;
    }
    if (x[3] > 0) {
      if (comm_.rank() == 0)
        CNX_LOG_ERROR(
            "training completed at step {}, but the coordinator planned no final checkpoint within {} s; "
            "the last committed checkpoint is the one to use",
            step_, options_.final_checkpoint_wait_s);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

TrainerRecord Trainer::trainer_record() const {
  TrainerRecord t;
  t.step = step_;
  t.epoch = epoch_;
  t.world_size = comm_.size();
  t.global_batch = global_batch_;
  t.peak_lr = schedule_->options().peak_lr;
  t.steps_per_epoch = schedule_->options().steps_per_epoch;
  t.skipped_total = skipped_total_;
  t.skipped_consecutive = skipped_consecutive_;
  if (scaler_.enabled()) {
    t.loss_scale = scaler_.state().scale;
    t.loss_scale_growth_tracker = scaler_.state().growth_tracker;
  }
  t.version = options_.version;
  return t;
}

void Trainer::begin_checkpoint(int64_t plan_id, StepResult* r) {
  const bool planned = plan_id > 0;
  CNX_CHECK(!planned || plane_, "a checkpoint plan needs a control plane");
  CNX_CHECK(planned || !options_.checkpoint_root.empty(), "checkpoint.root is empty");
  if (inflight_) {
    // At most one checkpoint in flight: the step waits for the previous one.
    // Only this rank's own write matters here, so no barrier: whether a rank
    // has already retired the previous checkpoint is its own business (rank
    // 0 commits, the others retire at once), and a collective entered on
    // that condition would deadlock. A write not yet published is in that
    // phase on every rank (publication is agreed), so the publish is joint.
    const auto t0 = std::chrono::steady_clock::now();
    if (inflight_->phase == InFlight::kWriting) publish_checkpoint();
    retire_checkpoint(r);
    r->checkpoint_wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  auto flight = std::make_unique<InFlight>();
  flight->plan_id = plan_id;
  flight->step = step_;
  flight->epoch = epoch_;
  flight->cursor = data_->cursor();
  // Local: a temp folder renamed on commit. Planned: the coordinator's folder.
  flight->dir = planned ? confined_to_root(options_.checkpoint_root, plane_->plan_dir(plan_id),
                                           "the coordinator's checkpoint folder")
                        : options_.checkpoint_root + "/" + temp_checkpoint_name(step_);
  flight->final_dir = planned ? flight->dir : options_.checkpoint_root + "/" + checkpoint_name(step_);
  flight->started = std::chrono::steady_clock::now();
  // A deep copy when training goes on during the write; references when the
  // step waits for the write (nothing changes them meanwhile).
  CheckpointSnapshot snap = take_snapshot(comm_.rank(), comm_.rank() == 0, model_state(), optimizer_->state_dict(),
                                          trainer_record(), flight->cursor, /*deep=*/options_.checkpoint_async);
  if (snap.shared) snap.run_config = options_.run_config;
  auto snapshot = std::make_shared<const CheckpointSnapshot>(std::move(snap));
  flight->snapshot_bytes = snapshot->bytes();
  flight->snapshot_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - flight->started).count();
  r->checkpoint_snapshot_bytes = flight->snapshot_bytes;
  if (planned) last_plan_taken_ = plan_id;
  last_checkpoint_time_ = std::chrono::steady_clock::now();
  last_checkpoint_step_ = step_;
  inflight_ = std::move(flight);
  Manifest* files = &inflight_->files;
  const std::string dir = inflight_->dir;
  writer_->start([snapshot, dir, files] { *files = write_snapshot(dir, *snapshot); });
}

void Trainer::publish_checkpoint() {
  CNX_CHECK(inflight_ && inflight_->phase == InFlight::kWriting, "no checkpoint write to publish");
  writer_->wait();  // rethrows a write error
  InFlight& f = *inflight_;
  const std::vector<std::string> parts = comm_.allgather(manifest_to_json(f.step, f.files));
  Manifest all;
  if (comm_.rank() == 0) {
    for (size_t r = 0; r < parts.size(); ++r) {
      for (auto& [name, d] : manifest_from_json(parts[r], "checkpoint part of rank " + std::to_string(r), nullptr))
        all[name] = d;
    }
  }
  f.phase = InFlight::kPublishing;
  // Rank 0 makes the manifest durable before it reports its own part (which
  // lists MANIFEST.json), so the coordinator, which commits on the last of
  // all parts, never commits a folder without a durable manifest.
  const bool rank0 = comm_.rank() == 0;
  const int64_t keep = options_.checkpoint_keep;
  const std::string root = options_.checkpoint_root;
  ControlPlane* plane = f.plan_id > 0 ? plane_ : nullptr;
  writer_->start([&f, all, rank0, keep, root, plane] {
    if (plane) {
      if (rank0) {
        f.files["MANIFEST.json"] = write_file_durable(f.dir + "/MANIFEST.json", manifest_to_json(f.step, all));
        fsync_dir(f.dir);
      }
      plane->report_part(f.plan_id, f.step, f.files, f.epoch, f.cursor);
    } else if (rank0) {
      commit_local(root, f.dir, f.step, all);
      for (const auto& gone : apply_retention(root, keep)) CNX_LOG_INFO("retention: deleted checkpoint {}", gone);
    }
  });
}

void Trainer::retire_checkpoint(StepResult* r) {
  writer_->wait();  // rethrows a commit or report error
  const InFlight& f = *inflight_;
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - f.started).count();
  r->checkpoint_write_seconds = total - f.snapshot_seconds;
  if (comm_.rank() == 0) {
    CNX_LOG_INFO("checkpoint {} {} (snapshot {:.3f} s, {:.1f} MB; written in the background {:.2f} s)", f.final_dir,
                 f.plan_id > 0 ? "reported to the coordinator" : "committed", f.snapshot_seconds,
                 static_cast<double>(f.snapshot_bytes) / 1e6, total - f.snapshot_seconds);
  }
  inflight_.reset();
}

void Trainer::wait_for_checkpoint(StepResult* r) {
  // Collective: every rank calls this at the same point. A write not yet
  // published is in that phase on every rank, but one rank may have retired
  // a published checkpoint while rank 0 still commits it, so the barrier
  // does not depend on what this rank still holds.
  StepResult ignored;
  if (!r) r = &ignored;
  if (inflight_ && inflight_->phase == InFlight::kWriting) publish_checkpoint();
  if (inflight_) retire_checkpoint(r);
  comm_.barrier();  // rank 0's commit is done on every rank's return
}

void Trainer::abandon_checkpoint() {
  if (!inflight_) return;
  try {
    writer_->wait();
  } catch (const std::exception& e) {
    CNX_LOG_WARN("checkpoint of step {} abandoned: {}", inflight_->step, e.what());
  }
  inflight_.reset();
}

std::string Trainer::save_checkpoint(int64_t plan_id) {
  StepResult r;
  begin_checkpoint(plan_id, &r);
  const std::string dir = inflight_->final_dir;
  wait_for_checkpoint(&r);
  return dir;
}

void Trainer::load_checkpoint(const std::string& dir) {
  const LoadedCheckpoint ck = read_checkpoint(dir, comm_.rank());
  const TrainerRecord& t = ck.trainer;
  const std::string tfile = dir + "/" + kTrainerFile;
  const bool same_world = t.world_size == comm_.size();
  if (!same_world && !options_.allow_world_change)
    throw CheckpointError(cnx::str("checkpoint '", dir, "' was written by ", t.world_size, " ranks; this run has ",
                                   comm_.size(),
                                   ". Resuming with another world size needs the coordinator, which "
                                   "re-partitions the epoch's remaining samples"));
  if (t.global_batch < 1) throw CheckpointError(tfile + ": global_batch must be >= 1");
  if (!same_world) {
    if (t.world_size < 1 || t.global_batch % t.world_size != 0)
      throw CheckpointError(
          cnx::str(tfile, ": global_batch ", t.global_batch, " is not a multiple of world_size ", t.world_size));
    // Either the global batch is kept (optimizer.global_batch: accumulation
    // makes up for the ranks) or the samples per rank and step are, and the
    // step count is rescaled below.
    if (t.global_batch != global_batch_ && t.global_batch / t.world_size != global_batch_ / comm_.size())
      throw CheckpointError(cnx::str("checkpoint '", dir, "' used ", t.global_batch / t.world_size,
                                     " samples per rank and step (global batch ", t.global_batch, "), this run uses ",
                                     global_batch_ / comm_.size(), " (global batch ", global_batch_,
                                     "); set optimizer.global_batch to keep the global batch across world sizes"));
  } else if (t.global_batch != global_batch_) {
    throw CheckpointError(cnx::str("checkpoint '", dir, "' used a global batch of ", t.global_batch, ", this run uses ",
                                   global_batch_, " (data.batch_size x ranks x accum_steps)"));
  }

  // Model: strict, every name and shape.
  std::map<std::string, at::Tensor> by_name(ck.model.begin(), ck.model.end());
  std::vector<std::string> problems;
  NamedTensors current = model_state();
  for (const auto& [name, t2] : current) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      problems.push_back("missing '" + name + "'");
    } else if (it->second.sizes() != t2.sizes() || it->second.scalar_type() != t2.scalar_type()) {
      problems.push_back(
          cnx::str("'", name, "' has shape ", it->second.sizes(), " in the checkpoint, ", t2.sizes(), " in the model"));
    }
  }
  std::set<std::string> known;
  for (const auto& [name, t2] : current) known.insert(name);
  for (const auto& [name, t2] : ck.model)
    if (!known.count(name)) problems.push_back("unexpected '" + name + "'");
  if (!problems.empty()) {
    std::string msg = "checkpoint '" + dir + "/" + kModelFile + "' does not match the model:";
    for (const auto& p : problems) msg += "\n  " + p;
    throw CheckpointError(msg);
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, t2] : current) t2.copy_(by_name.at(name));
  }
  try {
    optimizer_->load_state_dict(ck.optimizer);
  } catch (const CheckError& e) {
    throw CheckpointError(dir + "/" + kOptimizerFile + ": " + e.what());
  }

  epoch_ = t.epoch;
  if (same_world) {
    const std::string mine = dir + "/" + rank_file_name(comm_.rank());
    if (!ck.rank_state)
      throw CheckpointError(dir + ": MANIFEST.json lists no " + rank_file_name(comm_.rank()) + " for this rank");
    try {
      data_->restore(ck.rank_state->cursor);
    } catch (const std::exception& e) {
      throw CheckpointError(mine + ": cannot restore the data cursor: " + e.what());
    }
    set_cpu_rng_state(ck.rank_state->cpu_rng);
    step_ = t.step;
  } else {
    // The coordinator hands this rank its share of the epoch's unused
    // samples; the old ranks' cursors and generators do not apply.
    data_->start_epoch(epoch_);
    step_ = (t.step * t.global_batch + global_batch_ / 2) / global_batch_;
    seed_cpu_rng(mix_seed(rank_stream_seed(options_.seed, comm_.rank()), static_cast<uint64_t>(t.step)));
    if (comm_.rank() == 0 && t.global_batch == global_batch_)
      CNX_LOG_WARN(
          "checkpoint {} was written by {} ranks; this run has {} x {} accumulation steps: same global batch {} "
          "and peak lr {:.4g}, step {} continues the same schedule",
          dir, t.world_size, comm_.size(), options_.accum_steps, global_batch_, schedule_->options().peak_lr, step_);
    else if (comm_.rank() == 0)
      CNX_LOG_WARN(
          "checkpoint {} was written by {} ranks (global batch {}); this run has {} (global batch {}): "
          "step {} becomes step {} of the rescaled schedule",
          dir, t.world_size, t.global_batch, comm_.size(), global_batch_, t.step, step_);
  }
  last_checkpoint_step_ = step_;
  skipped_total_ = t.skipped_total;
  skipped_consecutive_ = t.skipped_consecutive;
  if (scaler_.enabled()) {
    if (t.loss_scale > 0) {
      try {
        scaler_.load({static_cast<float>(t.loss_scale), t.loss_scale_growth_tracker});
      } catch (const CheckError& e) {
        throw CheckpointError(tfile + ": " + e.what());
      }
    } else if (comm_.rank() == 0) {
      CNX_LOG_WARN("checkpoint {} holds no loss scale (written without fp16): the scale starts at {}", dir,
                   scaler_.scale());
    }
  }
  if (comm_.rank() == 0) CNX_LOG_INFO("resumed from {} at step {} (epoch {})", dir, step_, epoch_);
}

std::string Trainer::resume(const std::string& how) {
  if (how == "none") return "";
  std::string dir = how;
  if (how == "auto") {
    if (options_.checkpoint_root.empty()) return "";
    const auto latest = latest_checkpoint(options_.checkpoint_root);
    if (!latest) return "";
    dir = *latest;
  }
  load_checkpoint(dir);
  return dir;
}

}  // namespace cnx::worker
