// CPU kernels of the submanifold depthwise convolution (sparse_ops/dwconv.h).
#include <ATen/Parallel.h>

#include <algorithm>

#include "common/check.h"
#include "sparse_ops/cpu/simd.h"
#include "sparse_ops/dwconv_kernels.h"

namespace cnx::sparse_ops::detail {
namespace {

template <typename T>
CNX_INLINE void dwconv_rows_impl(const T* __restrict in, const int32_t* __restrict map, const T* __restrict w,
                                 const T* __restrict bias, T* __restrict out, int64_t begin, int64_t end, int64_t c,
                                 int64_t k) {
  for (int64_t i = begin; i < end; ++i) {
    T* __restrict o = out + i * c;
    if (bias != nullptr) {
      for (int64_t ch = 0; ch < c; ++ch) o[ch] = bias[ch];
    } else {
      for (int64_t ch = 0; ch < c; ++ch) o[ch] = T(0);
    }
    const int32_t* nb = map + i * k;
    for (int64_t t = 0; t < k; ++t) {
      const int32_t j = nb[t];
      if (j < 0) continue;
      const T* __restrict x = in + static_cast<int64_t>(j) * c;
      const T* __restrict wt = w + t * c;
      for (int64_t ch = 0; ch < c; ++ch) o[ch] += wt[ch] * x[ch];
    }
  }
}

// partial: [k + 1, c], row k is the bias gradient.
template <typename T>
CNX_INLINE void dwconv_wgrad_impl(const T* __restrict g, const T* __restrict in, const int32_t* __restrict map,
                                  T* __restrict partial, int64_t begin, int64_t end, int64_t c, int64_t k) {
  for (int64_t i = begin; i < end; ++i) {
    const T* __restrict gi = g + i * c;
    const int32_t* nb = map + i * k;
    for (int64_t t = 0; t < k; ++t) {
      const int32_t j = nb[t];
      if (j < 0) continue;
      const T* __restrict x = in + static_cast<int64_t>(j) * c;
      T* __restrict p = partial + t * c;
      for (int64_t ch = 0; ch < c; ++ch) p[ch] += gi[ch] * x[ch];
    }
    T* __restrict pb = partial + k * c;
    for (int64_t ch = 0; ch < c; ++ch) pb[ch] += gi[ch];
  }
}

CNX_SIMD_CLONES void dwconv_rows(const float* in, const int32_t* map, const float* w, const float* bias, float* out,
                                 int64_t b, int64_t e, int64_t c, int64_t k) {
  dwconv_rows_impl(in, map, w, bias, out, b, e, c, k);
}
CNX_SIMD_CLONES void dwconv_rows(const double* in, const int32_t* map, const double* w, const double* bias, double* out,
                                 int64_t b, int64_t e, int64_t c, int64_t k) {
  dwconv_rows_impl(in, map, w, bias, out, b, e, c, k);
}
CNX_SIMD_CLONES void dwconv_wgrad(const float* g, const float* in, const int32_t* map, float* partial, int64_t b,
                                  int64_t e, int64_t c, int64_t k) {
  dwconv_wgrad_impl(g, in, map, partial, b, e, c, k);
}
CNX_SIMD_CLONES void dwconv_wgrad(const double* g, const double* in, const int32_t* map, double* partial, int64_t b,
                                  int64_t e, int64_t c, int64_t k) {
  dwconv_wgrad_impl(g, in, map, partial, b, e, c, k);
}

// Rows per weight-gradient partial. Depends on M only (not on the thread
// count), so the summation order and hence the result is reproducible.
int64_t wgrad_chunk(int64_t m) {
  return std::max<int64_t>(256, (m + 63) / 64);
}

}  // namespace

at::Tensor dwconv_forward_cpu(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                              const at::Tensor& bias) {
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  auto out = at::empty({m, c}, in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_forward", [&] {
    const scalar_t* bp = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    const scalar_t* ip = in.data_ptr<scalar_t>();
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const int32_t* mp = map.data_ptr<int32_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, 64, [&](int64_t b, int64_t e) { dwconv_rows(ip, mp, wp, bp, op, b, e, c, k); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cpu(const at::Tensor& grad_out, const at::Tensor& in,
                                                          const at::Tensor& map) {
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  const int64_t chunk = wgrad_chunk(m);
  const int64_t chunks = (m + chunk - 1) / chunk;
  auto partial = at::zeros({std::max<int64_t>(chunks, 1), k + 1, c}, in.options());
  auto total = at::empty({k + 1, c}, in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_weight_grad", [&] {
    const scalar_t* gp = grad_out.data_ptr<scalar_t>();
    const scalar_t* ip = in.data_ptr<scalar_t>();
    const int32_t* mp = map.data_ptr<int32_t>();
    scalar_t* pp = partial.data_ptr<scalar_t>();
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        dwconv_wgrad(gp, ip, mp, pp + q * (k + 1) * c, q * chunk, std::min(m, (q + 1) * chunk), c, k);
      }
    });
    // Fixed-order sum of the partials.
    scalar_t* tp = total.data_ptr<scalar_t>();
    const int64_t width = (k + 1) * c;
    at::parallel_for(0, width, 512, [&](int64_t b, int64_t e) {
      for (int64_t x = b; x < e; ++x) tp[x] = pp[x];
      for (int64_t q = 1; q < chunks; ++q) {
        const scalar_t* src = pp + q * width;
        for (int64_t x = b; x < e; ++x) tp[x] += src[x];
      }
    });
  });
  return {total.narrow(0, 0, k), total.select(0, k)};
}

}  // namespace cnx::sparse_ops::detail
