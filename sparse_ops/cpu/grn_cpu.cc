// CPU segment reductions and per-segment affine maps (used by the sparse GRN).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "sparse_ops/cpu/simd.h"
#include "sparse_ops/grn_kernels.h"

namespace cnx::sparse_ops::detail {
namespace {

constexpr int64_t kChannelBlock = 64;

// Column sums over rows [r0, r1) of channels [c0, c1) (at most kChannelBlock),
// accumulated in double: a segment holds up to thousands of rows, and a float
// running sum would lose ~log2(rows) bits to the rounding of each addition.
// The product of two floats is exact in double, so the only rounding left is
// the final conversion to T.
template <typename T>
CNX_INLINE void segment_dot_impl(const T* __restrict a, const T* __restrict b, T* __restrict out, int64_t r0,
                                 int64_t r1, int64_t c, int64_t c0, int64_t c1) {
  double acc[kChannelBlock];
  const int64_t w = c1 - c0;
  for (int64_t ch = 0; ch < w; ++ch) acc[ch] = 0.0;
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict ai = a + i * c + c0;
    if (b != nullptr) {
      const T* __restrict bi = b + i * c + c0;
      for (int64_t ch = 0; ch < w; ++ch) acc[ch] += static_cast<double>(ai[ch]) * static_cast<double>(bi[ch]);
    } else {
      for (int64_t ch = 0; ch < w; ++ch) acc[ch] += static_cast<double>(ai[ch]);
    }
  }
  for (int64_t ch = 0; ch < w; ++ch) out[c0 + ch] = static_cast<T>(acc[ch]);
}

template <typename T>
CNX_INLINE void segment_affine_impl(const T* __restrict x, const T* __restrict scale, const T* __restrict y,
                                    const T* __restrict coef, const T* __restrict bias, T* __restrict out, int64_t r0,
                                    int64_t r1, int64_t c) {
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict xi = x + i * c;
    T* __restrict oi = out + i * c;
    for (int64_t ch = 0; ch < c; ++ch) oi[ch] = xi[ch] * scale[ch];
    if (y != nullptr) {
      const T* __restrict yi = y + i * c;
      for (int64_t ch = 0; ch < c; ++ch) oi[ch] += yi[ch] * coef[ch];
    }
    if (bias != nullptr) {
      for (int64_t ch = 0; ch < c; ++ch) oi[ch] += bias[ch];
    }
  }
}

CNX_SIMD_CLONES void segment_dot_k(const float* a, const float* b, float* out, int64_t r0, int64_t r1, int64_t c,
                                   int64_t c0, int64_t c1) {
  segment_dot_impl(a, b, out, r0, r1, c, c0, c1);
}
CNX_SIMD_CLONES void segment_dot_k(const double* a, const double* b, double* out, int64_t r0, int64_t r1, int64_t c,
                                   int64_t c0, int64_t c1) {
  segment_dot_impl(a, b, out, r0, r1, c, c0, c1);
}
CNX_SIMD_CLONES void segment_affine_k(const float* x, const float* scale, const float* y, const float* coef,
                                      const float* bias, float* out, int64_t r0, int64_t r1, int64_t c) {
  segment_affine_impl(x, scale, y, coef, bias, out, r0, r1, c);
}
CNX_SIMD_CLONES void segment_affine_k(const double* x, const double* scale, const double* y, const double* coef,
                                      const double* bias, double* out, int64_t r0, int64_t r1, int64_t c) {
  segment_affine_impl(x, scale, y, coef, bias, out, r0, r1, c);
}

// Fused GRN of one sample, rows [r0, r1): the column sums of squares in
// double (acc, c doubles of scratch), the statistics in double, then the
// output rows out = x * (gamma * nx + 1) + beta, re-read from cache.
template <typename T>
CNX_INLINE void grn_forward_sample_impl(const T* __restrict x, const T* __restrict gamma, const T* __restrict beta,
                                        T* __restrict out, T* __restrict gx_o, T* __restrict denom_o,
                                        T* __restrict nx_o, double* __restrict acc, T* __restrict scale, int64_t r0,
                                        int64_t r1, int64_t c, double eps) {
  for (int64_t ch = 0; ch < c; ++ch) acc[ch] = 0.0;
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict xi = x + i * c;
    for (int64_t ch = 0; ch < c; ++ch) acc[ch] += static_cast<double>(xi[ch]) * static_cast<double>(xi[ch]);
  }
  double mean = 0.0;
  for (int64_t ch = 0; ch < c; ++ch) {
    acc[ch] = std::sqrt(acc[ch]);
    mean += acc[ch];
  }
  const double denom = mean / static_cast<double>(c) + eps;
  for (int64_t ch = 0; ch < c; ++ch) {
    const double nx = acc[ch] / denom;
    gx_o[ch] = static_cast<T>(acc[ch]);
    nx_o[ch] = static_cast<T>(nx);
    scale[ch] = static_cast<T>(static_cast<double>(gamma[ch]) * nx + 1.0);
  }
  *denom_o = static_cast<T>(denom);
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict xi = x + i * c;
    T* __restrict oi = out + i * c;
    for (int64_t ch = 0; ch < c; ++ch) oi[ch] = xi[ch] * scale[ch] + beta[ch];
  }
}

