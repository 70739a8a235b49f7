#include "model/complexity.h"

#include <stdexcept>
#include <string>

namespace cnx::model {
namespace {

// Output size of a convolution with kernel == stride (no padding).
int64_t patch_out(int64_t in, int64_t k) {
  return (in - k) / k + 1;
}

}  // namespace

ComplexityBreakdown complexity(const ConvNeXtV2Options& o, int64_t height, int64_t width) {
  validate(o);
  if (height < 32 || width < 32) {
    throw std::invalid_argument("complexity: image must be at least 32x32, got " + std::to_string(height) + "x" +
                                std::to_string(width));
  }
  ComplexityBreakdown r;
  const auto& c = o.dims;
  int64_t h = patch_out(height, 4), w = patch_out(width, 4);
  // Stem: conv k4 s4 (+bias) and a channels-first LayerNorm.
  r.params += o.in_chans * c[0] * 16 + c[0] + 2 * c[0];
  for (int s = 0; s < 4; ++s) {
    int64_t macs = 0;
    if (s == 0) {
      macs += h * w * c[0] * o.in_chans * 16;
    } else {
      r.params += 2 * c[s - 1] + c[s - 1] * c[s] * 4 + c[s];
      h = patch_out(h, 2);
      w = patch_out(w, 2);
      macs += h * w * c[s] * c[s - 1] * 4;
    }
    // Block: dwconv 49C+C, LN 2C, fc1 4C^2+4C, GRN 8C, fc2 4C^2+C = 8C^2+65C
    // (v1: no GRN, layer scale C = 8C^2+58C).
    r.params += o.depths[s] * (8 * c[s] * c[s] + (o.block == "v1" ? 58 : 65) * c[s]);
    macs += o.depths[s] * h * w * (49 * c[s] + 8 * c[s] * c[s]);
    r.stage_macs.push_back(macs);
    r.macs += macs;
  }
  r.params += 2 * c[3];  // final LayerNorm
  if (o.num_classes > 0) {
    r.params += c[3] * o.num_classes + o.num_classes;
    r.head_macs = c[3] * o.num_classes;
    r.macs += r.head_macs;
  }
  return r;
}

FcmaeMacs fcmae_forward_macs(const ConvNeXtV2Options& o, int64_t decoder_dim, int64_t decoder_depth, int64_t height,
                             int64_t width, int64_t visible_patches) {
  validate(o);
  constexpr int64_t kPatch = 32, kStem = 4;
  if (height % kPatch != 0 || width % kPatch != 0 || height <= 0 || width <= 0) {
    throw std::invalid_argument("fcmae_forward_macs: image must be a positive multiple of 32, got " +
                                std::to_string(height) + "x" + std::to_string(width));
  }
  const int64_t patches = (height / kPatch) * (width / kPatch);
  if (visible_patches < 0 || visible_patches > patches) {
    throw std::invalid_argument("fcmae_forward_macs: " + std::to_string(visible_patches) + " visible of " +
                                std::to_string(patches) + " patches");
  }
  const auto& c = o.dims;
  FcmaeMacs r;
  for (int s = 0; s < 4; ++s) {
    const int64_t side = kPatch / (kStem << s);  // stage-s sites along one side of a patch
    const int64_t sites = visible_patches * side * side;
    r.encoder += s == 0 ? sites * c[0] * o.in_chans * kStem * kStem : sites * c[s] * c[s - 1] * 4;
    r.encoder += o.depths[s] * sites * (49 * c[s] + 8 * c[s] * c[s]);
  }
  const int64_t d = decoder_dim;
  r.decoder = patches * (c[3] * d + decoder_depth * (49 * d + 8 * d * d) + d * kPatch * kPatch * o.in_chans);
  return r;
}

double fcmae_step_flops(const FcmaeMacs& per_image, int64_t batch) {
  return 6.0 * static_cast<double>(per_image.total()) * static_cast<double>(batch);
}

int64_t count_params(const ConvNeXtV2Options& o) {
  return complexity(o, 224, 224).params;
}

int64_t count_macs(const ConvNeXtV2Options& o, int64_t height, int64_t width) {
  return complexity(o, height, width).macs;
}

}  // namespace cnx::model
