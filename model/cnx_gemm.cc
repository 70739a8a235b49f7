#include "model/cnx_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <immintrin.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "common/check.h"
#include "common/cpu_features.h"
#include "model/onednn_matmul.h"

// Everything between here and "end of the AVX-512 code" is compiled for
// AVX-512 and runs only after cnx_gemm_supported() said yes. It includes no
// header and calls nothing but its own inline helpers, so no inline function
// of a header gets an AVX-512 body that other code could link to.
// GCC 12's AVX-512 intrinsics (rcp14, max, roundscale, scalef) start from
// _mm512_undefined_ps(), which -Wmaybe-uninitialized flags in every caller.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define CNX_AVX512 __attribute__((target("avx512f,avx512vl,fma")))
#define CNX_AVX512_INLINE CNX_AVX512 inline __attribute__((always_inline))

namespace cnx::model {
namespace {

// ---------------------------------------------------------------------------
// The exact GELU, x/2 (1 + erf(x/sqrt 2)), in LibTorch's vectorised form (its
// Vectorized<float>::erf: Abramowitz-Stegun 7.1.26 with exp(-x^2), max error
// 1.5e-7), evaluated in the same order.

CNX_AVX512_INLINE __m512 exp_ps(__m512 x) {  // Cephes expf; x <= 0 here
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(y, n);  // y 2^n, 0 below the float range
}

CNX_AVX512_INLINE __m512 erf_ps(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x80000000));
  // |x| clamped to [1e-18, 6]: erf is +-1 in float beyond 6, and neither
  // x^2 nor exp(-x^2) r t may become subnormal (each subnormal operand costs
  // a microcode assist of ~100 cycles: the step's tiny pre-activations made
  // the GELU 4x slower). Below 1e-18 the result is x/2 either way.
  const __m512 ax = _mm512_min_ps(_mm512_max_ps(_mm512_abs_ps(x), _mm512_set1_ps(1e-18f)), _mm512_set1_ps(6.f));
  // t = 1 / (1 + p |x|): reciprocal estimate + one Newton step (~1 ulp).
  const __m512 d = _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, one);
  const __m512 t0 = _mm512_rcp14_ps(d);
  const __m512 t = _mm512_mul_ps(t0, _mm512_fnmadd_ps(d, t0, _mm512_set1_ps(2.f)));
  __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
  r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
  const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(ax, ax)));
  // 1 - r t e(-x^2), with the sign of x
  const __m512 v = _mm512_fnmadd_ps(_mm512_mul_ps(e, t), r, one);
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign));
}

CNX_AVX512_INLINE __m512 gelu_ps(__m512 x) {
  const __m512 half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
  const __m512 erf = erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752440f)));
  return _mm512_mul_ps(half_x, _mm512_add_ps(_mm512_set1_ps(1.f), erf));
}

// ---------------------------------------------------------------------------
// The microkernel: acc (MR x 16 NV) = sum over p < kc of a(i, p) b(p, j).
//   rows mode (kAT false): a(i, p) = a[i lda + p] (rows of activations), b the
//     packed panel (ldb = 16 NV, zero-padded: full loads).
//   wgrad mode (kAT true): a(i, p) = a[p lda + i] (dy^T), b(p, j) = b[p ldb + j]
//     (rows of x; the last vector masked by bmask).

template <int MR, int NV, bool kAT>
CNX_AVX512_INLINE void micro(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b, int64_t ldb,
                             __mmask16 bmask, __m512 (&acc)[MR][NV]) {
  _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    __m512 bv[NV];
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      bv[v] = kAT && v == NV - 1 ? _mm512_maskz_loadu_ps(bmask, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(kAT ? a[i] : a[i * lda]);
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
    b += ldb;
    a += kAT ? lda : 1;
  }
}

// What the epilogue does with a finished tile.
struct Epilogue {
  const float* bias = nullptr;  // added (first block only)
  bool accumulate = false;      // C += tile (later blocks) instead of C = tile
  int gelu = 0;                 // last block: 0 none, 1 C = GELU(z), 2 C = z and G = GELU(z)
};

