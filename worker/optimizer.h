#pragma once
// AdamW with the reference's weight-decay groups, its state keyed by
// parameter NAME (so checkpoints are readable and robust to module order),
// and global-norm gradient clipping.
//
// Weight-decay groups (docs/model.md). The reference's pretraining
// exempts exactly the parameters that are 1-D in its model or whose name ends
// in ".bias"; GRN gamma/beta and mask_token are multi-dimensional there and
// therefore decayed. We decide by name, never by the shape we happen to store:
// a parameter is exempt when
//   * its name ends with ".bias", or
//   * it is a LayerNorm weight in the reference's naming: the last module is
//     "norm" or "ln" ("stages.1.0.norm.weight", "norm.weight",
//     "decoder.0.norm.weight", ...), or it is the stem LayerNorm
//     "downsample_layers.0.1.weight" or a downsample LayerNorm
//     "downsample_layers.{1,2,3}.0.weight" (with any prefix such as "encoder."),
//   * or it ends with one of the configured extra suffixes
//     (optimizer.no_decay, e.g. {"grn.gamma", "grn.beta"} for fine-tuning).
//
// Update (identical to torch::optim::AdamW of LibTorch 1.13, bit for bit):
//   p *= 1 - lr * wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// A parameter whose grad is undefined is left alone (its step is not counted).
//
// Threading: not thread-safe; the training thread owns it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cnx::worker {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// True when `name` is decayed under the rules above.
bool is_decayed(const std::string& name, const std::vector<std::string>& extra_no_decay);

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.05;
  std::vector<std::string> no_decay;  // extra exempt suffixes
};

// Per-parameter state. Tensors are defined once the parameter took a step.
struct AdamWParamState {
  int64_t step = 0;
  at::Tensor exp_avg;
  at::Tensor exp_avg_sq;
};

class AdamW {
 public:
  // `params`: (name, parameter) with unique names; the parameters are held
  // by reference (the tensors are shared with the model).
  AdamW(NamedTensors params, const AdamWOptions& options);

  // One update of every parameter that has a gradient, at learning rate lr.
  void step(double lr);

  const AdamWOptions& options() const { return options_; }
  const NamedTensors& params() const { return params_; }
  bool decayed(size_t index) const { return decayed_.at(index); }
  // The names in the decayed / exempt group, in parameter order.
  std::vector<std::string> group_names(bool decayed) const;

  // State by parameter name. Keys: "<name>" for every parameter.
  const std::map<std::string, AdamWParamState>& state() const { return state_; }

  // Flat tensor dictionary for checkpoints: "exp_avg/<name>",
  // "exp_avg_sq/<name>", "step/<name>" (int64 scalar tensor).
  NamedTensors state_dict() const;
  // Strict inverse of state_dict(): every parameter's three entries must be
  // present with matching shapes and dtypes and nothing else; otherwise
  // throws cnx::CheckError listing every problem. Copies the values.
  void load_state_dict(const NamedTensors& state);

 private:
  NamedTensors params_;
  std::vector<bool> decayed_;
  AdamWOptions options_;
  std::map<std::string, AdamWParamState> state_;
};

// Global L2 norm of all defined gradients (computed in float64 from
// per-tensor norms, in parameter order), and, when max_norm > 0 and the norm
// exceeds it, every gradient is scaled by max_norm / (norm + 1e-6) as
// torch.nn.utils.clip_grad_norm_ does. Returns the norm before clipping.
double clip_grad_norm(const NamedTensors& params, double max_norm);

}  // namespace cnx::worker
