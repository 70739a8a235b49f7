#include "worker/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/jit/serialization/pickle.h>

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

#include "common/check.h"
#include "common/config.h"
#include "common/logging.h"
#include "worker/checkpoint_files.h"
#include "common/rng.h"
#include "worker/signals.h"

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

// Control slots reduced (summed) with each step's last gradient bucket.
// kPlanSum/kPlanKnown: the sum of the due coordinator plan ids and how many
// ranks know one; a plan runs when every rank knows the same one.
enum ControlSlot {
  kCheckpointNow = 0,
  kPreempted,
  kNonFinite,
  kLossSum,
  kPlanSum,
  kPlanKnown,
  kAbort,
  kDrain,
  kNumSlots
};

constexpr const char* kModelFile = "model.pt";
constexpr const char* kOptimizerFile = "optimizer.pt";
constexpr const char* kTrainerFile = "trainer.json";

std::string rank_file(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "rank-%05d.json", rank);
  return buf;
}

std::string tensors_to_bytes(const NamedTensors& tensors) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().contiguous());
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  return std::string(bytes.begin(), bytes.end());
}

NamedTensors tensors_from_file(const std::string& path) {
  const std::string data = read_file(path);
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(std::vector<char>(data.begin(), data.end()));
  } catch (const std::exception& e) {
    throw CheckpointError("'" + path + "' is not a tensor dictionary: " + e.what());
  }
  if (!v.isGenericDict()) throw CheckpointError("'" + path + "' does not hold a dictionary of tensors");
  NamedTensors out;
  for (const auto& item : v.toGenericDict()) {
    if (!item.key().isString() || !item.value().isTensor())
      throw CheckpointError("'" + path + "' holds a non-tensor entry");
    out.emplace_back(item.key().toStringRef(), item.value().toTensor());
  }
  return out;
}

