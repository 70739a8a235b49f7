#pragma once
// Layer-wise learning-rate decay for fine-tuning (docs/model.md), as
// the reference ConvNeXt V2 fine-tuning does with layer_decay_type "single":
//   L = sum(depths);
//   downsample_layers.s.*  -> id sum(depths[:s]) + 1   (stem: 1; a downsample
//                             shares the id of the first block of its stage)
//   stages.s.b.*           -> id sum(depths[:s]) + b + 1
//   anything else (norm.*, head.*) -> id L + 1
//   lr of a parameter = lr * layer_decay^(L + 1 - id)
// Weight decay (the reference's fine-tuning groups): exempt are names ending
// in ".bias", LayerNorm weights, and GRN gamma/beta (worker::is_decayed with
// no_decay {"grn.gamma", "grn.beta"}).
//
// Threading: LayerDecayAdamW is used by the training thread only.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "worker/optimizer.h"

namespace cnx::eval {

// The layer id of a reference-named parameter. Throws cnx::CheckError for a
// downsample/stage index outside `depths`.
int64_t layer_id(const std::string& name, const std::vector<int64_t>& depths);

// layer_decay^(L + 1 - id) with L = sum(depths).
double layer_lr_scale(int64_t id, const std::vector<int64_t>& depths, double layer_decay);

// The suffixes fine-tuning exempts from weight decay besides biases and norms.
const std::vector<std::string>& finetune_no_decay();

struct LayerGroup {
  int64_t id = 0;
  double lr_scale = 1.0;
  std::vector<std::string> names;  // parameter names, in the given order
};

// AdamW with one parameter group per layer id: step(lr) updates each group at
// lr * its lr_scale. The update arithmetic is worker::AdamW's.
class LayerDecayAdamW {
 public:
  // `params`: reference-named parameters of a dense ConvNeXt V2 (shared with
  // the model). options.no_decay is extended with finetune_no_decay().
  LayerDecayAdamW(const worker::NamedTensors& params, const std::vector<int64_t>& depths, double layer_decay,
                  worker::AdamWOptions options);

  void step(double lr);
  const std::vector<LayerGroup>& groups() const { return groups_; }
  // Whether the parameter `name` is weight-decayed.
  bool decayed(const std::string& name) const;

 private:
  std::vector<LayerGroup> groups_;
  std::vector<std::unique_ptr<worker::AdamW>> optimizers_;  // parallel to groups_
  std::vector<std::string> no_decay_;
};

}  // namespace cnx::eval
