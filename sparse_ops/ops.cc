// Autograd Functions, input checks and device dispatch of the sparse ops
// (dwconv.h, grn.h, conv_cells.h, densify.h). Kernels: kernels.h.
#include <torch/csrc/autograd/custom_function.h>

#include "common/check.h"
#include "sparse_ops/conv_cells.h"
#include "sparse_ops/densify.h"
#include "sparse_ops/dwconv.h"
#include "sparse_ops/grn.h"
#include "sparse_ops/kernels.h"

namespace cnx::sparse_ops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#ifdef CNX_WITH_CUDA
#define CNX_SPARSE_DISPATCH(fn, probe, ...) \
  ((probe).is_cuda() ? detail::fn##_cuda(__VA_ARGS__) : detail::fn##_cpu(__VA_ARGS__))
#else
void require_cpu(const at::Tensor& probe, const char* kernel) {
  CNX_CHECK(!probe.is_cuda(), "sparse kernel ", kernel, ": this build has no CUDA kernels (CNX_WITH_CUDA=OFF)");
}
#define CNX_SPARSE_DISPATCH(fn, probe, ...) (require_cpu((probe), #fn), detail::fn##_cpu(__VA_ARGS__))
#endif

void check_features(const char* op, const at::Tensor& x) {
  CNX_CHECK(x.defined() && x.dim() == 2, op, ": features must be [M, C], got ",
            x.defined() ? x.sizes() : at::IntArrayRef{});
  CNX_CHECK(at::isFloatingType(x.scalar_type()), op, ": features must be floating point, got ", x.scalar_type());
}

void check_same(const char* op, const char* what, const at::Tensor& t, const at::Tensor& like) {
  CNX_CHECK(t.device() == like.device(), op, ": ", what, " is on ", t.device(), ", features on ", like.device());
  if (at::isFloatingType(t.scalar_type())) {
    CNX_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", what, " has dtype ", t.scalar_type(), ", features have ",
              like.scalar_type());
  }
}

void check_map(const char* op, const at::Tensor& map, int64_t rows, const at::Tensor& like) {
  CNX_CHECK(map.defined() && map.dim() == 2 && map.scalar_type() == at::kInt, op,
            ": index map must be int32 [rows, k*k], got ", map.defined() ? map.sizes() : at::IntArrayRef{});
  CNX_CHECK(rows < 0 || map.size(0) == rows, op, ": index map has ", map.size(0), " rows, features have ", rows);
  check_same(op, "index map", map, like);
}

// --- depthwise conv -------------------------------------------------------

class DwconvFn : public torch::autograd::Function<DwconvFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& map, const at::Tensor& weight,
                            const at::Tensor& bias) {
    const int64_t c = weight.size(0), k = weight.size(2);
    auto xc = x.contiguous();
    auto w = weight.reshape({c, k * k}).t().contiguous();
    auto b = bias.defined() ? bias.contiguous() : at::Tensor();
    ctx->save_for_backward({xc, map, weight});
    ctx->saved_data["has_bias"] = bias.defined();
    return CNX_SPARSE_DISPATCH(dwconv_forward, xc, xc, map, w, b);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& map = saved[1];
    const auto& weight = saved[2];
    const int64_t c = weight.size(0), k = weight.size(2);
    auto g = grads[0].contiguous();
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      // grad_in[j] = sum_t w[k*k-1-t] * g[map[j, t]]: the forward kernel, mirrored weights, no bias.
      auto wflip = weight.reshape({c, k * k}).flip({1}).t().contiguous();
      dx = CNX_SPARSE_DISPATCH(dwconv_forward, g, g, map, wflip, at::Tensor());
    }
    if (ctx->needs_input_grad(2) || ctx->needs_input_grad(3)) {
      auto [wk, bk] = CNX_SPARSE_DISPATCH(dwconv_weight_grad, g, g, x, map);
      dw = wk.t().reshape(weight.sizes());
      if (ctx->saved_data["has_bias"].toBool()) db = bk.contiguous();
    }
    return {dx, at::Tensor(), dw, db};
  }
};