std::string to_hex(const at::Tensor& bytes) {
  at::Tensor b = bytes.contiguous();
  const auto* p = b.data_ptr<uint8_t>();
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (int64_t i = 0; i < b.numel(); ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

at::Tensor from_hex(const std::string& s, const std::string& origin) {
  if (s.size() % 2) throw CheckpointError(origin + ": RNG state has an odd number of hex digits");
  at::Tensor t = at::empty({static_cast<int64_t>(s.size() / 2)}, at::kByte);
  auto* p = t.data_ptr<uint8_t>();
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw CheckpointError(origin + ": RNG state is not hex");
  };
  for (size_t i = 0; i < s.size() / 2; ++i) p[i] = static_cast<uint8_t>(nibble(s[2 * i]) * 16 + nibble(s[2 * i + 1]));
  return t;
}

at::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const at::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

void seed_cpu_rng(uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

// The seed of rank `rank`'s generator stream (drop path etc.).
uint64_t rank_stream_seed(uint64_t seed, int rank) {
  return mix_seed(seed, 0x72616e6bULL + static_cast<uint64_t>(rank));
}

nlohmann::json parse_json_file(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError("'" + path + "' is not valid JSON: " + e.what());
  }
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
  o.log_every = c.schedule.log_every;
  o.sample_log = c.train.sample_log;
  return o;
}

Trainer::Trainer(TrainerOptions options, comm::Communicator& comm, std::unique_ptr<TrainModel> model,
                 std::unique_ptr<BatchSource> data)
    : options_(std::move(options)), comm_(comm), model_(std::move(model)), data_(std::move(data)) {
  CNX_CHECK(model_ && data_, "trainer needs a model and a data source");
  CNX_CHECK(options_.nonfinite == "skip" || options_.nonfinite == "stop",
            "train.nonfinite must be skip|stop, got '", options_.nonfinite, "'");
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
  sync_options.control_slots = kNumSlots;
  sync_options.prescaled = true;  // step() scales the loss by gradient_scale()
  std::vector<at::Tensor> plist;
  for (const auto& [name, p] : params_) plist.push_back(p);
  sync_ = std::make_unique<comm::GradSync>(comm_, plist, sync_options);

  global_batch_ = global_batch_size(options_.batch_size, comm_.size(), options_.accum_steps);
  LrScheduleOptions lo;
  lo.peak_lr = peak_lr(options_.blr, options_.lr, global_batch_);
  lo.min_lr = options_.min_lr;
  lo.epochs = options_.epochs;
  lo.warmup_epochs = options_.warmup_epochs;
  lo.steps_per_epoch = data_->epoch_samples_total() / global_batch_;
  CNX_CHECK(lo.steps_per_epoch > 0, "the data set (", data_->epoch_samples_total(),
            " samples) is smaller than one global batch (", global_batch_, ")");
  schedule_ = std::make_unique<LrSchedule>(lo);
  total_steps_ = schedule_->total_steps();
  if (options_.max_steps > 0) total_steps_ = std::min(total_steps_, options_.max_steps);
  const int64_t patch = model_->patch_size();
  CNX_CHECK(patch > 0 && options_.image_size % patch == 0, "data.input_size (", options_.image_size,
            ") must be a multiple of the mask patch size ", patch);
  grid_ = options_.image_size / patch;

  // Per-rank generator stream (drop path etc.); saved in checkpoints.
  seed_cpu_rng(rank_stream_seed(options_.seed, comm_.rank()));
  data_->start_epoch(0);
  last_checkpoint_time_ = std::chrono::steady_clock::now();
  if (!options_.sample_log.empty()) sample_log_ = std::make_unique<SampleLog>(options_.sample_log, comm_.rank());
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
  CNX_CHECK(false, "epoch ", epoch_, " yields no batch on some rank (too little data for ", comm_.size(), " ranks?)");
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
    at::Tensor loss = model_->loss(batch.images.to(options_.device), masks.to(options_.device));
    if (options_.loss_hook) options_.loss_hook(step_, micro, loss);
    const double value = loss.item<double>();
    nonfinite = nonfinite || !std::isfinite(value);
    loss_sum += value / static_cast<double>(options_.accum_steps);
    r.times.forward += timer.lap();

    std::optional<comm::GradSync::NoSyncScope> no_sync;
    if (!last) no_sync.emplace(*sync_);
    if (last) {
      const bool ckpt_timer = options_.checkpoint_every_minutes > 0 && comm_.rank() == 0 &&
                              std::chrono::steady_clock::now() - last_checkpoint_time_ >
                                  std::chrono::duration<double>(60.0 * options_.checkpoint_every_minutes);
      const int64_t plan = plane_ ? plane_->due_plan_id(step_ + 1) : 0;
      sync_->set_control({ckpt_timer && !plane_ ? 1.0 : 0.0, termination_requested() ? 1.0 : 0.0,
                          nonfinite ? 1.0 : 0.0, nonfinite ? 0.0 : loss_sum, static_cast<double>(plan),
                          plan > 0 ? 1.0 : 0.0, plane_ && plane_->abort_requested() ? 1.0 : 0.0,
                          plane_ && plane_->drain_requested() ? 1.0 : 0.0});
    }
    // The 1 / world of the gradient average is folded into the loss
    // (GradSyncOptions::prescaled): the all-reduce then sums, and no pass
    // divides the gradients afterwards.
    (loss * (sync_->gradient_scale() / static_cast<double>(options_.accum_steps))).backward();
    r.times.backward += timer.lap();
  }
  sync_->finish();
  r.times.comm_wait = timer.lap();
  if (sample_log_) sample_log_->flush();  // before this step's checkpoint

  // Everything below depends only on values identical across ranks.
  const std::vector<double>& control = sync_->control_result();
  r.lr = schedule_->lr_at(step_);
  r.loss = control[kNonFinite] > 0 ? std::nan("") : control[kLossSum] / comm_.size();
  r.grad_norm = clip_grad_norm(params_, options_.clip_grad);
  if (control[kNonFinite] > 0 || !std::isfinite(r.grad_norm)) {
    r.skipped = true;
    ++skipped_total_;
    ++skipped_consecutive_;
    const std::string what = cnx::str("non-finite ", control[kNonFinite] > 0 ? "loss" : "gradient norm",
                                      " at step ", step_ + 1, " (", control[kNonFinite], " of ", comm_.size(),
                                      " ranks reported a non-finite loss)");
    if (options_.nonfinite == "stop") throw NonFiniteLossError(what + "; train.nonfinite = stop");
    if (skipped_consecutive_ > options_.max_skipped)
      throw NonFiniteLossError(what + "; " + std::to_string(skipped_consecutive_) +
                               " consecutive steps skipped, more than train.max_skipped = " +
                               std::to_string(options_.max_skipped));
    if (comm_.rank() == 0) CNX_LOG_WARN("{}; update skipped ({} skipped so far)", what, skipped_total_);
  } else {
    skipped_consecutive_ = 0;
    optimizer_->step(r.lr);
  }
  ++step_;
  r.step = step_;
  r.times.optimizer = timer.lap();

  // Every-N blocks.
  progress_.add(r.times);
  if (options_.log_every > 0 && (step_ % options_.log_every == 0 || step_ == total_steps_)) log_progress(r);
  r.preempted = control[kPreempted] > 0;
  r.aborted = control[kAbort] > 0;
  r.drained = control[kDrain] > 0;
  const auto world = static_cast<double>(comm_.size());
  const double plan = control[kPlanKnown] == world ? control[kPlanSum] / world : 0.0;
  const bool plan_agreed = plane_ && plan >= 1 && plan == std::floor(plan);
  const auto t0 = std::chrono::steady_clock::now();
  if (plane_) {
    // Checkpoints go through the coordinator's plans; preemption is reported
    // by heartbeat, and training continues until the plan it causes has run.
    preempt_pending_ = preempt_pending_ || r.preempted;
    if (plan_agreed && !r.aborted) {
      save_checkpoint(static_cast<int64_t>(plan));
      r.checkpointed = true;
    }
    r.preempted = preempt_pending_ && r.checkpointed;
    plane_->on_step(step_, epoch_, r.loss, r.times.total() > 0 ? global_batch_ / r.times.total() : 0.0,
                    preempt_pending_);
  } else {
    // Also at the last step, so a completed run always leaves its final state.
    const bool due = (options_.checkpoint_every_steps > 0 && step_ % options_.checkpoint_every_steps == 0) ||
                     control[kCheckpointNow] > 0 || r.preempted || step_ == total_steps_;
    if (due && !options_.checkpoint_root.empty()) {
      save_checkpoint();
      r.checkpointed = true;
    }
  }
  if (r.checkpointed)
    r.checkpoint_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
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
      return RunOutcome::kAborted;
    }
    if (r.drained) {
      if (comm_.rank() == 0) CNX_LOG_WARN("drained by the coordinator at step {}", step_);
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
    const int64_t id = plane_->due_plan_id(step_);
    const bool late = comm_.rank() == 0 && std::chrono::steady_clock::now() - t0 >
                                               std::chrono::duration<double>(options_.final_checkpoint_wait_s);
    // Max-reduced: [no plan here, id, -id, rank 0 gave up, abort]: every rank
    // holds the same plan iff no one lacks one and max id == min id.
    at::Tensor v = at::tensor({id > 0 ? 0.0 : 1.0, static_cast<double>(id), -static_cast<double>(id),
                               late ? 1.0 : 0.0, plane_->abort_requested() ? 1.0 : 0.0},
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
        CNX_LOG_ERROR("training completed at step {}, but the coordinator planned no final checkpoint within {} s; "
                      "the last committed checkpoint is the one to use",
                      step_, options_.final_checkpoint_wait_s);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string Trainer::save_checkpoint(int64_t plan_id) {
  const bool planned = plan_id > 0;
  CNX_CHECK(!planned || plane_, "a checkpoint plan needs a control plane");
  const std::string root = options_.checkpoint_root;
  CNX_CHECK(planned || !root.empty(), "checkpoint.root is empty");
  const auto t0 = std::chrono::steady_clock::now();
  // Local: a temp folder renamed on commit. Planned: the coordinator's folder.
  const std::string dir = planned ? confined_to_root(root, plane_->plan_dir(plan_id), "the coordinator's checkpoint folder")
                                   : root + "/" + temp_checkpoint_name(step_);
  if (comm_.rank() == 0) {
    std::error_code ec;
    if (!planned) fs::create_directories(root, ec);
    fs::remove_all(dir, ec);  // leftover of a crashed attempt at the same step
    if (!fs::create_directories(dir, ec) || ec)
      throw CheckpointError("cannot create checkpoint folder '" + dir + "': " + ec.message());
  }
  comm_.barrier();

  Manifest mine;
  if (comm_.rank() == 0) {
    mine[kModelFile] = write_file_durable(dir + "/" + kModelFile, tensors_to_bytes(model_state()));
    mine[kOptimizerFile] = write_file_durable(dir + "/" + kOptimizerFile, tensors_to_bytes(optimizer_->state_dict()));
    nlohmann::json t{{"step", step_},
                     {"epoch", epoch_},
                     {"world_size", comm_.size()},
                     {"global_batch", global_batch_},
                     {"peak_lr", schedule_->options().peak_lr},
                     {"steps_per_epoch", schedule_->options().steps_per_epoch},
                     {"skipped_total", skipped_total_},
                     {"skipped_consecutive", skipped_consecutive_}};
    mine[kTrainerFile] = write_file_durable(dir + "/" + kTrainerFile, t.dump(2) + "\n");
  }
  const std::string cursor = data_->cursor();
  nlohmann::json rj{{"rank", comm_.rank()}, {"cursor", cursor}, {"cpu_rng", to_hex(cpu_rng_state())}};
  mine[rank_file(comm_.rank())] = write_file_durable(dir + "/" + rank_file(comm_.rank()), rj.dump(2) + "\n");

  const std::vector<std::string> parts = comm_.allgather(manifest_to_json(step_, mine));
  std::string final_dir = planned ? dir : root + "/" + checkpoint_name(step_);
  if (comm_.rank() == 0) {
    Manifest all;
    for (size_t r = 0; r < parts.size(); ++r) {
      for (auto& [name, d] : manifest_from_json(parts[r], "checkpoint part of rank " + std::to_string(r), nullptr))
        all[name] = d;
    }
    if (planned) {
      mine["MANIFEST.json"] = write_file_durable(dir + "/MANIFEST.json", manifest_to_json(step_, all));
      fsync_dir(dir);
    } else {
      final_dir = commit_local(root, dir, step_, all);
      for (const auto& gone : apply_retention(root, options_.checkpoint_keep))
        CNX_LOG_INFO("retention: deleted checkpoint {}", gone);
    }
  }
  if (planned) {
    comm_.barrier();  // the manifest is durable before any part is reported
    plane_->report_part(plan_id, step_, mine, epoch_, cursor);
  }
  comm_.barrier();
  if (comm_.rank() == 0) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CNX_LOG_INFO("checkpoint {} {} ({:.2f} s)", final_dir, planned ? "reported to the coordinator" : "committed", secs);
  }
  last_checkpoint_time_ = std::chrono::steady_clock::now();
  last_checkpoint_step_ = step_;
  return final_dir;
}

void Trainer::load_checkpoint(const std::string& dir) {
  const std::string mine = rank_file(comm_.rank());
  int64_t ck_step = -1;
  const Manifest manifest = verify_checkpoint(dir, {kModelFile, kOptimizerFile, kTrainerFile}, &ck_step);

  const nlohmann::json t = parse_json_file(dir + "/" + kTrainerFile);
  auto get_int = [&](const char* key) -> int64_t {
    if (!t.contains(key) || !t[key].is_number_integer())
      throw CheckpointError(dir + "/" + kTrainerFile + ": missing integer \"" + key + "\"");
    return t[key].get<int64_t>();
  };
  const int64_t world = get_int("world_size");
  const bool same_world = world == comm_.size();
  if (!same_world && !options_.allow_world_change)
    throw CheckpointError(cnx::str("checkpoint '", dir, "' was written by ", world, " ranks; this run has ",
                                   comm_.size(), ". Resuming with another world size needs the coordinator, which "
                                   "re-partitions the epoch's remaining samples"));
  const int64_t saved_global_batch = get_int("global_batch");
  if (saved_global_batch < 1) throw CheckpointError(dir + "/" + kTrainerFile + ": global_batch must be >= 1");
  if (!same_world) {
    if (saved_global_batch % world != 0)
      throw CheckpointError(cnx::str(dir, "/", kTrainerFile, ": global_batch ", saved_global_batch,
                                     " is not a multiple of world_size ", world));
    if (saved_global_batch / world != global_batch_ / comm_.size())
      throw CheckpointError(cnx::str("checkpoint '", dir, "' used ", saved_global_batch / world,
                                     " samples per rank and step, this run uses ", global_batch_ / comm_.size(),
                                     " (data.batch_size x accum_steps)"));
  } else if (saved_global_batch != global_batch_)
    throw CheckpointError(cnx::str("checkpoint '", dir, "' used a global batch of ", get_int("global_batch"),
                                   ", this run uses ", global_batch_, " (data.batch_size x ranks x accum_steps)"));
  if (get_int("step") != ck_step) throw CheckpointError(dir + ": trainer.json and MANIFEST.json disagree on the step");

  // Model: strict, every name and shape.
  const NamedTensors saved = tensors_from_file(dir + "/" + kModelFile);
  std::map<std::string, at::Tensor> by_name(saved.begin(), saved.end());
  std::vector<std::string> problems;
  NamedTensors current = model_state();
  for (const auto& [name, t2] : current) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      problems.push_back("missing '" + name + "'");
    } else if (it->second.sizes() != t2.sizes() || it->second.scalar_type() != t2.scalar_type()) {
      problems.push_back(cnx::str("'", name, "' has shape ", it->second.sizes(), " in the checkpoint, ", t2.sizes(),
                                  " in the model"));
    }
  }
  std::set<std::string> known;
  for (const auto& [name, t2] : current) known.insert(name);
  for (const auto& [name, t2] : saved)
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
    optimizer_->load_state_dict(tensors_from_file(dir + "/" + kOptimizerFile));
  } catch (const CheckError& e) {
    throw CheckpointError(dir + "/" + kOptimizerFile + ": " + e.what());
  }

  epoch_ = get_int("epoch");
  if (same_world) {
    if (!manifest.count(mine))
      throw CheckpointError(dir + ": MANIFEST.json lists no " + mine + " for this rank");
    const nlohmann::json rj = parse_json_file(dir + "/" + mine);
    if (!rj.contains("cursor") || !rj["cursor"].is_string() || !rj.contains("cpu_rng") || !rj["cpu_rng"].is_string())
      throw CheckpointError(dir + "/" + mine + ": needs string fields \"cursor\" and \"cpu_rng\"");
    try {
      data_->restore(rj["cursor"].get<std::string>());
    } catch (const std::exception& e) {
      throw CheckpointError(dir + "/" + mine + ": cannot restore the data cursor: " + e.what());
    }
    set_cpu_rng_state(from_hex(rj["cpu_rng"].get<std::string>(), dir + "/" + mine));
    step_ = ck_step;
  } else {
    // The coordinator hands this rank its share of the epoch's unused
    // samples; the old ranks' cursors and generators do not apply.
    data_->start_epoch(epoch_);
    step_ = (ck_step * saved_global_batch + global_batch_ / 2) / global_batch_;
    seed_cpu_rng(mix_seed(rank_stream_seed(options_.seed, comm_.rank()), static_cast<uint64_t>(ck_step)));
    if (comm_.rank() == 0)
      CNX_LOG_WARN("checkpoint {} was written by {} ranks (global batch {}); this run has {} (global batch {}): "
                   "step {} becomes step {} of the rescaled schedule",
                   dir, world, saved_global_batch, comm_.size(), global_batch_, ck_step, step_);
  }
  last_checkpoint_step_ = step_;
  skipped_total_ = get_int("skipped_total");
  skipped_consecutive_ = get_int("skipped_consecutive");
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