template <int MR, int NV>
CNX_AVX512_INLINE void store_tile(__m512 (&acc)[MR][NV], float* c, float* g, int64_t ldc, __mmask16 cmask,
                                  const Epilogue& ep) {
  __m512 bias[NV] = {};
  if (ep.bias != nullptr) {
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) bias[v] =
        _mm512_maskz_loadu_ps(v == NV - 1 ? cmask : 0xFFFF, ep.bias + 16 * v);
  }
  _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? cmask : 0xFFFF;
      float* cp = c + i * ldc + 16 * v;
      __m512 z = acc[i][v];
      if (ep.accumulate) z = _mm512_add_ps(_mm512_maskz_loadu_ps(m, cp), z);
      if (ep.bias != nullptr) z = _mm512_add_ps(z, bias[v]);
      if (ep.gelu == 1) {
        _mm512_mask_storeu_ps(cp, m, gelu_ps(z));
      } else {
        _mm512_mask_storeu_ps(cp, m, z);
        if (ep.gelu == 2) _mm512_mask_storeu_ps(g + i * ldc + 16 * v, m, gelu_ps(z));
      }
    }
  }
}

template <int MR, int NV, bool kAT>
CNX_AVX512 void tile(int64_t kc, const float* a, int64_t lda, const float* b, int64_t ldb, __mmask16 mask, float* c,
                     float* g, int64_t ldc, const Epilogue& ep) {
  __m512 acc[MR][NV];
  micro<MR, NV, kAT>(kc, a, lda, b, ldb, mask, acc);
  store_tile<MR, NV>(acc, c, g, ldc, mask, ep);
}

using TileFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, __mmask16, float*, float*, int64_t,
                        const Epilogue&);

template <int NV, bool kAT>
constexpr TileFn tile_for_rows(int rows) {
  switch (rows) {
    case 1:
      return tile<1, NV, kAT>;
    case 2:
      return tile<2, NV, kAT>;
    case 3:
      return tile<3, NV, kAT>;
    case 4:
      return tile<4, NV, kAT>;
    case 5:
      return tile<5, NV, kAT>;
    case 6:
      return tile<6, NV, kAT>;
    case 7:
      return tile<7, NV, kAT>;
    default:
      return tile<8, NV, kAT>;
  }
}

constexpr int kMr = 8;  // rows of a tile

template <bool kAT>
TileFn tile_fn(int rows, int nv) {
  if (nv == 1) return tile_for_rows<1, kAT>(rows);
  if (nv == 2) return tile_for_rows<2, kAT>(rows);
  return tile_for_rows<3, kAT>(rows);
}

// ---------------------------------------------------------------------------
// The drivers (plain C++ on raw pointers; compiled for AVX-512 too, as they
// inline the tile calls' setup).

// A column panel of the output: first column, width in vectors (1..3).
struct Panel {
  int64_t j0;
  int nv;
};

// 16-column vectors split into panels of 3 (48 columns), ending in 2 + 2 or
// 2 rather than in a lone 1, which runs at half the FMA rate.
std::vector<Panel> panels(int64_t n) {
  std::vector<Panel> out;
  int64_t vecs = (n + 15) / 16, j0 = 0;
  while (vecs > 0) {
    const int nv = vecs == 4 ? 2 : static_cast<int>(std::min<int64_t>(vecs, 3));
    out.push_back({j0, nv});
    j0 += 16 * nv;
    vecs -= nv;
  }
  return out;
}

__mmask16 tail_mask(const Panel& p, int64_t n) {
  const int64_t last = std::min<int64_t>(16, n - p.j0 - 16 * (p.nv - 1));
  return static_cast<__mmask16>((1u << last) - 1u);
}

// Nearly equal blocks of at most `most` covering [0, k).
std::vector<std::pair<int64_t, int64_t>> blocks(int64_t k, int64_t most) {
  const int64_t count = std::max<int64_t>(1, (k + most - 1) / most);
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t k0 = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t len = k / count + (i < k % count ? 1 : 0);
    out.emplace_back(k0, len);
    k0 += len;
  }
  return out;
}