// --- GRN ---------------------------------------------------------------------

class GrnFn : public torch::autograd::Function<GrnFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& offsets,
                            const at::Tensor& gamma, const at::Tensor& beta, double eps) {
    const int64_t c = x.size(1);
    auto xc = x.contiguous();
    auto gm = gamma.reshape({1, c});
    auto bt = beta.reshape({c}).contiguous();
    auto sumsq = CNX_SPARSE_DISPATCH(segment_dot, xc, xc, xc, offsets);
    auto gx = sumsq.sqrt();
    auto denom = gx.mean(1, true) + eps;
    auto nx = gx / denom;
    auto scale = (gm * nx + 1).contiguous();
    ctx->save_for_backward({xc, offsets, gamma, gx, denom, nx});
    return CNX_SPARSE_DISPATCH(segment_affine, xc, xc, scale, at::Tensor(), at::Tensor(), bt, offsets);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& offsets = saved[1];
    const auto& gamma = saved[2];
    const auto& gx = saved[3];
    const auto& denom = saved[4];
    const auto& nx = saved[5];
    const int64_t c = x.size(1);
    auto g = grads[0].contiguous();
    auto gm = gamma.reshape({1, c});
    auto gxs = CNX_SPARSE_DISPATCH(segment_dot, g, g, x, offsets);            // sum g*x per sample
    auto gs = CNX_SPARSE_DISPATCH(segment_dot, g, g, at::Tensor(), offsets);  // sum g per sample
    auto dgamma = (gxs * nx).sum(0).reshape(gamma.sizes());
    auto dbeta = gs.sum(0).reshape(gamma.sizes());
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      auto a = gxs * gm;  // dL/dNx
      auto dg = a / denom - (a * gx).sum(1, true) / (denom * denom * static_cast<double>(c));
      auto coef = at::where(gx > 0, dg / gx, at::zeros_like(gx)).contiguous();
      auto scale = (gm * nx + 1).contiguous();
      dx = CNX_SPARSE_DISPATCH(segment_affine, g, g, scale, x, coef, at::Tensor(), offsets);
    }
    return {dx, at::Tensor(), dgamma, dbeta, at::Tensor()};
  }
};

// --- cell convolutions ---------------------------------------------------------

at::Tensor weight_matrix_cells(const at::Tensor& weight) {
  // (Cout, Cin, k, k) -> (Cout, k*k*Cin), columns ordered (dy, dx, c) like gather_cells.
  return weight.permute({0, 2, 3, 1}).reshape({weight.size(0), -1});
}

class DownsampleFn : public torch::autograd::Function<DownsampleFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& map, const at::Tensor& weight,
                            const at::Tensor& bias) {
    auto xc = x.contiguous();
    auto cols = CNX_SPARSE_DISPATCH(gather_cells, xc, xc, map);
    auto wm = weight_matrix_cells(weight);
    ctx->save_for_backward({xc, map, weight});
    ctx->saved_data["has_bias"] = bias.defined();
    return bias.defined() ? at::addmm(bias, cols, wm.t()) : at::mm(cols, wm.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& map = saved[1];
    const auto& weight = saved[2];
    auto g = grads[0].contiguous();
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) {
      auto dcols = at::mm(g, weight_matrix_cells(weight)).contiguous();
      dx = CNX_SPARSE_DISPATCH(scatter_cells, dcols, dcols, map, x.size(0));
    }
    if (ctx->needs_input_grad(2)) {
      auto cols = CNX_SPARSE_DISPATCH(gather_cells, x, x, map);  // recomputed: saves memory
      const int64_t k = weight.size(2);
      dw = at::mm(g.t(), cols).reshape({weight.size(0), k, k, weight.size(1)}).permute({0, 3, 1, 2}).contiguous();
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(3)) db = g.sum(0);
    return {dx, at::Tensor(), dw, db};
  }
};

