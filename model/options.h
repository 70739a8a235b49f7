#pragma once
// ConvNeXt V2 architecture options (docs/model.md) and the eight
// published variants. Plain structs: config parsing lives elsewhere.
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::model {

struct ConvNeXtV2Options {
  std::vector<int64_t> depths;  // blocks per stage; exactly 4 stages
  std::vector<int64_t> dims;    // channels per stage; exactly 4 stages
  int64_t in_chans = 3;
  // Classes of the Linear head. 0 builds no head: forward() then returns the
  // pooled, normalised features (timm's num_classes=0 convention).
  int64_t num_classes = 1000;
  double drop_path_rate = 0.0;  // stochastic depth; linspace(0, rate, sum(depths))
  double head_init_scale = 1.0;
  // Block design: "v2" (ConvNeXt V2: GRN after the GELU, no layer scale) or
  // "v1" (ConvNeXt V1: no GRN; the block's output is multiplied per channel
  // by a learnt layer scale `gamma`, initialised to layer_scale_init, before
  // the residual add). v1 exists for the paper's GRN ablation (FCMAE with V1
  // blocks); its state-dict name is stages.s.b.gamma as in the official V1.
  std::string block = "v2";
  double layer_scale_init = 1e-6;  // v1 only (the official V1 default)
};

// The accepted values of ConvNeXtV2Options::block.
bool is_block_type(const std::string& block);

// Names accepted by variant_options(), smallest first.
const std::vector<std::string>& variant_names();

// atto, femto, pico, nano, tiny, base, large, huge (num_classes 1000, no drop
// path). Throws std::invalid_argument naming the accepted values otherwise.
ConvNeXtV2Options variant_options(const std::string& name);

// Throws std::invalid_argument with the offending field when options cannot
// build a model (wrong stage count, non-positive sizes, rate outside [0,1)).
void validate(const ConvNeXtV2Options& options);

// "depths=[2,2,6,2] dims=[40,80,160,320] in_chans=3 num_classes=1000 ..."
std::string describe(const ConvNeXtV2Options& options);

}  // namespace cnx::model
