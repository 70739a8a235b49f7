// Cell convolutions (sparse downsample, sparse stem): input checks, autograd,
// kernel dispatch (conv_cells.h).
#include "sparse_ops/conv_cells.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/check.h"
#include "sparse_ops/cells_kernels.h"
#include "sparse_ops/op_util.h"

namespace cnx::sparse_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor weight_matrix_cells(const at::Tensor& weight) {
  // (Cout, Cin, k, k) -> (Cout, k*k*Cin), columns ordered (dy, dx, c) like gather_cells.
  return weight.permute({0, 2, 3, 1}).reshape({weight.size(0), -1});
}

class DownsampleFn : public torch::autograd::Function<DownsampleFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& map, const at::Tensor& weight,
                            const at::Tensor& bias, bool has_bias) {
    auto xc = x.contiguous();
    auto cols = CNX_SPARSE_DISPATCH(gather_cells, xc, xc, map);
    auto wm = weight_matrix_cells(weight);
    ctx->save_for_backward({xc, map, weight});
    ctx->saved_data["has_bias"] = has_bias;
    return has_bias ? at::addmm(bias, cols, wm.t()) : at::mm(cols, wm.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& map = saved[1];
    const auto& weight = saved[2];
    // Under autocast the product ran in reduced precision, so the incoming
    // gradient may be, too; the backward runs in the input's dtype.
    auto g = grads[0].to(x.scalar_type()).contiguous();
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      auto dcols = at::mm(g, weight_matrix_cells(weight)).contiguous();
      const int64_t rows = x.size(0);
      dx = CNX_SPARSE_DISPATCH(scatter_cells, dcols, dcols, map, rows);
    }
    if (ctx->needs_input_grad(2)) {
      auto cols = CNX_SPARSE_DISPATCH(gather_cells, x, x, map);  // recomputed: saves memory
      const int64_t k = weight.size(2);
      dw = at::mm(g.t(), cols).reshape({weight.size(0), k, k, weight.size(1)}).permute({0, 3, 1, 2}).contiguous();
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(3)) db = g.sum(0);
    return {dx, at::Tensor(), dw, db, at::Tensor()};
  }
};

class StemFn : public torch::autograd::Function<StemFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& image, const at::Tensor& site_index,
                            const at::Tensor& weight, const at::Tensor& bias, bool has_bias) {
    const int64_t k = weight.size(2);
    auto img = image.contiguous();
    auto cols = CNX_SPARSE_DISPATCH(patch_im2col, img, img, site_index, k);
    auto wm = weight.reshape({weight.size(0), -1});
    ctx->save_for_backward({img, site_index, weight});
    ctx->saved_data["has_bias"] = has_bias;
    return has_bias ? at::addmm(bias, cols, wm.t()) : at::mm(cols, wm.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& img = saved[0];
    const auto& site_index = saved[1];
    const auto& weight = saved[2];
    const int64_t k = weight.size(2);
    // Under autocast the product ran in reduced precision, so the incoming
    // gradient may be, too; the backward runs in the input's dtype.
    auto g = grads[0].to(img.scalar_type()).contiguous();
    at::Tensor dimg, dw, db;
    if (ctx->needs_input_grad(0)) {
      auto dcols = at::mm(g, weight.reshape({weight.size(0), -1})).contiguous();
      const auto sizes = img.sizes();
      dimg = CNX_SPARSE_DISPATCH(patch_col2im, dcols, dcols, site_index, sizes, k);
    }
    if (ctx->needs_input_grad(2)) {
      auto cols = CNX_SPARSE_DISPATCH(patch_im2col, img, img, site_index, k);
      dw = at::mm(g.t(), cols).reshape(weight.sizes());
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(3)) db = g.sum(0);
    return {dimg, at::Tensor(), dw, db, at::Tensor()};
  }
};

}  // namespace

at::Tensor sparse_downsample_conv(const at::Tensor& features, const at::Tensor& map, const at::Tensor& weight,
                                  const at::Tensor& bias) {
  static const char* op = "sparse_downsample_conv";
  RECORD_FUNCTION("cnx::sparse_downsample_conv", std::vector<c10::IValue>());
  detail::check_features(op, features);
  CNX_CHECK(weight.defined() && weight.dim() == 4 && weight.size(2) == weight.size(3), op,
            ": weight must be (Cout, Cin, k, k), got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  CNX_CHECK(weight.size(1) == features.size(1), op, ": weight expects ", weight.size(1),
            " input channels, features have ", features.size(1));
  auto w = detail::match_param(op, "weight", weight, features);
  detail::check_map(op, map, -1, features);
  CNX_CHECK(map.size(1) == weight.size(2) * weight.size(3), op, ": cell map has ", map.size(1),
            " entries per cell, kernel ", weight.size(2), "x", weight.size(3));
  if (bias.defined()) {
    CNX_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be (Cout), got ", bias.sizes());
  }
  auto b = detail::match_param(op, "bias", bias, features);
  return DownsampleFn::apply(features, map.contiguous(), w, detail::bias_or_placeholder(b, features), b.defined());
}

at::Tensor sparse_stem_conv(const at::Tensor& image, const SparseLayout& out_layout, const at::Tensor& weight,
                            const at::Tensor& bias) {
  static const char* op = "sparse_stem_conv";
  RECORD_FUNCTION("cnx::sparse_stem_conv", std::vector<c10::IValue>());
  CNX_CHECK(image.defined() && image.dim() == 4 && detail::is_supported_dtype(image.scalar_type()), op,
            ": image must be a (N, Cin, H, W) tensor of float32, float64, float16 or bfloat16, got ",
            image.defined() ? image.sizes() : at::IntArrayRef{}, " ",
            image.defined() ? image.scalar_type() : at::ScalarType::Undefined);
  CNX_CHECK(weight.defined() && weight.dim() == 4 && weight.size(2) == weight.size(3), op,
            ": weight must be (Cout, Cin, k, k), got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  const int64_t k = weight.size(2);
  CNX_CHECK(weight.size(1) == image.size(1), op, ": weight expects ", weight.size(1), " input channels, image has ",
            image.size(1));
  CNX_CHECK(image.size(0) == out_layout.batch && image.size(2) == out_layout.height * k &&
                image.size(3) == out_layout.width * k,
            op, ": image ", image.sizes(), " does not match a ", out_layout.batch, "x", out_layout.height, "x",
            out_layout.width, " layout with stride ", k);
  auto w = detail::match_param(op, "weight", weight, image);
  CNX_CHECK(out_layout.site_index.device() == image.device(), op, ": layout is on ", out_layout.site_index.device(),
            ", image on ", image.device());
  if (bias.defined()) {
    CNX_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be (Cout), got ", bias.sizes());
  }
  auto b = detail::match_param(op, "bias", bias, image);
  return StemFn::apply(image, out_layout.site_index.contiguous(), w, detail::bias_or_placeholder(b, image),
                       b.defined());
}

}  // namespace cnx::sparse_ops
