// The project's AVX-512 GEMM kernels (model/cnx_gemm.h) against a float64
// oracle: forward (bias, GELU fused or stored beside the pre-activation),
// dgrad, wgrad and the bias gradient on odd sizes (tails of the 8-row tiles,
// of the 16-column vectors and of the reduction blocks), strided inputs,
// 1 and 2 threads (bitwise reproducible); the autograd function on the FCMAE
// step's shapes against the BLAS path.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/check.h"
#include "model/cnx_gemm.h"
#include "model/fcmae.h"
#include "model/onednn_matmul.h"
#include "model/precision.h"
#include "tests/model/gemm_test_util.h"
#include "tests/model/test_util.h"
#include "tests/sparse_ops/test_util.h"

namespace cnx::model {
namespace {

using sparse_ops::testing::rel_err;
using sparse_ops::testing::seeded_randn;
using testing::close_rel;
using testing::fcmae_step;
using testing::ScopedGemm;
using testing::StepResult;

// CMake's view of the build machine's CPU (/proc/cpuinfo lists avx512f): the
// kernel cases below run exactly where the kernels can, with no skips.
TEST(CnxGemm, SupportedExactlyOnAvx512Cpus) {
  EXPECT_EQ(cnx_gemm_supported(), CNX_TEST_CPU_AVX512 == 1);
  if (cnx_gemm_supported()) {
    EXPECT_EQ(parse_gemm_path("cnx", "--gemm"), GemmPath::kCnx);
    EXPECT_STREQ(gemm_path_name(GemmPath::kCnx), "cnx");
  } else {
    const auto x = at::ones({2, 3}), w = at::ones({4, 3});
    EXPECT_THROW(cnx_linear_forward(x, w, at::Tensor(), false), CheckError);
    try {
      parse_gemm_path("cnx", "--gemm");
      FAIL() << "no error";
    } catch (const CheckError& e) {
      EXPECT_NE(std::string(e.what()).find("--gemm"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("AVX-512"), std::string::npos) << e.what();
    }
  }
}

#if CNX_TEST_CPU_AVX512

class ScopedThreads {
 public:
  explicit ScopedThreads(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ScopedThreads() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

// Element-wise bound relative to the largest |oracle| value: float32
// rounding of a blocked sum (the float64 oracle is exact to ~1e-16).
constexpr double kTol = 2e-6;

// |actual - exact| <= tol x the largest entry of |a| |b| (the size of the
// summands: a sum that cancels out is still judged by what it added up).
::testing::AssertionResult close_gemm(const at::Tensor& actual, const at::Tensor& exact, const at::Tensor& a,
                                      const at::Tensor& b, double tol = kTol) {
  const double scale = a.abs().mm(b.abs()).max().item<double>();
  const double worst = (actual.to(at::kDouble) - exact).abs().max().item<double>();
  if (worst <= tol * scale + 1e-30) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max |diff| " << worst << " > " << tol << " x " << scale;
}

at::Tensor gelu64(const at::Tensor& z) {
  return z * 0.5 * (1.0 + at::erf(z * M_SQRT1_2));
}

// Sizes that hit every tail: 1..7 leftover rows of the 8-row tile, 1..15
// leftover columns of a 16-column vector, panels of 1, 2 and 3 vectors, and
// reductions of 1, several and more than one block (K > 320, M > 256).
TEST(CnxGemm, ForwardDgradWgradMatchFloat64OnOddSizes) {
  const std::vector<int64_t> ms = {1, 7, 17, 33, 300};
  const std::vector<int64_t> ks = {1, 7, 17, 40, 333, 700};
  const std::vector<int64_t> ns = {1, 7, 17, 33, 40, 64, 100, 160};
  int seed = 0;
  for (const int64_t m : ms) {
    for (const int64_t k : ks) {
      for (const int64_t n : ns) {
        ++seed;
        const std::string what = cnx::str(m, "x", k, "x", n);
        const auto x = seeded_randn({m, k}, 100 + seed, at::kDouble);
        const auto w = seeded_randn({n, k}, 200 + seed, at::kDouble) / std::sqrt(double(k));
        const auto b = seeded_randn({n}, 300 + seed, at::kDouble);
        const auto dy = seeded_randn({m, n}, 400 + seed, at::kDouble);
        const auto xf = x.to(at::kFloat), wf = w.to(at::kFloat), bf = b.to(at::kFloat), dyf = dy.to(at::kFloat);
        const auto z = at::linear(x, w, b);
        const auto x1 = at::cat({x, at::ones({m, 1}, x.options())}, 1), wb = at::cat({w, b.unsqueeze(1)}, 1);
        ASSERT_TRUE(close_gemm(cnx_linear_forward(xf, wf, bf, false), z, x1, wb.t())) << what << " forward";
        ASSERT_TRUE(close_gemm(cnx_linear_forward(xf, wf, at::Tensor(), false), at::linear(x, w), x, w.t()))
            << what << " forward, no bias";
        const auto fused = cnx_linear_forward(xf, wf, bf, true);
        // (the erf approximation adds up to 1.5e-7 |z|/2 absolute: kTol covers it)
        ASSERT_TRUE(close_gemm(fused, gelu64(z), x1, wb.t())) << what << " forward + GELU";
        at::Tensor pre;
        const auto dual = cnx_linear_forward(xf, wf, bf, true, &pre);
        ASSERT_TRUE(at::equal(dual, fused)) << what << " GELU with the pre-activation kept";
        ASSERT_TRUE(at::equal(pre, cnx_linear_forward(xf, wf, bf, false))) << what << " kept pre-activation";
        ASSERT_TRUE(close_gemm(cnx_linear_dgrad(dyf, wf), dy.mm(w), dy, w)) << what << " dgrad";
        at::Tensor db;
        ASSERT_TRUE(close_gemm(cnx_linear_wgrad(dyf, xf, &db), dy.t().mm(x), dy.t(), x)) << what << " wgrad";
        ASSERT_TRUE(close_gemm(db.unsqueeze(0), dy.sum(0, true), at::ones({1, m}, x.options()), dy))
            << what << " bias gradient";
      }
    }
  }
}

// The GELU against float64's erf, and against LibTorch's float32 GELU (the
// BLAS path's), which evaluates the same approximation of erf (Abramowitz-
// Stegun 7.1.26, absolute error <= 1.5e-7 in erf): no worse anywhere.
TEST(CnxGemm, GeluMatchesFloat64AsLibTorchsDoes) {
  // (plus tiny and huge values, where the kernel clamps |z| to keep its
  // intermediates out of the subnormal range)
  const auto extremes =
      at::tensor({1e-30, -1e-30, 1e-20, -3e-19, 1e-10, -1e-10, 20.0, -20.0, 100.0, -100.0, 0.0}, at::kDouble);
  const auto z = at::cat({at::linspace(-12, 12, 4801, at::kDouble), extremes}).reshape({-1, 1});
  // x (4801 x 1) times w = 1: the pre-activation is z itself.
  const auto y = cnx_linear_forward(z.to(at::kFloat), at::ones({1, 1}), at::Tensor(), true);
  const auto ref = gelu64(z);
  const auto err = (y.to(at::kDouble) - ref).abs();
  const auto torch_err = (at::gelu(z.to(at::kFloat)).to(at::kDouble) - ref).abs();
  const int64_t worst = err.argmax().item<int64_t>();
  std::printf("GELU max abs error: cnx %.3g (at z = %.3f), LibTorch float32 %.3g\n", err.max().item<double>(),
              z.flatten()[worst].item<double>(), torch_err.max().item<double>());
  EXPECT_LE(err.max().item<double>(), 1.5 * torch_err.max().item<double>() + 1e-8);
  // Element by element: erf's 1.5e-7 and float32's rounding of 1 - r t e (a few
  // ulps of 1; times |z|/2), and of the product.
  const auto bound = z.abs() * 0.5 * 6e-7 + ref.abs() * 2e-7;
  const int64_t w = (err / bound).argmax().item<int64_t>();
  EXPECT_TRUE(at::all(err <= bound).item<bool>())
      << "z " << z.flatten()[w].item<double>() << ": error " << err.flatten()[w].item<double>();
}

// Rows at a stride (a view into a wider tensor), outputs given in place.
TEST(CnxGemm, StridedRowsAndGivenOutputs) {
  const auto base = seeded_randn({50, 64}, 7, at::kFloat);
  const auto x = base.narrow(1, 3, 40);  // row stride 64
  const auto w = seeded_randn({36, 40}, 8, at::kFloat), b = seeded_randn({36}, 9, at::kFloat);
  auto out = at::full({50, 36}, 7.f);
  const auto y = cnx_linear_forward(x, w, b, false, nullptr, out);
  EXPECT_EQ(y.data_ptr(), out.data_ptr());
  EXPECT_TRUE(close_rel(y, at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble)), kTol));
  const auto dy = seeded_randn({50, 36}, 10, at::kFloat);
  EXPECT_TRUE(close_rel(cnx_linear_wgrad(dy, x), dy.to(at::kDouble).t().mm(x.to(at::kDouble)), kTol));
  EXPECT_TRUE(close_rel(cnx_linear_dgrad(dy, w), dy.to(at::kDouble).mm(w.to(at::kDouble)), kTol));
  // A transposed weight (not contiguous) is copied, not misread.
  const auto wt = seeded_randn({40, 36}, 11, at::kFloat).t();
  EXPECT_TRUE(
      close_rel(cnx_linear_forward(x, wt, at::Tensor(), false), x.to(at::kDouble).mm(wt.t().to(at::kDouble)), kTol));
  EXPECT_THROW(cnx_linear_forward(x, seeded_randn({36, 41}, 1, at::kFloat), at::Tensor(), false), CheckError);
  EXPECT_THROW(cnx_linear_forward(x.to(at::kDouble), w, at::Tensor(), false), CheckError);
}

// 1 and 2 threads: forward and dgrad bit for bit the same whatever the split;
// wgrad (per-thread partial sums) the same run to run at each count and
// within float32 rounding across counts.
TEST(CnxGemm, ThreadsAreDeterministic) {
  const auto x = seeded_randn({5000, 40}, 1, at::kFloat), w = seeded_randn({160, 40}, 2, at::kFloat);
  const auto b = seeded_randn({160}, 3, at::kFloat), dy = seeded_randn({5000, 160}, 4, at::kFloat);
  at::Tensor y1, dx1, dw1, db1;
  {
    ScopedThreads t(1);
    y1 = cnx_linear_forward(x, w, b, true);
    dx1 = cnx_linear_dgrad(dy, w);
    dw1 = cnx_linear_wgrad(dy, x, &db1);
  }
  ScopedThreads t(2);
  EXPECT_TRUE(at::equal(cnx_linear_forward(x, w, b, true), y1));
  EXPECT_TRUE(at::equal(cnx_linear_dgrad(dy, w), dx1));
  at::Tensor db2, db3;
  const auto dw2 = cnx_linear_wgrad(dy, x, &db2);
  const auto dw3 = cnx_linear_wgrad(dy, x, &db3);
  EXPECT_TRUE(at::equal(dw2, dw3));
  EXPECT_TRUE(at::equal(db2, db3));
  const auto ref = dy.to(at::kDouble).t().mm(x.to(at::kDouble));
  EXPECT_TRUE(close_rel(dw2, ref, kTol));
  EXPECT_TRUE(close_rel(dw1, ref, kTol));
  EXPECT_TRUE(close_rel(db2, dy.to(at::kDouble).sum(0), kTol));
}

struct LinearResult {
  at::Tensor y, dx, dw, db;
};

// y = cnx_linear / at::linear (+GELU), backward of sum(y * r).
LinearResult run_linear(bool cnx, const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& r,
                        bool gelu, at::ScalarType dtype) {
  auto leaf = [&](const at::Tensor& t) { return t.detach().to(dtype, false, /*copy=*/true).requires_grad_(true); };
  auto x = leaf(x0), w = leaf(w0), b = leaf(b0);
  at::Tensor y;
  if (cnx) {
    y = cnx_linear(x, w, b, gelu);
  } else {
    y = at::linear(x, w, b);
    if (gelu) y = at::gelu(y);
  }
  (y * r.to(dtype)).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.grad()};
}

// The autograd function on the FCMAE step's shapes (atto at 224, batch 32,
// mask 0.6: stages 0 and 1, the decoder block's 512 -> 2048): every output
// as close to float64 as the BLAS path's (both printed), both GELU
// backward modes.
TEST(CnxGemm, AutogradOnTheStepShapesMatchesFloat64AndBlas) {
  struct Shape {
    int64_t m, k, n;
  };
  const std::vector<Shape> shapes = {{38912, 40, 160}, {38912, 160, 40},  {9728, 80, 320},
                                     {9728, 320, 80},  {1568, 512, 2048}, {1568, 2048, 512}};
  int seed = 0;
  for (const auto& s : shapes) {
    ++seed;
    const bool gelu = s.n > s.k;
    const auto x = seeded_randn({s.m, s.k}, 100 + seed, at::kDouble);
    const auto w = seeded_randn({s.n, s.k}, 200 + seed, at::kDouble) * (1.0 / std::sqrt(double(s.k)));
    const auto b = seeded_randn({s.n}, 300 + seed, at::kDouble) * 0.1;
    const auto r = seeded_randn({s.m, s.n}, 400 + seed, at::kDouble);
    const auto oracle = run_linear(false, x, w, b, r, gelu, at::kDouble);
    const auto blas = run_linear(false, x, w, b, r, gelu, at::kFloat);
    for (const auto mode : {GeluBackward::kKeep, GeluBackward::kRecompute}) {
      const auto saved = gelu_backward_mode();
      set_gelu_backward_mode(mode);
      const int64_t calls = cnx_gemm_calls();
      const auto c = run_linear(true, x, w, b, r, gelu, at::kFloat);
      set_gelu_backward_mode(saved);
      EXPECT_EQ(cnx_gemm_calls() - calls, gelu && mode == GeluBackward::kRecompute ? 4 : 3);
      const std::string what =
          cnx::str(s.m, "x", s.k, "x", s.n, gelu ? " +gelu" : "", mode == GeluBackward::kKeep ? " keep" : " recompute");
      // Norm-wise: no worse than 1.25x BLAS's error (or 1e-7 absolute).
      const std::vector<std::pair<const char*, std::pair<at::Tensor, at::Tensor>>> outs = {
          {"y", {c.y, blas.y}}, {"dx", {c.dx, blas.dx}}, {"dw", {c.dw, blas.dw}}, {"db", {c.db, blas.db}}};
      const std::vector<at::Tensor> refs = {oracle.y, oracle.dx, oracle.dw, oracle.db};
      std::string line = what + " rel. error vs float64 (cnx | blas):";
      for (size_t i = 0; i < outs.size(); ++i) {
        const double ec = rel_err(outs[i].second.first, refs[i]), eb = rel_err(outs[i].second.second, refs[i]);
        EXPECT_LE(ec, std::max(1.25 * eb, 1e-7)) << what << " " << outs[i].first;
        line += cnx::str(" ", outs[i].first, " ", ec, " | ", eb);
      }
      std::printf("%s\n", line.c_str());
    }
  }
}

// pointwise_linear on the cnx path: leading dims, a strided x, no bias,
// inference (fused GELU, one GEMM); float64 and bf16 autocast stay on
// LibTorch's GEMM (bit for bit the BLAS path's, no cnx call).
TEST(CnxGemm, PointwiseLinearTakesTheCnxPathForFloat32Only) {
  const auto base = seeded_randn({24, 2, 50}, 7, at::kFloat);
  const auto x = base.permute({1, 2, 0});  // (2, 50, 24), non-contiguous
  const auto w = seeded_randn({36, 24}, 8, at::kFloat), b = seeded_randn({36}, 9, at::kFloat);
  ScopedGemm g(GemmPath::kCnx);
  EXPECT_EQ(effective_gemm_path(), GemmPath::kCnx);
  EXPECT_NE(describe_gemm_path().find("GEMM path cnx"), std::string::npos) << describe_gemm_path();
  int64_t calls = cnx_gemm_calls();
  at::Tensor y;
  {
    at::NoGradGuard no_grad;
    y = pointwise_linear(x, w, at::Tensor(), true);
  }
  EXPECT_EQ(cnx_gemm_calls() - calls, 1);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 50, 36}));
  EXPECT_TRUE(close_rel(y, gelu64(at::linear(x.to(at::kDouble), w.to(at::kDouble))), kTol));
  // Only the weight needs a gradient: no dgrad.
  auto wg = w.clone().requires_grad_(true);
  calls = cnx_gemm_calls();
  pointwise_linear(x, wg, at::Tensor(), false).sum().backward();
  EXPECT_EQ(cnx_gemm_calls() - calls, 2);
  EXPECT_TRUE(
      close_rel(wg.grad(), at::ones({100, 36}, at::kDouble).t().mm(x.reshape({100, 24}).to(at::kDouble)), kTol));
  calls = cnx_gemm_calls();
  testing::expect_float64_and_bf16_on_blas(GemmPath::kCnx, x, w, b);
  EXPECT_EQ(cnx_gemm_calls(), calls);
}