// B (K x N) with element strides (rs, cs) packed panel by panel: panel p
// holds K rows of 16 nv floats at j0 K, zero beyond column N.
std::vector<float> pack_b(const float* b, int64_t rs, int64_t cs, int64_t k, int64_t n, const std::vector<Panel>& ps) {
  const int64_t width = 16 * ((n + 15) / 16);
  std::vector<float> out(static_cast<size_t>(k * width), 0.f);
  for (const Panel& p : ps) {
    const int64_t w = 16 * p.nv, cols = std::min(w, n - p.j0);
    float* dst = out.data() + p.j0 * k;
    if (cs == 1) {
      for (int64_t t = 0; t < k; ++t) std::copy(b + t * rs + p.j0, b + t * rs + p.j0 + cols, dst + t * w);
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        const float* src = b + (p.j0 + j) * cs;
        for (int64_t t = 0; t < k; ++t) dst[t * w + j] = src[t * rs];
      }
    }
  }
  return out;
}

// Rows of C of one output block: M-blocks of kMc rows; within each, panel by
// panel, K-block by K-block, 8-row tiles (the C block stays in L1/L2 over the
// K-blocks; the packed B block over the tiles).
constexpr int64_t kMc = 96;

struct RowsGemm {
  int64_t m, n, k;
  const float* a;
  int64_t lda;
  const float* bp;  // packed B
  float* c;
  int64_t ldc;
  const float* bias;
  int gelu;  // as Epilogue::gelu
  float* g;  // gelu == 2: the GELU output (strides of C)
};

CNX_AVX512 void rows_range(const RowsGemm& G, const std::vector<Panel>& ps,
                           const std::vector<std::pair<int64_t, int64_t>>& kbs, int64_t r0, int64_t r1) {
  for (int64_t mb = r0; mb < r1; mb += kMc) {
    const int64_t me = std::min(r1, mb + kMc);
    for (const Panel& p : ps) {
      const __mmask16 mask = tail_mask(p, G.n);
      const int64_t w = 16 * p.nv;
      const float* bpanel = G.bp + p.j0 * G.k;
      for (size_t kb = 0; kb < kbs.size(); ++kb) {
        const auto [k0, kc] = kbs[kb];
        Epilogue ep;
        ep.bias = kb == 0 && G.bias != nullptr ? G.bias + p.j0 : nullptr;
        ep.accumulate = kb > 0;
        ep.gelu = kb + 1 == kbs.size() ? G.gelu : 0;
        const TileFn full = tile_fn<false>(kMr, p.nv);
        for (int64_t i = mb; i < me; i += kMr) {
          const int rows = static_cast<int>(std::min<int64_t>(kMr, me - i));
          const TileFn f = rows == kMr ? full : tile_fn<false>(rows, p.nv);
          f(kc, G.a + i * G.lda + k0, G.lda, bpanel + k0 * w, w, mask, G.c + i * G.ldc + p.j0,
            G.g == nullptr ? nullptr : G.g + i * G.ldc + p.j0, G.ldc, ep);
        }
      }
    }
  }
}

CNX_AVX512 void add_into(float* dst, const float* src, int64_t count) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(dst + i), _mm512_loadu_ps(src + i)));
  }
  for (; i < count; ++i) dst[i] += src[i];
}

// s (n) = the column sums of rows (rows x n, row stride ld): 8 interleaved
// partial sums per column, added pairwise (chains of rows / 8).
CNX_AVX512 void column_sums(const float* x, int64_t ld, int64_t rows, int64_t n, float* s) {
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, n - j)) - 1u);
    __m512 acc[8];
    for (auto& a : acc) a = _mm512_setzero_ps();
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) {
      for (int u = 0; u < 8; ++u) acc[u] = _mm512_add_ps(acc[u], _mm512_maskz_loadu_ps(m, x + (r + u) * ld + j));
    }
    for (int u = 0; r < rows; ++r, ++u) acc[u] = _mm512_add_ps(acc[u], _mm512_maskz_loadu_ps(m, x + r * ld + j));
    for (int w = 4; w >= 1; w /= 2) {
      for (int u = 0; u < w; ++u) acc[u] = _mm512_add_ps(acc[u], acc[u + w]);
    }
    _mm512_mask_storeu_ps(s + j, m, acc[0]);
  }
}

