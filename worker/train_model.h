#pragma once
// What the trainer needs from a model: its parameters/buffers (one module
// tree, named like the reference state dict) and a masked-image loss.
// worker/fcmae_model.h adapts model/fcmae; tests may plug in other models.
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>

namespace cnx::worker {

class TrainModel {
 public:
  virtual ~TrainModel() = default;
  // The module whose named_parameters()/named_buffers() are trained,
  // synchronised and checkpointed.
  virtual torch::nn::Module& module() = 0;
  // Side of a mask patch in pixels; masks have (H/p)*(W/p) columns.
  virtual int64_t patch_size() const = 0;
  // Scalar loss of `images` [N,3,H,W] under `masks` [N,L] (1 = removed).
  virtual at::Tensor loss(const at::Tensor& images, const at::Tensor& masks) = 0;
};

}  // namespace cnx::worker
