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

}  // namespace cnx::model
