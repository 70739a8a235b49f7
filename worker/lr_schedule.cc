#include "worker/lr_schedule.h"

#include <cmath>

#include "common/check.h"
#include "common/config.h"

namespace cnx::worker {

int64_t global_batch_size(int64_t batch_per_rank, int64_t world_size, int64_t accum_steps) {
  CNX_CHECK(batch_per_rank > 0 && world_size > 0 && accum_steps > 0,
            "global batch needs positive batch_per_rank, world_size and accum_steps; got ", batch_per_rank, ", ",
            world_size, ", ", accum_steps);
  return batch_per_rank * world_size * accum_steps;
}

int64_t accum_steps_for_global_batch(int64_t global_batch, int64_t batch_per_rank, int64_t world_size,
                                     int64_t configured_accum) {
  CNX_CHECK(global_batch > 0 && batch_per_rank > 0 && world_size > 0, "accum_steps_for_global_batch: ", global_batch,
            ", ", batch_per_rank, ", ", world_size);
  const int64_t per_step = batch_per_rank * world_size;
  if (global_batch % per_step != 0)
    throw ConfigError(str("optimizer.global_batch ", global_batch,
                          " is not a multiple of data.batch_size x ranks = ", batch_per_rank, " x ", world_size, " = ",
                          per_step, ": change data.batch_size or the number of ranks"));
  const int64_t accum = global_batch / per_step;
  if (configured_accum != 1 && configured_accum != accum)
    throw ConfigError(str("optimizer.accum_steps ", configured_accum, " contradicts optimizer.global_batch ",
                          global_batch, " (", batch_per_rank, " x ", world_size, " ranks needs ", accum,
                          " accumulation steps); leave accum_steps at 1 (derived) or set global_batch: 0"));
  return accum;
}

double peak_lr(double blr, double lr, int64_t global_batch) {
  CNX_CHECK(global_batch > 0, "global batch must be > 0, got ", global_batch);
  if (lr > 0) return lr;
  CNX_CHECK(blr > 0, "optimizer.blr must be > 0 when optimizer.lr is 0, got ", blr);
  return blr * static_cast<double>(global_batch) / 256.0;
}

LrSchedule::LrSchedule(const LrScheduleOptions& o) : options_(o) {
  CNX_CHECK(std::isfinite(o.peak_lr) && o.peak_lr >= 0, "lr schedule: peak lr must be >= 0, got ", o.peak_lr);
  CNX_CHECK(std::isfinite(o.min_lr) && o.min_lr >= 0 && o.min_lr <= o.peak_lr,
            "lr schedule: optimizer.min_lr must be in [0, peak lr ", o.peak_lr, "], got ", o.min_lr);
  CNX_CHECK(std::isfinite(o.epochs) && o.epochs > 0, "lr schedule: schedule.epochs must be > 0, got ", o.epochs);
  CNX_CHECK(o.warmup_epochs >= 0 && o.warmup_epochs <= o.epochs,
            "lr schedule: schedule.warmup_epochs must be in [0, epochs=", o.epochs, "], got ", o.warmup_epochs);
  CNX_CHECK(o.steps_per_epoch > 0, "lr schedule: steps per epoch must be > 0, got ", o.steps_per_epoch,
            " (is the data set smaller than one global batch?)");
}

double LrSchedule::epoch_at(int64_t step) const {
  return static_cast<double>(step) / static_cast<double>(options_.steps_per_epoch);
}

int64_t LrSchedule::total_steps() const {
  return static_cast<int64_t>(std::ceil(options_.epochs * static_cast<double>(options_.steps_per_epoch)));
}

double LrSchedule::lr_at(int64_t step) const {
  CNX_CHECK(step >= 0, "lr schedule: step must be >= 0, got ", step);
  const auto& o = options_;
  const double e = epoch_at(step);
  if (e < o.warmup_epochs) return o.peak_lr * e / o.warmup_epochs;
  if (e >= o.epochs) return o.min_lr;
  const double progress = (e - o.warmup_epochs) / (o.epochs - o.warmup_epochs);
  return o.min_lr + (o.peak_lr - o.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace cnx::worker
