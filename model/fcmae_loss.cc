// Fused CPU FCMAE loss (fcmae_loss.h).
#include "model/fcmae_loss.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <vector>

#include "common/check.h"
#include "sparse_ops/cpu/simd.h"

namespace cnx::model::detail {
namespace {

struct PatchGeometry {
  int64_t c, h, w;   // image channels and size
  int64_t p, wp, l;  // patch size, patches per row, patches per image
  int64_t d;         // values per patch, p*p*c
  int64_t pred_sl;   // prediction stride between patches (within an image)
  int64_t pred_sd;   // prediction stride between values of a patch
  int64_t pred_sn;   // prediction stride between images
};

// One patch (n, l): target gathered in patchify's order d = (py*p + px)*C + c,
// standardised when norm, then loss = sum_d (pred - t)^2 and grad[d] =
// (pred - t) * gscale. t: d values of scratch.
template <typename T>
CNX_INLINE double patch_loss_impl(const T* __restrict img, const T* __restrict pr, T* __restrict grad, T* __restrict t,
                                  const PatchGeometry& g, int64_t n, int64_t l, bool norm, double gscale) {
  const int64_t hi = l / g.wp, wi = l % g.wp;
  const T* base = img + n * g.c * g.h * g.w + hi * g.p * g.w + wi * g.p;
  for (int64_t ch = 0; ch < g.c; ++ch) {
    const T* plane = base + ch * g.h * g.w;
    for (int64_t py = 0; py < g.p; ++py) {
      const T* row = plane + py * g.w;
      T* dst = t + py * g.p * g.c + ch;
      for (int64_t px = 0; px < g.p; ++px) dst[px * g.c] = row[px];
    }
  }
  if (norm) {
    double sum = 0.0;
    for (int64_t k = 0; k < g.d; ++k) sum += static_cast<double>(t[k]);
    const double mean = sum / static_cast<double>(g.d);
    double ss = 0.0;
    for (int64_t k = 0; k < g.d; ++k) {
      const double v = static_cast<double>(t[k]) - mean;
      ss += v * v;
    }
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(g.d - 1) + 1e-6);
    for (int64_t k = 0; k < g.d; ++k) t[k] = static_cast<T>((static_cast<double>(t[k]) - mean) * inv);
  }
  const T* p0 = pr + n * g.pred_sn + l * g.pred_sl;
  double loss = 0.0;
  if (g.pred_sd == 1) {
    for (int64_t k = 0; k < g.d; ++k) {
      const T diff = p0[k] - t[k];
      loss += static_cast<double>(diff) * static_cast<double>(diff);
      grad[k] = static_cast<T>(static_cast<double>(diff) * gscale);
    }
  } else {
    for (int64_t k = 0; k < g.d; ++k) {
      const T diff = p0[k * g.pred_sd] - t[k];
      loss += static_cast<double>(diff) * static_cast<double>(diff);
      grad[k] = static_cast<T>(static_cast<double>(diff) * gscale);
    }
  }
  return loss;
}

CNX_SIMD_CLONES double patch_loss(const float* img, const float* pr, float* grad, float* t, const PatchGeometry& g,
                                  int64_t n, int64_t l, bool norm, double gscale) {
  return patch_loss_impl(img, pr, grad, t, g, n, l, norm, gscale);
}
CNX_SIMD_CLONES double patch_loss(const double* img, const double* pr, double* grad, double* t, const PatchGeometry& g,
                                  int64_t n, int64_t l, bool norm, double gscale) {
  return patch_loss_impl(img, pr, grad, t, g, n, l, norm, gscale);
}

// Loss and, saved for the backward, d loss / d pred (in pred's shape, rows
// (n, y, x) with the patch values contiguous).
class FusedMaskedLossFn : public torch::autograd::Function<FusedMaskedLossFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& pred,
                               const torch::Tensor& images, const torch::Tensor& m, int64_t p, bool norm) {
    const int64_t n = images.size(0), hp = pred.size(2), wp = pred.size(3);
    PatchGeometry g{images.size(1), images.size(2), images.size(3), p, wp, hp * wp, pred.size(1), 0, 0, 0};
    // NCHW or channels-last memory (fused_masked_loss_cpu makes sure of one).
    const bool nhwc = !pred.is_contiguous();
    g.pred_sn = g.d * g.l;
    g.pred_sd = nhwc ? 1 : g.l;
    g.pred_sl = nhwc ? g.d : 1;
    auto grad = at::empty({n, hp, wp, g.d}, pred.options());
    auto mc = m.contiguous();
    std::vector<double> per_patch(static_cast<size_t>(n * g.l), 0.0);
    double msum = 0.0;
    AT_DISPATCH_FLOATING_TYPES(pred.scalar_type(), "fcmae_loss", [&] {
      const scalar_t* mp = mc.data_ptr<scalar_t>();
      for (int64_t q = 0; q < n * g.l; ++q) msum += static_cast<double>(mp[q]);
      CNX_CHECK(msum > 0, "fcmae_loss: the mask weights sum to ", msum);
      const scalar_t* img = images.data_ptr<scalar_t>();
      const scalar_t* pr = pred.data_ptr<scalar_t>();
      scalar_t* gp = grad.data_ptr<scalar_t>();
      const double d = static_cast<double>(g.d);
      // One region over the patches; each patch's loss lands in its own slot.
      at::parallel_for(0, n * g.l, 1, [&](int64_t q0, int64_t q1) {
        std::vector<scalar_t> t(g.d);
        for (int64_t q = q0; q < q1; ++q) {
          scalar_t* gq = gp + q * g.d;
          const double w = static_cast<double>(mp[q]);
          if (w == 0.0) {
            std::fill(gq, gq + g.d, scalar_t(0));
            continue;
          }
          const double gscale = 2.0 * w / (d * msum);
          per_patch[q] = w * patch_loss(img, pr, gq, t.data(), g, q / g.l, q % g.l, norm, gscale) / d;
        }
      });
    });
    double total = 0.0;
    for (double v : per_patch) total += v;  // patch order
    ctx->save_for_backward({grad});
    return torch::scalar_tensor(total / msum, pred.options());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto grad = ctx->get_saved_variables()[0].permute({0, 3, 1, 2});
    const auto& go = grads[0];
    // The common case (loss.backward()) needs no extra pass.
    if (!(go.numel() == 1 && go.item<double>() == 1.0)) grad = grad * go;
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_masked_loss_cpu(const torch::Tensor& images, const torch::Tensor& pred, const torch::Tensor& m,
                                    int64_t patch_size, bool norm_pix_loss) {
  const bool nchw = pred.is_contiguous(), nhwc = pred.is_contiguous(at::MemoryFormat::ChannelsLast);
  return FusedMaskedLossFn::apply(nchw || nhwc ? pred : pred.contiguous(), images.contiguous(), m, patch_size,
                                  norm_pix_loss);
}

}  // namespace cnx::model::detail
