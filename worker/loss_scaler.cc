#include "worker/loss_scaler.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard (ATen.h no longer brings it in LibTorch 2.x)

#include <cmath>

#include "common/check.h"

namespace cnx::worker {

LossScaler::LossScaler(LossScalerOptions options) : options_(options) {
  CNX_CHECK(options_.init_scale > 0 && std::isfinite(options_.init_scale), "loss scaler: init_scale must be > 0, got ",
            options_.init_scale);
  CNX_CHECK(options_.growth_factor > 1.0, "loss scaler: growth_factor must be > 1, got ", options_.growth_factor);
  CNX_CHECK(options_.backoff_factor > 0.0 && options_.backoff_factor < 1.0,
            "loss scaler: backoff_factor must be in (0, 1), got ", options_.backoff_factor);
  CNX_CHECK(options_.growth_interval >= 1, "loss scaler: growth_interval must be >= 1, got ", options_.growth_interval);
  state_.scale = static_cast<float>(options_.init_scale);
  state_.growth_tracker = 0;
}

void LossScaler::unscale(const NamedTensors& params) const {
  if (!options_.enabled) return;
  // GradScaler: inv_scale = self._scale.double().reciprocal().float().
  const float inv = static_cast<float>(1.0 / static_cast<double>(state_.scale));
  at::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) p.mutable_grad().mul_(inv);
  }
}

void LossScaler::update(bool found_inf) {
  if (!options_.enabled) return;
  // ATen's _amp_update_scale_ (float scale, double factors).
  if (found_inf) {
    state_.scale = static_cast<float>(static_cast<double>(state_.scale) * options_.backoff_factor);
    state_.growth_tracker = 0;
    return;
  }
  const int64_t successful = state_.growth_tracker + 1;
  if (successful == options_.growth_interval) {
    const float grown = static_cast<float>(static_cast<double>(state_.scale) * options_.growth_factor);
    if (std::isfinite(grown)) state_.scale = grown;
    state_.growth_tracker = 0;
  } else {
    state_.growth_tracker = successful;
  }
}

void LossScaler::load(const LossScalerState& state) {
  CNX_CHECK(state.scale > 0 && std::isfinite(state.scale), "loss scaler: a stored scale must be finite and > 0, got ",
            state.scale);
  CNX_CHECK(state.growth_tracker >= 0 && state.growth_tracker < options_.growth_interval,
            "loss scaler: a stored growth tracker must be in [0, ", options_.growth_interval, "), got ",
            state.growth_tracker);
  state_ = state;
}

}  // namespace cnx::worker
