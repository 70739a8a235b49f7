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
    // Block: dwconv 49C+C, LN 2C, fc1 4C^2+4C, GRN 8C, fc2 4C^2+C = 8C^2+65C.
    r.params += o.depths[s] * (8 * c[s] * c[s] + 65 * c[s]);
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

int64_t count_params(const ConvNeXtV2Options& o) {
  return complexity(o, 224, 224).params;
}

int64_t count_macs(const ConvNeXtV2Options& o, int64_t height, int64_t width) {
  return complexity(o, height, width).macs;
}

}  // namespace cnx::model