// One part of wgrad: dw (N x K, ldo = K) = dy^T x over the rows [r0, r1) of
// dy (M x N) and x (M x K), in chunks of kCnxWgradChunk; the first chunk
// stores, later ones add. db (when not null) gets the column sums of dy
// (db_of_x: of x), summed pairwise over chunks.
CNX_AVX512 void wgrad_range(const float* dy, int64_t ldy, const float* x, int64_t ldx, int64_t n, int64_t k, int64_t r0,
                            int64_t r1, float* dw, float* db, bool db_of_x) {
  const auto ps = panels(k);
  // db: chunk sums added pairwise (levels of a binary counter).
  const float* src = db_of_x ? x : dy;
  const int64_t ld = db_of_x ? ldx : ldy, cols = db_of_x ? k : n;
  std::vector<float> sum(db != nullptr ? cols : 0), levels;
  std::vector<bool> used;
  // The chunk's operands packed (rows of activations at a power-of-two
  // stride would share a few L1 sets): dy^T as 8-column tiles [tile][row][8],
  // the panel of x as [row][16 nv], both zero-padded.
  const int64_t tiles = (n + kMr - 1) / kMr;
  std::vector<float> apack(static_cast<size_t>(tiles * kMr * kCnxWgradChunk)), bpack(48 * kCnxWgradChunk);
  for (int64_t c0 = r0; c0 < r1; c0 += kCnxWgradChunk) {
    const int64_t kc = std::min(kCnxWgradChunk, r1 - c0);
    Epilogue ep;
    ep.accumulate = c0 > r0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t i0 = t * kMr, cols = std::min<int64_t>(kMr, n - i0);
      float* dst = apack.data() + t * kMr * kc;
      for (int64_t r = 0; r < kc; ++r) {
        const float* src_row = dy + (c0 + r) * ldy + i0;
        for (int64_t u = 0; u < kMr; ++u) dst[r * kMr + u] = u < cols ? src_row[u] : 0.f;
      }
    }
    // Panel by panel (packed, it stays in L1), 8-row tiles of dw.
    for (const Panel& p : ps) {
      const int64_t w = 16 * p.nv, cols = std::min(w, k - p.j0);
      for (int64_t r = 0; r < kc; ++r) {
        const float* src_row = x + (c0 + r) * ldx + p.j0;
        std::copy(src_row, src_row + cols, bpack.data() + r * w);
        std::fill(bpack.data() + r * w + cols, bpack.data() + (r + 1) * w, 0.f);
      }
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t i = t * kMr;
        const int rows = static_cast<int>(std::min<int64_t>(kMr, n - i));
        tile_fn<true>(rows, p.nv)(kc, apack.data() + t * kMr * kc, kMr, bpack.data(), w, tail_mask(p, k),
                                  dw + i * k + p.j0, nullptr, k, ep);
      }
    }
    if (db != nullptr) {
      column_sums(src + c0 * ld, ld, kc, cols, sum.data());
      // Binary counter over chunks: level l holds the sum of 2^l chunks.
      size_t l = 0;
      for (; l < used.size() && used[l]; ++l) {
        add_into(sum.data(), levels.data() + l * cols, cols);
        used[l] = false;
      }
      if (l == used.size()) {
        used.push_back(false);
        levels.resize(used.size() * cols);
      }
      std::copy(sum.begin(), sum.end(), levels.begin() + l * cols);
      used[l] = true;
    }
  }
  if (db != nullptr) {
    bool first = true;
    for (size_t l = 0; l < used.size(); ++l) {
      if (!used[l]) continue;
      if (first) {
        std::copy(levels.begin() + l * cols, levels.begin() + (l + 1) * cols, db);
      } else {
        add_into(db, levels.data() + l * cols, cols);
      }
      first = false;
    }
  }
}

