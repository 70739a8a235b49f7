// CPU segment reductions and per-segment affine maps (used by the sparse GRN).
#include <ATen/Parallel.h>

#include <algorithm>

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

}  // namespace cnx::sparse_ops::detail