class StemFn : public torch::autograd::Function<StemFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& image, const at::Tensor& site_index,
                            const at::Tensor& weight, const at::Tensor& bias) {
    const int64_t k = weight.size(2);
    auto img = image.contiguous();
    auto cols = CNX_SPARSE_DISPATCH(patch_im2col, img, img, site_index, k);
    auto wm = weight.reshape({weight.size(0), -1});
    ctx->save_for_backward({img, site_index, weight});
    ctx->saved_data["has_bias"] = bias.defined();
    return bias.defined() ? at::addmm(bias, cols, wm.t()) : at::mm(cols, wm.t());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& img = saved[0];
    const auto& site_index = saved[1];
    const auto& weight = saved[2];
    const int64_t k = weight.size(2);
    auto g = grads[0].contiguous();
    at::Tensor dimg, dw, db;
    if (ctx->needs_input_grad(0)) {
      auto dcols = at::mm(g, weight.reshape({weight.size(0), -1})).contiguous();
      dimg = CNX_SPARSE_DISPATCH(patch_col2im, dcols, dcols, site_index, img.sizes(), k);
    }
    if (ctx->needs_input_grad(2)) {
      auto cols = CNX_SPARSE_DISPATCH(patch_im2col, img, img, site_index, k);
      dw = at::mm(g.t(), cols).reshape(weight.sizes());
    }
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(3)) db = g.sum(0);
    return {dimg, at::Tensor(), dw, db};
  }
};

// --- densify -------------------------------------------------------------------