// end of the AVX-512 code
// ---------------------------------------------------------------------------

std::atomic<int64_t> g_calls{0};

// Runs body(0, n) on this thread at 1 intra-op thread (no parallel region at
// all), else one at::parallel_for over [0, n).
template <typename F>
void run_parallel(int64_t n, const F& body) {
  if (n <= 0) return;
  if (at::get_num_threads() <= 1 || n == 1 || at::in_parallel_region()) {
    body(0, n);
  } else {
    at::parallel_for(0, n, 1, body);
  }
}

void check_supported(const char* what) {
  CNX_CHECK(cnx_gemm_supported(), what, ": the cnx GEMM kernels need a CPU with AVX-512F (this one: ",
            cnx::cpu::describe_simd(cnx::cpu::detect_cpu()), ")");
}

void check_operand(const at::Tensor& t, const char* what, const char* name) {
  CNX_CHECK(t.defined() && t.dim() == 2 && t.device().is_cpu() && t.scalar_type() == at::kFloat, what, ": ", name,
            " must be a 2-D float32 CPU tensor");
}

// t itself when its columns are unit-stride (rows at any stride >= cols), else a copy.
at::Tensor rows_layout(const at::Tensor& t) {
  return t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(t.size(1), 1) ? t : t.contiguous();
}

at::Tensor output(at::Tensor out, int64_t rows, int64_t cols, const at::Tensor& like) {
  if (out.defined() && out.is_contiguous() && out.dim() == 2 && out.size(0) == rows && out.size(1) == cols &&
      out.scalar_type() == at::kFloat) {
    return out;
  }
  return at::empty({rows, cols}, like.options());
}

// C (M x N) = A (M x K) B (K x N) + bias [GELU], A rows at stride lda; B with
// element strides (brs, bcs). `pre` (gelu dual store) gets z when not null.
void rows_gemm(const at::Tensor& a, const float* b, int64_t brs, int64_t bcs, int64_t n, const float* bias, bool gelu,
               at::Tensor& c, at::Tensor* pre) {
  const int64_t m = a.size(0), k = a.size(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    at::Tensor& z = pre != nullptr ? *pre : c;
    if (bias != nullptr) {
      z.copy_(at::from_blob(const_cast<float*>(bias), {1, n}, a.options()).expand({m, n}));
    } else {
      z.zero_();
    }
    if (gelu) c.copy_(at::gelu(z));
    return;
  }
  const auto ps = panels(n);
  const std::vector<float> bp = pack_b(b, brs, bcs, k, n, ps);
  RowsGemm G{m, n, k, a.data_ptr<float>(), a.stride(0), bp.data(), c.data_ptr<float>(), n, bias, 0, nullptr};
  if (gelu && pre != nullptr) {
    // z into `pre`, GELU(z) into c.
    G.c = pre->data_ptr<float>();
    G.gelu = 2;
    G.g = c.data_ptr<float>();
  } else if (gelu) {
    G.gelu = 1;
  }
  const auto kbs = blocks(k, kCnxKBlock);
  const int64_t mblocks = (m + kMc - 1) / kMc;
  run_parallel(mblocks, [&](int64_t b0, int64_t b1) { rows_range(G, ps, kbs, b0 * kMc, std::min(m, b1 * kMc)); });
  g_calls.fetch_add(1, std::memory_order_relaxed);
}

