#include "model/fcmae_encoder.h"

#include <ATen/record_function.h>
#include <torch/nn/functional/conv.h>

#include "common/check.h"
#include "model/dense_kernels.h"
#include "model/onednn_matmul.h"
#include "model/precision.h"
#include "model/sparse_drop_path.h"
#include "sparse_ops/conv_cells.h"
#include "sparse_ops/densify.h"
#include "sparse_ops/dwconv.h"
#include "sparse_ops/grn.h"

namespace cnx::model {
using namespace cnx::sparse_ops;  // NOLINT: the sparse op vocabulary

namespace {

void check_inputs(const ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask, int64_t* h_patches,
                  int64_t* w_patches) {
  const int64_t p = encoder_patch_size(net);
  CNX_CHECK(images.defined() && images.dim() == 4, "FCMAE encoder: images must be (N, C, H, W), got ",
            images.defined() ? images.sizes() : at::IntArrayRef{});
  CNX_CHECK(images.size(1) == net.options().in_chans, "FCMAE encoder: images have ", images.size(1),
            " channels, the model expects ", net.options().in_chans);
  CNX_CHECK(images.size(2) % p == 0 && images.size(3) % p == 0 && images.size(2) > 0 && images.size(3) > 0,
            "FCMAE encoder: image size ", images.size(2), "x", images.size(3),
            " must be a positive multiple of the patch size ", p);
  *h_patches = images.size(2) / p;
  *w_patches = images.size(3) / p;
  CNX_CHECK(patch_mask.defined() && patch_mask.size(0) == images.size(0) &&
                patch_mask.numel() == images.size(0) * *h_patches * *w_patches,
            "FCMAE encoder: mask ", patch_mask.defined() ? patch_mask.sizes() : at::IntArrayRef{}, " does not hold ",
            *h_patches, "x", *w_patches, " patches for each of ", images.size(0), " images");
}

void check_no_drop_path(const ConvNeXtV2Impl& net) {
  if (!net.is_training()) return;
  for (int64_t s = 0; s < net.num_stages(); ++s) {
    for (const auto& blk : net.stage_blocks(s)) {
      CNX_CHECK(blk->drop_path_rate() == 0.0, "FCMAE encoder: drop path (rate ", blk->drop_path_rate(),
                ") is not supported by the masked encoders; build the encoder with drop_path_rate 0");
    }
  }
}

}  // namespace

int64_t encoder_patch_size(const ConvNeXtV2Impl& net) {
  return net.stem_conv()->options.stride()->at(0) * (int64_t{1} << (net.num_stages() - 1));
}

EncoderGeometry build_geometry(const at::Tensor& patch_mask, int64_t h_patches, int64_t w_patches, int64_t num_stages,
                               int64_t stem_stride, int64_t kernel, at::Device device) {
  EncoderGeometry geo;
  geo.patch_size = stem_stride * (int64_t{1} << (num_stages - 1));
  geo.h_patches = h_patches;
  geo.w_patches = w_patches;
  for (int64_t s = 0; s < num_stages; ++s) {
    StageGeometry st;
    const int64_t factor = int64_t{1} << (num_stages - 1 - s);  // stage resolution per patch
    st.layout = layout_from_patch_mask(patch_mask, h_patches, w_patches, factor, device);
    st.neighbours = neighbour_map(st.layout, kernel);
    if (s > 0) st.cells = cell_map(geo.stages.back().layout, st.layout, 2);
    geo.stages.push_back(std::move(st));
  }
  return geo;
}

at::Tensor sparse_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask) {
  int64_t hp = 0, wp = 0;
  check_inputs(net, images, patch_mask, &hp, &wp);
  const int64_t kernel = net.block(0, 0)->dwconv->options.kernel_size()->at(0);
  EncoderGeometry geo;
  {
    RECORD_FUNCTION("cnx::build_geometry", std::vector<c10::IValue>());
    geo = build_geometry(patch_mask, hp, wp, net.num_stages(), net.stem_conv()->options.stride()->at(0), kernel,
                         images.device());
  }
  return sparse_encode(net, images, geo);
}

