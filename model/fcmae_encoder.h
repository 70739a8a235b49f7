#pragma once
// The two FCMAE encoders (docs/model.md, "FCMAE"), both driven by the weights of
// one dense cnx::model::ConvNeXtV2 (its downsample_layers and stages):
//
// * sparse_encode: computes only at visible sites. Stem on visible 4x4 pixel
//   patches, submanifold depthwise convs, per-site LayerNorm/Linear/GELU,
//   per-sample GRN over visible sites, downsample = LN + 2x2 cell conv.
// * dense_masked_encode: the correctness oracle: dense ops with the mask
//   applied to the input and output of every depthwise conv and after each LN
//   before a downsample, GRN statistics over visible positions only.
//
// Both return (N, C3, H/32, W/32) with zeros at masked patches and agree to
// float rounding, forward and backward. The patch size is the encoder's
// total stride (stem stride * 2^(stages-1), 32 for ConvNeXt V2).
//
// * dense_encode: NOT the same function: the paper's dense-convolution
//   baseline of its sparse-vs-dense ablation. The masked patches of the input
//   are set to 0 and the dense encoder runs on the whole image with no
//   further masking, so convolutions carry information across patch borders
//   into masked regions and the features at masked patches are not zero.
//
// Threading: the functions only read the module's parameters; calls on
// different inputs may run concurrently if no thread changes the module.
#include <ATen/ATen.h>

#include <vector>

#include "model/convnextv2.h"
#include "sparse_ops/layout.h"

namespace cnx::model {

// Per-batch sparse geometry: built once per batch, shared by every block of
// a stage (neighbour map) and by the downsample into it (cell map).
struct StageGeometry {
  sparse_ops::SparseLayout layout;  // visible sites at this stage's resolution
  at::Tensor neighbours;            // neighbour_map(layout, dwconv kernel)
  at::Tensor cells;                 // cell_map(previous stage, this stage, 2); undefined at stage 0
};

struct EncoderGeometry {
  int64_t patch_size = 0;  // encoder total stride
  int64_t h_patches = 0;
  int64_t w_patches = 0;
  std::vector<StageGeometry> stages;
};

// patch_mask: (N, h_patches*w_patches) or (N, h, w), 1 = masked. `stem_stride`
// is the stem conv's stride, `kernel` the depthwise kernel size.
EncoderGeometry build_geometry(const at::Tensor& patch_mask, int64_t h_patches, int64_t w_patches, int64_t num_stages,
                               int64_t stem_stride, int64_t kernel, at::Device device);

// Total stride of the network's encoder (stem stride * 2^(stages-1)).
int64_t encoder_patch_size(const ConvNeXtV2Impl& net);

// images: (N, in_chans, H, W), H and W multiples of the patch size;
// patch_mask: (N, L) with L = (H/p)*(W/p), 1 = masked. In training mode each
// block's residual branch gets per-sample drop path at its drop_path_rate
// (sparse_drop_path.h; FCMAE builds its encoder with rate 0).
at::Tensor sparse_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask);
// Same, with a prebuilt geometry (for callers that time or reuse it).
at::Tensor sparse_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const EncoderGeometry& geometry);

// One ConvNeXt V2 block on sparse features x [M, C] (rows = sites):
// submanifold depthwise conv over `neighbours` (neighbour_map of the sites'
// layout), LayerNorm, Linear, GELU, GRN with statistics per segment of
// `offsets` (SparseLayout::offsets: one segment per sample), Linear, residual
// add. With every site of an image active this is the dense block. With
// `training`, the residual branch gets per-sample drop path at the block's
// drop_path_rate (sparse_drop_path.h).
at::Tensor sparse_block(BlockImpl& block, const at::Tensor& x, const at::Tensor& neighbours, const at::Tensor& offsets,
                        bool training);

// The dense-convolution baseline (above): images * (1 - the patch mask at
// pixel resolution), then the dense encoder through the process's dense
// kernel set (dense_kernels.h); (N, C3, H/32, W/32), dense.
at::Tensor dense_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask);

// The blocks must have drop_path_rate 0 or the module be in eval mode.
// channels_last: run the dense convs in channels-last memory format (the
// fastest CPU form in LibTorch; numerically the same function).
at::Tensor dense_masked_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask,
                               bool channels_last = true);

}  // namespace cnx::model
