#pragma once
// Dynamic loss scaling for float16 training (train.precision: fp16), the
// rule of PyTorch's GradScaler (torch.cuda.amp.GradScaler with its defaults,
// the update of ATen's _amp_update_scale_):
//   * the loss is multiplied by `scale` before backward (float32, init 2^16);
//   * after the gradient all-reduce the gradients are multiplied by
//     1/scale (unscale); a non-finite unscaled gradient anywhere (found_inf)
//     skips the optimizer step;
//   * update(found_inf): found_inf -> scale *= backoff_factor (0.5),
//     growth_tracker = 0; else ++growth_tracker, and when it reaches
//     growth_interval (2000) scale *= growth_factor (2) unless that is not
//     finite, and growth_tracker = 0.
// The scale is a float32 value as in PyTorch (its arithmetic rounds like the
// CUDA kernel's). Every rank holds the same state: found_inf is computed from
// the all-reduced gradients, which are bit-identical on every rank, so all
// ranks skip and rescale together (worker/trainer.h).
// tests/worker/loss_scaler_test.cc checks the scale sequence against
// tests/worker/loss_scaler_reference.py (the rule in Python with torch float32).
#include <cstdint>

#include "worker/optimizer.h"

namespace cnx::worker {

struct LossScalerOptions {
  bool enabled = false;
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

// What a checkpoint stores (trainer.json: loss_scale, loss_scale_growth_tracker).
struct LossScalerState {
  float scale = 65536.0f;
  int64_t growth_tracker = 0;
};

class LossScaler {
 public:
  // Throws CheckError for options GradScaler rejects (scale <= 0, growth
  // <= 1, backoff outside (0, 1), interval < 1).
  explicit LossScaler(LossScalerOptions options = {});

  bool enabled() const { return options_.enabled; }
  // The factor the loss is multiplied by: 1 when disabled.
  double scale() const { return options_.enabled ? static_cast<double>(state_.scale) : 1.0; }
  // Multiplies every defined gradient by 1/scale (GradScaler.unscale_'s
  // float32 reciprocal). No-op when disabled.
  void unscale(const NamedTensors& params) const;
  // The update rule above. No-op when disabled.
  void update(bool found_inf);

  const LossScalerState& state() const { return state_; }
  void load(const LossScalerState& state);
  const LossScalerOptions& options() const { return options_; }

 private:
  LossScalerOptions options_;
  LossScalerState state_;
};

}  // namespace cnx::worker