// y = x w^T + b [GELU] on 2-D x, as the autograd function's forward.
class CnxLinearFn : public torch::autograd::Function<CnxLinearFn> {
 public:
  // `b_or_empty`: the bias, or an empty placeholder when has_bias is false.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b_or_empty, bool has_bias, bool gelu) {
    const at::Tensor b = has_bias ? b_or_empty : at::Tensor();
    const bool recompute = gelu && gelu_backward_mode() == GeluBackward::kRecompute;
    ctx->saved_data["gelu"] = gelu;
    ctx->saved_data["recompute"] = recompute;
    ctx->saved_data["has_bias"] = has_bias;
    if (!gelu || recompute) {
      auto y = cnx_linear_forward(x, w, b, gelu);
      ctx->save_for_backward({x, w, b_or_empty});
      return y;
    }
    at::Tensor z;
    auto y = cnx_linear_forward(x, w, b, true, &z);
    ctx->save_for_backward({x, w, z});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    at::Tensor g = grads[0].contiguous();
    if (ctx->saved_data["gelu"].toBool()) {
      const bool recompute = ctx->saved_data["recompute"].toBool();
      const at::Tensor b = ctx->saved_data["has_bias"].toBool() ? saved[2] : at::Tensor();
      const at::Tensor z = recompute ? cnx_linear_forward(x, w, b, false) : saved[2];
      g = at::gelu_backward(g, z);
    }
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0)) dx = cnx_linear_dgrad(g, w);
    if (ctx->needs_input_grad(1)) {
      dw = cnx_linear_wgrad(g, x, ctx->needs_input_grad(2) ? &db : nullptr);
    } else if (ctx->needs_input_grad(2)) {
      db = g.sum(0);
    }
    return {dx, dw, db, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool cnx_gemm_supported() {
  static const bool ok = [] {
    const auto cpu = cnx::cpu::detect_cpu();
    return cpu.avx512f && cpu.os_avx512 && cpu.fma;
  }();
  return ok;
}

at::Tensor cnx_linear_forward(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in, bool gelu,
                              at::Tensor* pre, at::Tensor out) {
  check_supported("cnx_linear_forward");
  check_operand(x_in, "cnx_linear_forward", "x");
  check_operand(w_in, "cnx_linear_forward", "w");
  CNX_CHECK(x_in.size(1) == w_in.size(1), "cnx_linear_forward: x (", x_in.sizes(), ") and w (", w_in.sizes(),
            ") disagree on K");
  const int64_t m = x_in.size(0), n = w_in.size(0);
  CNX_CHECK(!b_in.defined() || (b_in.dim() == 1 && b_in.size(0) == n && b_in.scalar_type() == at::kFloat),
            "cnx_linear_forward: bias must be float32 (", n, ")");
  const at::Tensor x = rows_layout(x_in), w = w_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  RECORD_FUNCTION("cnx::gemm_forward", std::vector<c10::IValue>({x, w}));
  at::Tensor y = output(std::move(out), m, n, x);
  if (gelu && pre != nullptr) *pre = output(*pre, m, n, x);
  // B(p, j) = w[j][p]: row stride 1, column stride K.
  rows_gemm(x, w.data_ptr<float>(), 1, w.size(1), n, b.defined() ? b.data_ptr<float>() : nullptr, gelu, y,
            gelu ? pre : nullptr);
  return y;
}

at::Tensor cnx_linear_dgrad(const at::Tensor& dy_in, const at::Tensor& w_in, at::Tensor out) {
  check_supported("cnx_linear_dgrad");
  check_operand(dy_in, "cnx_linear_dgrad", "dy");
  check_operand(w_in, "cnx_linear_dgrad", "w");
  CNX_CHECK(dy_in.size(1) == w_in.size(0), "cnx_linear_dgrad: dy (", dy_in.sizes(), ") and w (", w_in.sizes(),
            ") disagree on N");
  const at::Tensor dy = rows_layout(dy_in), w = w_in.contiguous();
  RECORD_FUNCTION("cnx::gemm_dgrad", std::vector<c10::IValue>({dy, w}));
  const int64_t k = w.size(1);
  at::Tensor dx = output(std::move(out), dy.size(0), k, dy);
  rows_gemm(dy, w.data_ptr<float>(), k, 1, k, nullptr, false, dx, nullptr);
  return dx;
}

at::Tensor cnx_linear_wgrad(const at::Tensor& dy_in, const at::Tensor& x_in, at::Tensor* db, at::Tensor out) {
  check_supported("cnx_linear_wgrad");
  check_operand(dy_in, "cnx_linear_wgrad", "dy");
  check_operand(x_in, "cnx_linear_wgrad", "x");
  CNX_CHECK(dy_in.size(0) == x_in.size(0), "cnx_linear_wgrad: dy (", dy_in.sizes(), ") and x (", x_in.sizes(),
            ") disagree on M");
  const at::Tensor dy = rows_layout(dy_in), x = rows_layout(x_in);
  RECORD_FUNCTION("cnx::gemm_wgrad", std::vector<c10::IValue>({dy, x}));
  const int64_t m = dy.size(0), n = dy.size(1), k = x.size(1);
  at::Tensor dw = output(std::move(out), n, k, x);
  if (db != nullptr) *db = at::empty({n}, x.options());
  if (m == 0 || n == 0 || k == 0) {
    dw.zero_();
    if (db != nullptr) db->zero_();
    return dw;
  }
  // dw or its transpose x^T dy, whichever pads fewer lanes to whole vectors
  // (dw 160 x 40 wastes 8 of every 48; dw^T 40 x 160 none), transposed at
  // the end.
  const bool transposed = (k + 15) / 16 * 16 * n > (n + 15) / 16 * 16 * k;
  const int64_t rows = transposed ? k : n, cols = transposed ? n : k;
  at::Tensor target = transposed ? at::empty({k, n}, x.options()) : dw;
  // Parts: one contiguous range of chunks per thread (at most), each with its
  // own partial dw/db (part 0 writes the outputs), summed in part order.
  const int64_t chunks = (m + kCnxWgradChunk - 1) / kCnxWgradChunk;
  const int64_t parts = std::min<int64_t>(std::max(at::get_num_threads(), 1), chunks);
  std::vector<std::vector<float>> partial(static_cast<size_t>(parts - 1));
  std::vector<std::vector<float>> partial_db(static_cast<size_t>(parts - 1));
  for (int64_t p = 1; p < parts; ++p) {
    partial[p - 1].resize(static_cast<size_t>(n * k));
    if (db != nullptr) partial_db[p - 1].resize(static_cast<size_t>(n));
  }
  const float* dyp = dy.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  auto body = [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t r0 = std::min(m, p * chunks / parts * kCnxWgradChunk);
      const int64_t r1 = std::min(m, (p + 1) * chunks / parts * kCnxWgradChunk);
      float* out = p == 0 ? target.data_ptr<float>() : partial[p - 1].data();
      float* dbp = db == nullptr ? nullptr : (p == 0 ? db->data_ptr<float>() : partial_db[p - 1].data());
      if (transposed) {
        wgrad_range(xp, x.stride(0), dyp, dy.stride(0), rows, cols, r0, r1, out, dbp, /*db_of_x=*/true);
      } else {
        wgrad_range(dyp, dy.stride(0), xp, x.stride(0), rows, cols, r0, r1, out, dbp, /*db_of_x=*/false);
      }
    }
  };
  run_parallel(parts, body);
  for (int64_t p = 1; p < parts; ++p) {
    add_into(target.data_ptr<float>(), partial[p - 1].data(), n * k);
    if (db != nullptr) add_into(db->data_ptr<float>(), partial_db[p - 1].data(), n);
  }
  if (transposed) dw.copy_(target.t());
  g_calls.fetch_add(1, std::memory_order_relaxed);
  return dw;
}

at::Tensor cnx_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool gelu) {
  check_supported("cnx_linear");
  const bool grad =
      at::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  if (!grad) return cnx_linear_forward(x, w, b, gelu);
  return CnxLinearFn::apply(x, w, b.defined() ? b : x.new_empty({0}), b.defined(), gelu);
}

int64_t cnx_gemm_calls() {
  return g_calls.load();
}

}  // namespace cnx::model