// The whole FCMAE step (atto, 64 px, sparse encoder and decoder) on the cnx
// path against the BLAS path: loss and every parameter gradient.
TEST(CnxGemm, FcmaeStepMatchesTheBlasPath) {
  auto [model, images, mask] = testing::make_step_case();
  StepResult blas, cnx;
  {
    ScopedGemm g(GemmPath::kBlas);
    blas = fcmae_step(model, images, mask);
  }
  const int64_t calls = cnx_gemm_calls();
  {
    ScopedGemm g(GemmPath::kCnx);
    cnx = fcmae_step(model, images, mask);
  }
  // 13 blocks (12 encoder + 1 decoder) x 2 Linears x 3 GEMMs, + proj, pred.
  EXPECT_GE(cnx_gemm_calls() - calls, 78);
  EXPECT_LE(rel_err(cnx.loss, blas.loss), 1e-6);
  ASSERT_EQ(cnx.grads.size(), blas.grads.size());
  for (size_t i = 0; i < cnx.grads.size(); ++i) {
    EXPECT_TRUE(close_rel(cnx.grads[i].second, blas.grads[i].second, 2e-5)) << "grad of " << cnx.grads[i].first;
  }
}

#endif  // CNX_TEST_CPU_AVX512

}  // namespace
}  // namespace cnx::model
