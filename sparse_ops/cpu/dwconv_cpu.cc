// CPU kernels of the submanifold depthwise convolution (sparse_ops/dwconv.h).
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "sparse_ops/cpu/simd.h"
#include "sparse_ops/dwconv_kernels.h"

namespace cnx::sparse_ops::detail {
namespace {

// Channel blocks as GCC vector types (64 and 32 bytes), moved from and to the
// tensors with memcpy (unaligned loads/stores). Each clone of CNX_SIMD_CLONES
// lowers them to its widest registers, so the accumulators of a block stay in
// registers over all k*k taps instead of going through memory once per tap.
// The helpers are always inlined into the CNX_SIMD_CLONES functions, so the
// vector-argument ABI GCC warns about never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float FloatFull __attribute__((vector_size(64)));
typedef float FloatHalf __attribute__((vector_size(32)));
typedef double DoubleFull __attribute__((vector_size(64)));
typedef double DoubleHalf __attribute__((vector_size(32)));
template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  using Full = FloatFull;
  using Half = FloatHalf;
};
template <>
struct Lanes<double> {
  using Full = DoubleFull;
  using Half = DoubleHalf;
};

template <typename V, typename T>
CNX_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V, typename T>
CNX_INLINE void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof v);
}

// R rows' channels [c0, c0 + NV * lanes(V)) of the forward: per row the
// bias, then the taps in order t = 0..k-1 (the contract's summation order).
// The R rows' accumulators are independent chains, so the FMA latency of one
// row's k-long sum overlaps the others' (one row alone is latency-bound).
template <typename T, typename V, int NV, int R>
CNX_INLINE void dwconv_row_block(const T* __restrict in, const int32_t* __restrict nb, const T* __restrict w,
                                 const T* __restrict bias, T* __restrict o, int64_t c, int64_t k, int64_t c0) {
  constexpr int64_t kLanes = sizeof(V) / sizeof(T);
  V acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = bias != nullptr ? load<V>(bias + c0 + v * kLanes) : V{};
  }
  for (int64_t t = 0; t < k; ++t) {
    const T* wt = w + t * c + c0;
    V wv[NV];
    for (int v = 0; v < NV; ++v) wv[v] = load<V>(wt + v * kLanes);
    for (int r = 0; r < R; ++r) {
      const int32_t j = nb[r * k + t];
      if (j < 0) continue;
      const T* x = in + static_cast<int64_t>(j) * c + c0;
      for (int v = 0; v < NV; ++v) acc[r][v] += wv[v] * load<V>(x + v * kLanes);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) store(o + r * c + c0 + v * kLanes, acc[r][v]);
  }
}

// Rows [i, i + R) of the forward, all channels.
template <typename T, int R>
CNX_INLINE void dwconv_rows_r(const T* __restrict in, const int32_t* __restrict map, const T* __restrict w,
                              const T* __restrict bias, T* __restrict out, int64_t i, int64_t c, int64_t k) {
  using Full = typename Lanes<T>::Full;
  using Half = typename Lanes<T>::Half;
  constexpr int64_t kFull = sizeof(Full) / sizeof(T), kHalf = sizeof(Half) / sizeof(T);
  T* __restrict o = out + i * c;
  const int32_t* nb = map + i * k;
  int64_t c0 = 0;
  for (; c0 + 2 * kFull <= c; c0 += 2 * kFull) dwconv_row_block<T, Full, 2, R>(in, nb, w, bias, o, c, k, c0);
  if (c0 + kFull <= c) {
    dwconv_row_block<T, Full, 1, R>(in, nb, w, bias, o, c, k, c0);
    c0 += kFull;
  }
  if (c0 + kHalf <= c) {
    dwconv_row_block<T, Half, 1, R>(in, nb, w, bias, o, c, k, c0);
    c0 += kHalf;
  }
  for (int r = 0; r < R; ++r) {
    for (int64_t ch = c0; ch < c; ++ch) {
      T acc = bias != nullptr ? bias[ch] : T(0);
      for (int64_t t = 0; t < k; ++t) {
        const int32_t j = nb[r * k + t];
        if (j >= 0) acc += w[t * c + ch] * in[static_cast<int64_t>(j) * c + ch];
      }
      o[r * c + ch] = acc;
    }
  }
}

template <typename T>
CNX_INLINE void dwconv_rows_impl(const T* __restrict in, const int32_t* __restrict map, const T* __restrict w,
                                 const T* __restrict bias, T* __restrict out, int64_t begin, int64_t end, int64_t c,
                                 int64_t k) {
  constexpr int kRows = 4;
  int64_t i = begin;
  for (; i + kRows <= end; i += kRows) dwconv_rows_r<T, kRows>(in, map, w, bias, out, i, c, k);
  for (; i < end; ++i) dwconv_rows_r<T, 1>(in, map, w, bias, out, i, c, k);
}

// Rows summed in T (in registers) before their block sum is added to the
// double partial: the float error is that of kWgradBlock terms plus a double
// sum, at no extra memory traffic.
constexpr int64_t kWgradBlock = 32;