class DensifyFn : public torch::autograd::Function<DensifyFn> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& site_index, int64_t n,
                            int64_t h, int64_t w) {
    const int64_t c = x.size(1);
    auto out = at::zeros({n * h * w, c}, x.options());
    out.index_copy_(0, site_index, x);
    ctx->save_for_backward({site_index});
    ctx->saved_data["c"] = c;
    return out.view({n, h, w, c}).permute({0, 3, 1, 2});
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto site_index = ctx->get_saved_variables()[0];
    const int64_t c = ctx->saved_data["c"].toInt();
    auto g = grads[0].permute({0, 2, 3, 1}).reshape({-1, c}).index_select(0, site_index);
    return {g, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor sparse_depthwise_conv(const at::Tensor& features, const at::Tensor& map, const at::Tensor& weight,
                                 const at::Tensor& bias) {
  static const char* op = "sparse_depthwise_conv";
  check_features(op, features);
  CNX_CHECK(weight.defined() && weight.dim() == 4 && weight.size(1) == 1 && weight.size(2) == weight.size(3), op,
            ": weight must be (C, 1, k, k), got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  CNX_CHECK(weight.size(0) == features.size(1), op, ": weight has ", weight.size(0), " channels, features ",
            features.size(1));
  check_same(op, "weight", weight, features);
  check_map(op, map, features.size(0), features);
  CNX_CHECK(map.size(1) == weight.size(2) * weight.size(3), op, ": neighbour map has ", map.size(1),
            " offsets, kernel ", weight.size(2), "x", weight.size(3));
  if (bias.defined()) {
    CNX_CHECK(bias.dim() == 1 && bias.size(0) == features.size(1), op, ": bias must be (C), got ", bias.sizes());
    check_same(op, "bias", bias, features);
  }
  return DwconvFn::apply(features, map, weight, bias);
}

at::Tensor sparse_grn(const at::Tensor& features, const at::Tensor& offsets, const at::Tensor& gamma,
                      const at::Tensor& beta, double eps) {
  static const char* op = "sparse_grn";
  check_features(op, features);
  CNX_CHECK(offsets.defined() && offsets.dim() == 1 && offsets.scalar_type() == at::kLong && offsets.size(0) >= 2, op,
            ": offsets must be int64 [N+1] with N >= 1");
  check_same(op, "offsets", offsets, features);
  CNX_CHECK(gamma.defined() && gamma.numel() == features.size(1), op, ": gamma has ",
            gamma.defined() ? gamma.numel() : 0, " elements, features ", features.size(1), " channels");
  CNX_CHECK(beta.defined() && beta.numel() == features.size(1), op, ": beta has ", beta.defined() ? beta.numel() : 0,
            " elements, features ", features.size(1), " channels");
  check_same(op, "gamma", gamma, features);
  check_same(op, "beta", beta, features);
  auto off = offsets.contiguous();
  return GrnFn::apply(features, off, gamma, beta, eps);
}

at::Tensor sparse_downsample_conv(const at::Tensor& features, const at::Tensor& map, const at::Tensor& weight,
                                  const at::Tensor& bias) {
  static const char* op = "sparse_downsample_conv";
  check_features(op, features);
  CNX_CHECK(weight.defined() && weight.dim() == 4 && weight.size(2) == weight.size(3), op,
            ": weight must be (Cout, Cin, k, k), got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  CNX_CHECK(weight.size(1) == features.size(1), op, ": weight expects ", weight.size(1),
            " input channels, features have ", features.size(1));
  check_same(op, "weight", weight, features);
  check_map(op, map, -1, features);
  CNX_CHECK(map.size(1) == weight.size(2) * weight.size(3), op, ": cell map has ", map.size(1),
            " entries per cell, kernel ", weight.size(2), "x", weight.size(3));
  if (bias.defined()) {
    CNX_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be (Cout), got ", bias.sizes());
    check_same(op, "bias", bias, features);
  }
  return DownsampleFn::apply(features, map.contiguous(), weight, bias);
}

at::Tensor sparse_stem_conv(const at::Tensor& image, const SparseLayout& out_layout, const at::Tensor& weight,
                            const at::Tensor& bias) {
  static const char* op = "sparse_stem_conv";
  CNX_CHECK(image.defined() && image.dim() == 4 && at::isFloatingType(image.scalar_type()), op,
            ": image must be a floating (N, Cin, H, W) tensor");
  CNX_CHECK(weight.defined() && weight.dim() == 4 && weight.size(2) == weight.size(3), op,
            ": weight must be (Cout, Cin, k, k), got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  const int64_t k = weight.size(2);
  CNX_CHECK(weight.size(1) == image.size(1), op, ": weight expects ", weight.size(1), " input channels, image has ",
            image.size(1));
  CNX_CHECK(image.size(0) == out_layout.batch && image.size(2) == out_layout.height * k &&
                image.size(3) == out_layout.width * k,
            op, ": image ", image.sizes(), " does not match a ", out_layout.batch, "x", out_layout.height, "x",
            out_layout.width, " layout with stride ", k);
  check_same(op, "weight", weight, image);
  CNX_CHECK(out_layout.site_index.device() == image.device(), op, ": layout is on ", out_layout.site_index.device(),
            ", image on ", image.device());
  if (bias.defined()) {
    CNX_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), op, ": bias must be (Cout), got ", bias.sizes());
    check_same(op, "bias", bias, image);
  }
  return StemFn::apply(image, out_layout.site_index, weight, bias);
}

at::Tensor densify(const at::Tensor& features, const SparseLayout& layout) {
  check_features("densify", features);
  CNX_CHECK(features.size(0) == layout.num_sites, "densify: features have ", features.size(0), " rows, layout ",
            layout.num_sites, " sites");
  CNX_CHECK(layout.site_index.device() == features.device(), "densify: layout is on ", layout.site_index.device(),
            ", features on ", features.device());
  return DensifyFn::apply(features, layout.site_index, layout.batch, layout.height, layout.width);
}

at::Tensor sparsify(const at::Tensor& dense, const SparseLayout& layout) {
  CNX_CHECK(dense.defined() && dense.dim() == 4 && dense.size(0) == layout.batch && dense.size(2) == layout.height &&
                dense.size(3) == layout.width,
            "sparsify: tensor ", dense.defined() ? dense.sizes() : at::IntArrayRef{}, " does not match a ",
            layout.batch, "x", layout.height, "x", layout.width, " layout");
  return dense.permute({0, 2, 3, 1}).reshape({-1, dense.size(1)}).index_select(0, layout.site_index);
}

}  // namespace cnx::sparse_ops