at::Tensor sparse_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const EncoderGeometry& geo) {
  CNX_CHECK(static_cast<int64_t>(geo.stages.size()) == net.num_stages(), "sparse_encode: geometry has ",
            geo.stages.size(), " stages, the model ", net.num_stages());
  auto stem = net.stem_conv();
  auto x = sparse_stem_conv(images, geo.stages[0].layout, stem->weight, stem->bias);
  auto stem_norm = net.stem_norm();
  // LayerNorm statistics in float32 under autocast (precision.h), as LayerNormImpl.
  x = at::layer_norm(float_under_autocast(x), {stem_norm->channels()}, stem_norm->weight, stem_norm->bias,
                     stem_norm->eps());
  for (int64_t s = 0; s < net.num_stages(); ++s) {
    const auto& st = geo.stages[s];
    if (s > 0) {
      auto ln = net.downsample_norm(s);
      auto conv = net.downsample_conv(s);
      x = at::layer_norm(float_under_autocast(x), {ln->channels()}, ln->weight, ln->bias, ln->eps());
      x = sparse_downsample_conv(x, st.cells, conv->weight, conv->bias);
    }
    for (auto blk : net.stage_blocks(s)) x = sparse_block(*blk, x, st.neighbours, st.layout.offsets, net.is_training());
  }
  return densify(x, geo.stages.back().layout);
}

at::Tensor sparse_block(BlockImpl& blk, const at::Tensor& x, const at::Tensor& neighbours, const at::Tensor& offsets,
                        bool training) {
  auto y = sparse_depthwise_conv(x, neighbours, blk.dwconv->weight, blk.dwconv->bias);
  y = at::layer_norm(float_under_autocast(y), {blk.norm->channels()}, blk.norm->weight, blk.norm->bias,
                     blk.norm->eps());
  // pwconv1 + GELU and pwconv2 on the chosen GEMM path (onednn_matmul.h).
  y = pointwise_linear(y, blk.pwconv1->weight, blk.pwconv1->bias, /*gelu=*/true);
  if (blk.has_grn()) y = sparse_grn(y, offsets, blk.grn->gamma, blk.grn->beta);
  y = blk.layer_scale(pointwise_linear(y, blk.pwconv2->weight, blk.pwconv2->bias, /*gelu=*/false));
  if (training) y = sparse_drop_path(y, offsets, blk.drop_path_rate());
  return x + y;
}

at::Tensor dense_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask) {
  int64_t hp = 0, wp = 0;
  check_inputs(net, images, patch_mask, &hp, &wp);
  const int64_t p = encoder_patch_size(net);
  auto keep = patch_mask.reshape({images.size(0), 1, hp, wp}).eq(0).to(images.scalar_type());
  keep = keep.repeat_interleave(p, 2).repeat_interleave(p, 3);
  return dense_forward_encoder(net, images * keep, dense_kernels());
}

at::Tensor dense_masked_encode(ConvNeXtV2Impl& net, const at::Tensor& images, const at::Tensor& patch_mask,
                               bool channels_last) {
  int64_t hp = 0, wp = 0;
  check_inputs(net, images, patch_mask, &hp, &wp);
  check_no_drop_path(net);
  const int64_t n = images.size(0), stages = net.num_stages();
  // visible[s]: (N, 1, H_s, W_s), 1 at visible positions, in the images' dtype.
  auto vis_patch = patch_mask.reshape({n, 1, hp, wp}).eq(0).to(images.scalar_type());
  std::vector<at::Tensor> visible;
  for (int64_t s = 0; s < stages; ++s) {
    const int64_t f = int64_t{1} << (stages - 1 - s);
    visible.push_back(vis_patch.repeat_interleave(f, 2).repeat_interleave(f, 3));
  }
  auto fmt = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  auto x = net.stem_conv()->forward(images.contiguous(fmt));
  x = net.stem_norm()->forward(x) * visible[0];
  for (int64_t s = 0; s < stages; ++s) {
    const auto& vis = visible[s];
    if (s > 0) {
      x = net.downsample_norm(s)->forward(x) * visible[s - 1];
      x = net.downsample_conv(s)->forward(x.contiguous(fmt));
    }
    auto vis_nhwc = vis.permute({0, 2, 3, 1});
    for (auto blk : net.stage_blocks(s)) {
      auto y = blk->dwconv->forward((x * vis).contiguous(fmt)) * vis;
      y = y.permute({0, 2, 3, 1});
      y = blk->norm->forward(y);
      y = blk->pwconv1->forward(y);
      y = at::gelu(y);
      if (blk->has_grn()) {
        auto gx = at::linalg_vector_norm(float_under_autocast(y) * vis_nhwc, 2, at::IntArrayRef{1, 2},
                                         /*keepdim=*/true, c10::nullopt);
        y = model::grn_apply(y, gx, blk->grn->gamma, blk->grn->beta);
      }
      y = blk->layer_scale(blk->pwconv2->forward(y));
      x = x + y.permute({0, 3, 1, 2});
    }
  }
  return x * visible.back();
}

}  // namespace cnx::model