// Weight and bias gradient of rows [b0, b1) (at most kWgradBlock) for channels
// [c0, c0 + NV * lanes(V)), added to partial [k + 1, c] (row k: bias).
template <typename T, typename V, int NV>
CNX_INLINE void dwconv_wgrad_block(const T* __restrict g, const T* __restrict in, const int32_t* __restrict map,
                                   double* __restrict partial, int64_t b0, int64_t b1, int64_t c, int64_t k,
                                   int64_t c0) {
  constexpr int64_t kLanes = sizeof(V) / sizeof(T);
  auto flush = [&](const V* acc, int64_t row) {
    for (int v = 0; v < NV; ++v) {
      for (int64_t l = 0; l < kLanes; ++l) partial[row * c + c0 + v * kLanes + l] += static_cast<double>(acc[v][l]);
    }
  };
  // kTaps taps at a time: independent accumulator chains (one tap's sum over
  // the rows is latency-bound), each tap's rows still summed in row order.
  constexpr int kTaps = 4;
  int64_t t = 0;
  for (; t + kTaps <= k; t += kTaps) {
    V acc[kTaps][NV];
    for (int q = 0; q < kTaps; ++q) {
      for (int v = 0; v < NV; ++v) acc[q][v] = V{};
    }
    for (int64_t i = b0; i < b1; ++i) {
      const T* gi = g + i * c + c0;
      V gv[NV];
      for (int v = 0; v < NV; ++v) gv[v] = load<V>(gi + v * kLanes);
      for (int q = 0; q < kTaps; ++q) {
        const int32_t j = map[i * k + t + q];
        if (j < 0) continue;
        const T* x = in + static_cast<int64_t>(j) * c + c0;
        for (int v = 0; v < NV; ++v) acc[q][v] += gv[v] * load<V>(x + v * kLanes);
      }
    }
    for (int q = 0; q < kTaps; ++q) flush(acc[q], t + q);
  }
  for (; t < k; ++t) {
    V acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = V{};
    for (int64_t i = b0; i < b1; ++i) {
      const int32_t j = map[i * k + t];
      if (j < 0) continue;
      const T* gi = g + i * c + c0;
      const T* x = in + static_cast<int64_t>(j) * c + c0;
      for (int v = 0; v < NV; ++v) {
        acc[v] += load<V>(gi + v * kLanes) * load<V>(x + v * kLanes);
      }
    }
    flush(acc, t);
  }
  V acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = V{};
  for (int64_t i = b0; i < b1; ++i) {
    for (int v = 0; v < NV; ++v) acc[v] += load<V>(g + i * c + c0 + v * kLanes);
  }
  flush(acc, k);
}

// partial: [k + 1, c] doubles, row k is the bias gradient.
template <typename T>
CNX_INLINE void dwconv_wgrad_impl(const T* __restrict g, const T* __restrict in, const int32_t* __restrict map,
                                  double* __restrict partial, int64_t begin, int64_t end, int64_t c, int64_t k) {
  using Full = typename Lanes<T>::Full;
  using Half = typename Lanes<T>::Half;
  constexpr int64_t kFull = sizeof(Full) / sizeof(T), kHalf = sizeof(Half) / sizeof(T);
  for (int64_t b0 = begin; b0 < end; b0 += kWgradBlock) {
    const int64_t b1 = std::min(end, b0 + kWgradBlock);
    int64_t c0 = 0;
    for (; c0 + 2 * kFull <= c; c0 += 2 * kFull) dwconv_wgrad_block<T, Full, 2>(g, in, map, partial, b0, b1, c, k, c0);
    if (c0 + kFull <= c) {
      dwconv_wgrad_block<T, Full, 1>(g, in, map, partial, b0, b1, c, k, c0);
      c0 += kFull;
    }
    if (c0 + kHalf <= c) {
      dwconv_wgrad_block<T, Half, 1>(g, in, map, partial, b0, b1, c, k, c0);
      c0 += kHalf;
    }
    for (int64_t ch = c0; ch < c; ++ch) {
      for (int64_t t = 0; t < k; ++t) {
        T acc = T(0);
        for (int64_t i = b0; i < b1; ++i) {
          const int32_t j = map[i * k + t];
          if (j >= 0) acc += g[i * c + ch] * in[static_cast<int64_t>(j) * c + ch];
        }
        partial[t * c + ch] += static_cast<double>(acc);
      }
      T acc = T(0);
      for (int64_t i = b0; i < b1; ++i) acc += g[i * c + ch];
      partial[k * c + ch] += static_cast<double>(acc);
    }
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
CNX_SIMD_CLONES void dwconv_wgrad(const float* g, const float* in, const int32_t* map, double* partial, int64_t b,
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
  // Partials and their sum in double whatever the dtype (see kWgradBlock).
  auto partial = at::zeros({std::max<int64_t>(chunks, 1), k + 1, c}, in.options().dtype(at::kDouble));
  auto total = at::empty({k + 1, c}, in.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_weight_grad", [&] {
    const scalar_t* gp = grad_out.data_ptr<scalar_t>();
    const scalar_t* ip = in.data_ptr<scalar_t>();
    const int32_t* mp = map.data_ptr<int32_t>();
    double* pp = partial.data_ptr<double>();
    at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t q = b; q < e; ++q) {
        dwconv_wgrad(gp, ip, mp, pp + q * (k + 1) * c, q * chunk, std::min(m, (q + 1) * chunk), c, k);
      }
    });
    // Fixed-order sum of the partials.
    double* tp = total.data_ptr<double>();
    const int64_t width = (k + 1) * c;
    at::parallel_for(0, width, 512, [&](int64_t b, int64_t e) {
      for (int64_t x = b; x < e; ++x) tp[x] = pp[x];
      for (int64_t q = 1; q < chunks; ++q) {
        const double* src = pp + q * width;
        for (int64_t x = b; x < e; ++x) tp[x] += src[x];
      }
    });
  });
  total = total.to(in.scalar_type());
  return {total.narrow(0, 0, k), total.select(0, k)};
}

}  // namespace cnx::sparse_ops::detail
