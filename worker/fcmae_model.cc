#include "worker/fcmae_model.h"

#include <torch/utils.h>

#include <stdexcept>

#include "common/check.h"
#include "common/config.h"

namespace cnx::worker {

model::FcmaeOptions fcmae_options_from_config(const Config& c) {
  model::FcmaeOptions o;
  if (c.model.name == "custom") {
    o.encoder.depths = c.model.depths;
    o.encoder.dims = c.model.dims;
  } else {
    try {
      o = model::fcmae_options(c.model.name);
    } catch (const std::invalid_argument& e) {
      throw ConfigError(std::string("model.name: ") + e.what());
    }
  }
  o.encoder.in_chans = c.model.in_chans;
  o.encoder.num_classes = 0;
  o.decoder_dim = c.model.decoder_dim;
  o.decoder_depth = c.model.decoder_depth;
  o.norm_pix_loss = c.model.norm_pix_loss;
  o.encoder_type = c.model.encoder;
  o.encoder.block = c.model.block;
  o.init = c.model.init;
  try {
    model::validate(o);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(std::string("model: ") + e.what());
  }
  return o;
}

at::Tensor FcmaeTrainModel::loss(const at::Tensor& images, const at::Tensor& masks) {
  return net_->forward(images, masks).loss;
}

std::unique_ptr<FcmaeTrainModel> make_fcmae_model(const Config& config) {
  const model::FcmaeOptions o = fcmae_options_from_config(config);
  torch::manual_seed(static_cast<uint64_t>(config.job.seed));
  return std::make_unique<FcmaeTrainModel>(model::Fcmae(o));
}

}  // namespace cnx::worker
