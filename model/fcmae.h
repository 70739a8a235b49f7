#pragma once
// FCMAE: fully convolutional masked autoencoder pretraining of ConvNeXt V2
// (docs/model.md, "FCMAE").
//
// Parameter names follow the reference FCMAE: encoder.downsample_layers.*,
// encoder.stages.* (the dense ConvNeXt V2 names under "encoder."), proj.*,
// mask_token (1, decoder_dim, 1, 1), decoder.0.* (a dense Block), pred.*.
// encoder() is the dense ConvNeXt V2 whose downsample_layers and stages are
// those parameters, so it exports as a dense model (model/weights.h); its
// final norm is not part of FCMAE and stays at init.
//
// Masks: float (N, L), L = (H/p)*(W/p), p = 32, 1 = masked, made by the
// caller (the trainer derives each image's mask from (seed, epoch, sample
// key) with generate_mask, so a resumed run reproduces its masks exactly).
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

#include "model/convnextv2.h"
#include "model/options.h"

namespace cnx::model {

struct FcmaeOptions {
  ConvNeXtV2Options encoder;  // num_classes and drop_path_rate are ignored (FCMAE has neither)
  int64_t decoder_dim = 512;
  int64_t decoder_depth = 1;
  bool norm_pix_loss = true;
  // "sparse" | "dense_masked" (the oracle: the same function) | "dense" (the
  // paper's dense-convolution ablation: masks the input only; fcmae_encoder.h)
  std::string encoder_type = "sparse";
  std::string init = "reference";   // "reference" | "std02"
  bool dense_channels_last = true;  // memory format of the dense-masked encoder's convs
};

// FcmaeOptions with the encoder of a named variant (atto ... huge).
FcmaeOptions fcmae_options(const std::string& variant);

// Throws std::invalid_argument naming the offending field.
void validate(const FcmaeOptions& options);

// Number of visible patches per image: int(L * (1 - ratio)) as in the reference.
int64_t num_visible(int64_t num_patches, double ratio);

// (n, h_patches*w_patches) float mask, 1 = masked, exactly num_visible(L, ratio)
// zeros per row, chosen uniformly without replacement by a splitmix64 stream
// seeded from (seed, row). ratio in [0, 1].
torch::Tensor generate_mask(int64_t n, int64_t h_patches, int64_t w_patches, double ratio, uint64_t seed);

// (N, C, H, W) -> (N, L, p*p*C), channel fastest (einsum nchpwq->nhwpqc).
torch::Tensor patchify(const torch::Tensor& images, int64_t patch_size);
// Inverse of patchify for an image of h_patches x w_patches patches.
torch::Tensor unpatchify(const torch::Tensor& patches, int64_t patch_size, int64_t h_patches, int64_t w_patches);

// Reference loss: pred (N, p*p*C, h, w), mask (N, L). With norm_pix the target
// patch is standardised (unbiased variance, eps 1e-6). Mean squared error per
// patch, averaged over masked patches; CheckError when no patch is masked.
torch::Tensor fcmae_loss(const torch::Tensor& images, const torch::Tensor& pred, const torch::Tensor& mask,
                         int64_t patch_size, bool norm_pix_loss);

struct FcmaeOutput {
  torch::Tensor loss;  // scalar
  torch::Tensor pred;  // (N, p*p*C, H/p, W/p)
  torch::Tensor mask;  // (N, L), 1 = masked
};

// Holds the encoder's downsample_layers and stages under "encoder".
class FcmaeEncoderImpl : public torch::nn::Module {
 public:
  explicit FcmaeEncoderImpl(ConvNeXtV2 net);
  ConvNeXtV2 net;
};
TORCH_MODULE(FcmaeEncoder);

class FcmaeImpl : public torch::nn::Module {
 public:
  // Validates options and initialises as options.init says (the caller seeds
  // the global generator first for a reproducible init).
  explicit FcmaeImpl(FcmaeOptions options);

  // Loss, prediction and mask for images (N, C, H, W), H and W multiples of 32.
  FcmaeOutput forward(const torch::Tensor& images, const torch::Tensor& mask);

  // (N, C3, H/32, W/32), zeros at masked patches, by the selected encoder.
  torch::Tensor forward_encoder(const torch::Tensor& images, const torch::Tensor& mask);
  // (N, p*p*C, H/32, W/32). With the sparse encoder the decoder runs on the
  // sparse ops too (every patch an active site: proj and pred as Linears on
  // channels-last rows, the blocks as sparse_block), and the result is a
  // channels-last tensor viewed as NCHW; with the dense-masked encoder it is
  // the LibTorch modules (the oracle). Both compute the same function.
  torch::Tensor forward_decoder(const torch::Tensor& latent, const torch::Tensor& mask);

  // "sparse" | "dense_masked" | "dense" (FcmaeOptions::encoder_type); all run
  // the same parameters.
  void set_encoder_type(const std::string& type);
  const std::string& encoder_type() const { return options_.encoder_type; }

  const FcmaeOptions& options() const { return options_; }
  int64_t patch_size() const { return patch_size_; }
  // The dense ConvNeXt V2 view of the encoder (shares the parameters).
  ConvNeXtV2 encoder_model() const { return encoder->net; }

  FcmaeEncoder encoder{nullptr};
  torch::nn::Conv2d proj{nullptr};
  torch::Tensor mask_token;
  torch::nn::Sequential decoder{nullptr};
  torch::nn::Conv2d pred{nullptr};

 private:
  void init_weights();
  torch::Tensor sparse_decoder(const torch::Tensor& latent, const torch::Tensor& mask);

  FcmaeOptions options_;
  int64_t patch_size_ = 32;
};
TORCH_MODULE(Fcmae);

}  // namespace cnx::model
