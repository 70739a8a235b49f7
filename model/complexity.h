#pragma once
// Closed-form parameter and FLOP counts of the dense ConvNeXt V2.
//
// FLOPs follow the convention of the paper's table (fvcore): one multiply-add
// of a convolution or Linear counts as one FLOP; normalisation, activations,
// GRN, pooling and residual adds are not counted (they are < 1% at 224).
// No tensors are allocated, so even `huge` is counted instantly.
#include <cstdint>
#include <vector>

#include "model/options.h"

namespace cnx::model {

struct ComplexityBreakdown {
  int64_t params = 0;               // all learnable scalars, head included
  int64_t macs = 0;                 // convs + linears, multiply-adds ("FLOPs")
  std::vector<int64_t> stage_macs;  // per stage, its downsample included (stem in stage 0)
  int64_t head_macs = 0;
};

// Learnable scalars of the model these options build.
int64_t count_params(const ConvNeXtV2Options& options);

// Multiply-adds for one image of height x width (each >= 32). Spatial sizes
// follow the convolutions' floor rounding, like the model itself.
int64_t count_macs(const ConvNeXtV2Options& options, int64_t height, int64_t width);

ComplexityBreakdown complexity(const ConvNeXtV2Options& options, int64_t height, int64_t width);

// Multiply-adds of one FCMAE forward (model/fcmae.h) for one image of
// height x width (multiples of 32) with `visible_patches` of its
// (height/32)*(width/32) patches visible: the sparse encoder computes at the
// visible sites only (stem on visible 4x4 patches, downsamples and blocks at
// visible sites of each stage), the decoder densely on every patch (proj 1x1,
// decoder_depth blocks of decoder_dim channels, pred 1x1 to 32*32*in_chans).
// Convention as above (convs and linears only; the loss, norms, GRN and
// activations are not counted).
struct FcmaeMacs {
  int64_t encoder = 0;
  int64_t decoder = 0;
  int64_t total() const { return encoder + decoder; }
};
FcmaeMacs fcmae_forward_macs(const ConvNeXtV2Options& encoder, int64_t decoder_dim, int64_t decoder_depth,
                             int64_t height, int64_t width, int64_t visible_patches);

// FLOPs of one training step on `batch` images: 2 FLOPs per multiply-add, and
// the backward costs twice the forward (one input-gradient and one
// weight-gradient product per GEMM/conv), so 6 * forward MACs. The stem's
// skipped input gradient (< 1% of the encoder) and AdamW (O(parameters)) are
// ignored. atto at 224, 19 of 49 patches visible (mask 0.6): 6 * 401.2 M = 2.41
// GFLOP/image.
double fcmae_step_flops(const FcmaeMacs& per_image, int64_t batch);

}  // namespace cnx::model