// Backward of one sample: sum g*x and sum g per column in double (acc: 2c
// doubles), then dL/dgx from the saved statistics, the per-sample parts of
// dgamma/dbeta (pg, pb: c doubles each) and, when dx != nullptr, the rows
// dx = g * (gamma * nx + 1) + x * coef (coef = dL/dgx / gx, 0 where gx == 0).
template <typename T>
CNX_INLINE void grn_backward_sample_impl(const T* __restrict g, const T* __restrict x, const T* __restrict gamma,
                                         const T* __restrict gx, T denom_t, const T* __restrict nx, T* __restrict dx,
                                         double* __restrict pg, double* __restrict pb, double* __restrict acc,
                                         T* __restrict scale, T* __restrict coef, int64_t r0, int64_t r1, int64_t c) {
  double* __restrict sgx = acc;
  double* __restrict sg = acc + c;
  for (int64_t ch = 0; ch < c; ++ch) sgx[ch] = sg[ch] = 0.0;
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict gi = g + i * c;
    const T* __restrict xi = x + i * c;
    for (int64_t ch = 0; ch < c; ++ch) {
      const double gv = static_cast<double>(gi[ch]);
      sgx[ch] += gv * static_cast<double>(xi[ch]);
      sg[ch] += gv;
    }
  }
  const double den = static_cast<double>(denom_t);
  double s = 0.0;
  for (int64_t ch = 0; ch < c; ++ch) {
    pg[ch] = sgx[ch] * static_cast<double>(nx[ch]);
    pb[ch] = sg[ch];
    sgx[ch] *= static_cast<double>(gamma[ch]);  // dL/dNx
    s += sgx[ch] * static_cast<double>(gx[ch]);
  }
  if (dx == nullptr) return;
  const double tail = s / (den * den * static_cast<double>(c));
  for (int64_t ch = 0; ch < c; ++ch) {
    const double gxv = static_cast<double>(gx[ch]);
    coef[ch] = gxv > 0 ? static_cast<T>((sgx[ch] / den - tail) / gxv) : T(0);
    scale[ch] = static_cast<T>(static_cast<double>(gamma[ch]) * static_cast<double>(nx[ch]) + 1.0);
  }
  for (int64_t i = r0; i < r1; ++i) {
    const T* __restrict gi = g + i * c;
    const T* __restrict xi = x + i * c;
    T* __restrict di = dx + i * c;
    for (int64_t ch = 0; ch < c; ++ch) di[ch] = gi[ch] * scale[ch] + xi[ch] * coef[ch];
  }
}

CNX_SIMD_CLONES void grn_forward_sample(const float* x, const float* gamma, const float* beta, float* out, float* gx_o,
                                        float* denom_o, float* nx_o, double* acc, float* scale, int64_t r0, int64_t r1,
                                        int64_t c, double eps) {
  grn_forward_sample_impl(x, gamma, beta, out, gx_o, denom_o, nx_o, acc, scale, r0, r1, c, eps);
}
CNX_SIMD_CLONES void grn_forward_sample(const double* x, const double* gamma, const double* beta, double* out,
                                        double* gx_o, double* denom_o, double* nx_o, double* acc, double* scale,
                                        int64_t r0, int64_t r1, int64_t c, double eps) {
  grn_forward_sample_impl(x, gamma, beta, out, gx_o, denom_o, nx_o, acc, scale, r0, r1, c, eps);
}
CNX_SIMD_CLONES void grn_backward_sample(const float* g, const float* x, const float* gamma, const float* gx,
                                         float denom, const float* nx, float* dx, double* pg, double* pb, double* acc,
                                         float* scale, float* coef, int64_t r0, int64_t r1, int64_t c) {
  grn_backward_sample_impl(g, x, gamma, gx, denom, nx, dx, pg, pb, acc, scale, coef, r0, r1, c);
}
CNX_SIMD_CLONES void grn_backward_sample(const double* g, const double* x, const double* gamma, const double* gx,
                                         double denom, const double* nx, double* dx, double* pg, double* pb,
                                         double* acc, double* scale, double* coef, int64_t r0, int64_t r1, int64_t c) {
  grn_backward_sample_impl(g, x, gamma, gx, denom, nx, dx, pg, pb, acc, scale, coef, r0, r1, c);
}

}  // namespace

at::Tensor segment_dot_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets) {
  const int64_t n = offsets.size(0) - 1, c = a.size(1);
  auto out = at::empty({n, c}, a.options());
  const int64_t blocks = (c + kChannelBlock - 1) / kChannelBlock;
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sparse_segment_dot", [&] {
    const scalar_t* ap = a.data_ptr<scalar_t>();
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, n * blocks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t s = t / blocks, c0 = (t % blocks) * kChannelBlock;
        segment_dot_k(ap, bp, op + s * c, off[s], off[s + 1], c, c0, std::min(c, c0 + kChannelBlock));
      }
    });
  });
  return out;
}

