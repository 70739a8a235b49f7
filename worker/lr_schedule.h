#pragma once
// Learning-rate schedule of the reference FCMAE pretraining (docs/model.md,
// "Schedule and optimiser"): the peak lr is blr * global_batch / 256 unless an absolute lr
// is configured; per-iteration linear warmup from 0, then a half-cosine down
// to min_lr at the end of the schedule. "Iteration" means optimizer step, so
// with gradient accumulation the lr changes once per accumulated step, as in
// the reference (it adjusts only when data_iter_step % accum_iter == 0).
//
// Units: steps are optimizer steps counted from 0; epochs are fractional
// (step / steps_per_epoch). Pure functions of their arguments; thread-safe.
#include <cstdint>

namespace cnx::worker {

// Images consumed by one optimizer step across the job.
int64_t global_batch_size(int64_t batch_per_rank, int64_t world_size, int64_t accum_steps);

// lr > 0 wins; else blr * global_batch / 256. Throws cnx::CheckError when
// both are <= 0 or global_batch <= 0.
double peak_lr(double blr, double lr, int64_t global_batch);

// optimizer.global_batch: the accumulation steps that make `global_batch`
// from `batch_per_rank` x `world_size`. Throws cnx::ConfigError when it does
// not divide, or when `configured_accum` (optimizer.accum_steps) is neither
// 1 (the default) nor the derived value.
int64_t accum_steps_for_global_batch(int64_t global_batch, int64_t batch_per_rank, int64_t world_size,
                                     int64_t configured_accum);

struct LrScheduleOptions {
  double peak_lr = 0.0;
  double min_lr = 0.0;
  double warmup_epochs = 0.0;
  double epochs = 1.0;          // length of the whole schedule
  int64_t steps_per_epoch = 1;  // optimizer steps per epoch (> 0)
};

class LrSchedule {
 public:
  // Validates (CheckError naming the field): peak_lr >= min_lr >= 0,
  // 0 <= warmup_epochs <= epochs, epochs > 0, steps_per_epoch > 0.
  explicit LrSchedule(const LrScheduleOptions& options);

  // The lr applied by optimizer step `step` (0-based):
  //   e = step / steps_per_epoch
  //   e <  warmup: peak * e / warmup
  //   e >= warmup: min + (peak - min) * 0.5 * (1 + cos(pi * (e - warmup) / (epochs - warmup)))
  // Past the end of the schedule the lr stays at min_lr.
  double lr_at(int64_t step) const;

  double epoch_at(int64_t step) const;
  // ceil(epochs * steps_per_epoch): the step count of the full schedule.
  int64_t total_steps() const;
  const LrScheduleOptions& options() const { return options_; }

 private:
  LrScheduleOptions options_;
};

}  // namespace cnx::worker
