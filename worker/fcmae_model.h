#pragma once
// The FCMAE model (model/fcmae.h) as the trainer's TrainModel, built from the
// job config.
#include <memory>

#include "model/fcmae.h"
#include "worker/train_model.h"

namespace cnx {
struct Config;
}

namespace cnx::worker {

// model.* of the config as FcmaeOptions (the mask ratio is the trainer's:
// it makes the masks). Throws cnx::ConfigError naming the key for values
// FCMAE cannot use.
model::FcmaeOptions fcmae_options_from_config(const Config& config);

class FcmaeTrainModel final : public TrainModel {
 public:
  explicit FcmaeTrainModel(model::Fcmae net) : net_(std::move(net)) {}
  torch::nn::Module& module() override { return *net_; }
  int64_t patch_size() const override { return net_->patch_size(); }
  at::Tensor loss(const at::Tensor& images, const at::Tensor& masks) override;
  model::Fcmae& net() { return net_; }

 private:
  model::Fcmae net_;
};

// Seeds the global generator with job.seed, then builds and initialises the
// model (rank 0's init is what the trainer broadcasts).
std::unique_ptr<FcmaeTrainModel> make_fcmae_model(const Config& config);

}  // namespace cnx::worker