at::Tensor segment_affine_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y, const at::Tensor& coef,
                              const at::Tensor& bias, const at::Tensor& offsets) {
  const int64_t m = x.size(0), c = x.size(1), n = offsets.size(0) - 1;
  auto out = at::empty({m, c}, x.options());
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_segment_affine", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* sp = scale.data_ptr<scalar_t>();
    const scalar_t* yp = y.defined() ? y.data_ptr<scalar_t>() : nullptr;
    const scalar_t* cp = coef.defined() ? coef.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, 256, [&](int64_t b, int64_t e) {
      // First segment touching row b, then walk the segments of [b, e).
      int64_t s = std::upper_bound(off, off + n + 1, b) - off - 1;
      int64_t r = b;
      while (r < e) {
        while (off[s + 1] <= r) ++s;
        const int64_t r1 = std::min(e, off[s + 1]);
        segment_affine_k(xp, sp + s * c, yp, cp != nullptr ? cp + s * c : nullptr, bp, op, r, r1, c);
        r = r1;
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grn_forward_cpu(const at::Tensor& x,
                                                                           const at::Tensor& offsets,
                                                                           const at::Tensor& gamma,
                                                                           const at::Tensor& beta, double eps) {
  const int64_t m = x.size(0), c = x.size(1), n = offsets.size(0) - 1;
  auto out = at::empty({m, c}, x.options());
  auto gx = at::empty({n, c}, x.options());
  auto denom = at::empty({n, 1}, x.options());
  auto nx = at::empty({n, c}, x.options());
  auto gm = gamma.reshape({c}).contiguous();
  auto bt = beta.reshape({c}).contiguous();
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_grn_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = gm.data_ptr<scalar_t>();
    const scalar_t* bp = bt.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    scalar_t* dp = denom.data_ptr<scalar_t>();
    scalar_t* nxp = nx.data_ptr<scalar_t>();
    // One region over the samples; a sample's result depends on its rows only.
    at::parallel_for(0, n, 1, [&](int64_t s0, int64_t s1) {
      std::vector<double> acc(c);
      std::vector<scalar_t> scale(c);
      for (int64_t s = s0; s < s1; ++s) {
        grn_forward_sample(xp, gp, bp, op, gxp + s * c, dp + s, nxp + s * c, acc.data(), scale.data(), off[s],
                           off[s + 1], c, eps);
      }
    });
  });
  return {out, gx, denom, nx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grn_backward_cpu(const at::Tensor& g, const at::Tensor& x,
                                                                const at::Tensor& offsets, const at::Tensor& gamma,
                                                                const at::Tensor& gx, const at::Tensor& denom,
                                                                const at::Tensor& nx, bool need_dx) {
  const int64_t m = x.size(0), c = x.size(1), n = offsets.size(0) - 1;
  at::Tensor dx = need_dx ? at::empty({m, c}, x.options()) : at::Tensor();
  auto part = at::empty({2, n, c}, x.options().dtype(at::kDouble));  // per-sample dgamma, dbeta parts
  auto gm = gamma.reshape({c}).contiguous();
  const int64_t* off = offsets.data_ptr<int64_t>();
  at::Tensor dgamma, dbeta;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_grn_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gmp = gm.data_ptr<scalar_t>();
    const scalar_t* gxp = gx.data_ptr<scalar_t>();
    const scalar_t* dp = denom.data_ptr<scalar_t>();
    const scalar_t* nxp = nx.data_ptr<scalar_t>();
    scalar_t* dxp = need_dx ? dx.data_ptr<scalar_t>() : nullptr;
    double* pg = part.data_ptr<double>();
    double* pb = pg + n * c;
    at::parallel_for(0, n, 1, [&](int64_t s0, int64_t s1) {
      std::vector<double> acc(2 * c);
      std::vector<scalar_t> scale(c), coef(c);
      for (int64_t s = s0; s < s1; ++s) {
        grn_backward_sample(gp, xp, gmp, gxp + s * c, dp[s], nxp + s * c, dxp, pg + s * c, pb + s * c, acc.data(),
                            scale.data(), coef.data(), off[s], off[s + 1], c);
      }
    });
    // Sample parts summed in sample order (independent of the thread count).
    auto total = at::empty({2, c}, part.options());
    double* tp = total.data_ptr<double>();
    for (int64_t q = 0; q < 2; ++q) {
      const double* src = pg + q * n * c;
      double* dst = tp + q * c;
      for (int64_t ch = 0; ch < c; ++ch) dst[ch] = 0.0;
      for (int64_t s = 0; s < n; ++s) {
        for (int64_t ch = 0; ch < c; ++ch) dst[ch] += src[s * c + ch];
      }
    }
    total = total.to(x.scalar_type());
    dgamma = total[0];
    dbeta = total[1];
  });
  return {dx, dgamma, dbeta};
}

}  // namespace cnx::sparse_ops::detail
