// The oneDNN GEMM path of the pointwise Linears (model/onednn_matmul.h)
// against the BLAS path and a float64 oracle: forward (bias, GELU fused) and
// every gradient (input, weight, bias) on the FCMAE step's own shapes, both
// GELU backward modes; the whole FCMAE step on both paths; bfloat16 autocast
// staying on the BLAS path; the switch's parsing.
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

// The library has the oneDNN path exactly when CMake said so
// (CNX_ONEDNN_GEMM_BUILT); the cases below that need it are compiled only
// there. Without it, SwitchNamesAndErrors checks that 'onednn' is refused
// and auto runs BLAS.
TEST(OnednnMatmul, TheLibraryHasThePathCMakeChose) {
  EXPECT_EQ(has_onednn_gemm(), CNX_TEST_ONEDNN_BUILT == 1);
}

#if CNX_TEST_ONEDNN_BUILT

struct LinearResult {
  at::Tensor y, dx, dw, db;
};

// y = pointwise_linear(x, w, b, gelu), backward of sum(y * r), in x's dtype.
LinearResult run_linear(const at::Tensor& x0, const at::Tensor& w0, const at::Tensor& b0, const at::Tensor& r,
                        bool gelu, at::ScalarType dtype) {
  auto leaf = [&](const at::Tensor& t) { return t.detach().to(dtype, false, /*copy=*/true).requires_grad_(true); };
  auto x = leaf(x0), w = leaf(w0);
  auto b = b0.defined() ? leaf(b0) : at::Tensor();
  auto y = pointwise_linear(x, w, b, gelu);
  (y * r.to(dtype)).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.defined() ? b.grad() : at::Tensor()};
}

struct Shape {
  int64_t m, k, n;
};

// The step's MLP shapes: atto at 224, batch 32, mask 0.6 (19 of 49 patches
// visible): stages 0 and 1 (fc1 K = C, N = 4C; fc2 the other way round), and
// the decoder block (1568 rows, 512 -> 2048); then odd edge shapes.
const std::vector<Shape> kShapes = {{38912, 40, 160},  {38912, 160, 40},  {9728, 80, 320}, {9728, 320, 80},
                                    {1568, 512, 2048}, {1568, 2048, 512}, {1, 40, 160},    {7, 3, 5}};

// Relative (max-norm) bound on the oneDNN path's error: float32 rounding over
// K (forward, dgrad) or M (wgrad, up to 38912) summands. Measured worst: see
// the printed lines (~1e-6); BLAS's own error is of the same size.
constexpr double kTol = 1e-5;

TEST(OnednnMatmul, LinearAndGradientsMatchFloat64AndBlasOnTheStepShapes) {
  int seed = 0;
  for (const auto& s : kShapes) {
    for (const bool gelu : {true, false}) {
      ++seed;
      const auto x = seeded_randn({s.m, s.k}, 100 + seed, at::kDouble);
      const auto w = seeded_randn({s.n, s.k}, 200 + seed, at::kDouble) * (1.0 / std::sqrt(double(s.k)));
      const auto b = seeded_randn({s.n}, 300 + seed, at::kDouble) * 0.1;
      const auto r = seeded_randn({s.m, s.n}, 400 + seed, at::kDouble);
      LinearResult oracle, blas;
      {
        ScopedGemm g(GemmPath::kBlas);
        oracle = run_linear(x, w, b, r, gelu, at::kDouble);
        blas = run_linear(x, w, b, r, gelu, at::kFloat);
      }
      for (const auto mode : {GeluBackward::kKeep, GeluBackward::kRecompute}) {
        ScopedGemm g(GemmPath::kOnednn, mode);
        const int64_t calls = onednn_matmul_calls();
        const auto one = run_linear(x, w, b, r, gelu, at::kFloat);
        // forward, dgrad, wgrad (+ the recomputed pre-activation)
        EXPECT_EQ(onednn_matmul_calls() - calls, gelu && mode == GeluBackward::kRecompute ? 4 : 3);
        const std::string what = cnx::str(s.m, "x", s.k, "x", s.n, gelu ? " +gelu" : "",
                                          mode == GeluBackward::kKeep ? " keep" : " recompute");
        EXPECT_TRUE(close_rel(one.y, oracle.y, kTol)) << what << " y";
        EXPECT_TRUE(close_rel(one.dx, oracle.dx, kTol)) << what << " dx";
        EXPECT_TRUE(close_rel(one.dw, oracle.dw, kTol)) << what << " dw";
        EXPECT_TRUE(close_rel(one.db, oracle.db, kTol)) << what << " db";
        EXPECT_TRUE(close_rel(one.y, blas.y, kTol)) << what << " y vs blas";
        EXPECT_TRUE(close_rel(one.dw, blas.dw, kTol)) << what << " dw vs blas";
        std::printf(
            "%-28s rel. error vs float64 (norm): onednn y %.2g dx %.2g dw %.2g db %.2g | blas y %.2g dx %.2g "
            "dw %.2g db %.2g\n",
            what.c_str(), rel_err(one.y, oracle.y), rel_err(one.dx, oracle.dx), rel_err(one.dw, oracle.dw),
            rel_err(one.db, oracle.db), rel_err(blas.y, oracle.y), rel_err(blas.dx, oracle.dx),
            rel_err(blas.dw, oracle.dw), rel_err(blas.db, oracle.db));
      }
    }
  }
}

TEST(OnednnMatmul, NoBiasStridedInputsLeadingDimsAndNoGrad) {
  ScopedGemm g(GemmPath::kOnednn);
  // x as a transposed view (column-major rows), 3-D leading dims, no bias.
  const auto base = seeded_randn({24, 2, 50}, 7, at::kFloat);
  const auto x = base.permute({1, 2, 0});  // (2, 50, 24), non-contiguous
  const auto w = seeded_randn({36, 24}, 8, at::kFloat);
  const auto expected = at::gelu(at::linear(x.to(at::kDouble), w.to(at::kDouble)));
  const int64_t calls = onednn_matmul_calls();
  at::Tensor y;
  {
    at::NoGradGuard no_grad;  // inference: the fused GELU post-op
    y = pointwise_linear(x, w, at::Tensor(), true);
  }
  EXPECT_EQ(onednn_matmul_calls() - calls, 1);
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{2, 50, 36}));
  EXPECT_TRUE(close_rel(y, expected, kTol));
  // Only the weight needs a gradient: no dgrad is run.
  auto wg = w.clone().requires_grad_(true);
  const int64_t before = onednn_matmul_calls();
  pointwise_linear(x, wg, at::Tensor(), false).sum().backward();
  EXPECT_EQ(onednn_matmul_calls() - before, 2);
  const auto ones = at::ones({100, 36}, at::kDouble);
  EXPECT_TRUE(close_rel(wg.grad(), ones.t().mm(x.reshape({100, 24}).to(at::kDouble)), kTol));
  // The raw primitive on transposed operands.
  const auto a = seeded_randn({30, 20}, 9, at::kFloat), bm = seeded_randn({45, 30}, 10, at::kFloat);
  EXPECT_TRUE(close_rel(onednn_matmul(a.t(), bm.t(), at::Tensor(), false),
                        a.t().to(at::kDouble).mm(bm.t().to(at::kDouble)), kTol));
}

// The other dtypes and autocast stay on LibTorch's GEMM: bit for bit the
// BLAS path's result, and no oneDNN call.
TEST(OnednnMatmul, Float64AndBf16AutocastTakeTheBlasPath) {
  const auto x = seeded_randn({64, 40}, 11, at::kFloat), w = seeded_randn({160, 40}, 12, at::kFloat);
  const auto b = seeded_randn({160}, 13, at::kFloat);
  const int64_t calls = onednn_matmul_calls();
  testing::expect_float64_and_bf16_on_blas(GemmPath::kOnednn, x, w, b);
  EXPECT_EQ(onednn_matmul_calls(), calls);
}

// The whole FCMAE step (atto, 64 px, sparse encoder and decoder): the
// oneDNN path against the BLAS path, loss and every parameter gradient,
// in float32 and under bfloat16 autocast (which must not call oneDNN).
TEST(OnednnMatmul, FcmaeStepMatchesTheBlasPath) {
  auto [model, images, mask] = testing::make_step_case();
  for (const auto precision : {Precision::kFp32, Precision::kBf16}) {
    StepResult blas, one;
    {
      ScopedGemm g(GemmPath::kBlas);
      blas = fcmae_step(model, images, mask, precision);
    }
    const int64_t calls = onednn_matmul_calls();
    {
      ScopedGemm g(GemmPath::kOnednn);
      one = fcmae_step(model, images, mask, precision);
    }
    const int64_t ran = onednn_matmul_calls() - calls;
    if (precision == Precision::kBf16) {
      EXPECT_EQ(ran, 0) << "bf16 autocast must stay on the BLAS path";
      EXPECT_TRUE(at::equal(one.loss, blas.loss));
    } else {
      // 13 blocks (12 encoder + 1 decoder) x 2 Linears x 3 GEMMs, + proj, pred.
      EXPECT_GE(ran, 78);
      EXPECT_LE(rel_err(one.loss, blas.loss), 1e-6);
    }
    const double tol = precision == Precision::kBf16 ? 0.0 : 2e-5;
    ASSERT_EQ(one.grads.size(), blas.grads.size());
    for (size_t i = 0; i < one.grads.size(); ++i) {
      const auto& [name, g] = one.grads[i];
      EXPECT_TRUE(close_rel(g, blas.grads[i].second, tol)) << precision_name(precision) << " grad of " << name;
    }
  }
}

#endif  // CNX_TEST_ONEDNN_BUILT

TEST(OnednnMatmul, SwitchNamesAndErrors) {
  EXPECT_EQ(parse_gemm_path("auto", "--gemm"), GemmPath::kAuto);
  EXPECT_EQ(parse_gemm_path("blas", "--gemm"), GemmPath::kBlas);
  EXPECT_THROW(parse_gemm_path("mkl", "--gemm"), CheckError);
  try {
    parse_gemm_path("cublas", "CNX_GEMM");
    FAIL() << "no error";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("CNX_GEMM"), std::string::npos) << e.what();
  }
  if (has_onednn_gemm()) {
    EXPECT_EQ(parse_gemm_path("onednn", "--gemm"), GemmPath::kOnednn);
    EXPECT_FALSE(onednn_version().empty());
  } else {
    EXPECT_THROW(parse_gemm_path("onednn", "--gemm"), CheckError);
  }
  {
    // auto: oneDNN at 1 intra-op thread (else cnx, else BLAS); the cnx
    // kernels at more threads on AVX-512 CPUs (else BLAS).
    ScopedGemm g(GemmPath::kAuto);
    const int threads = at::get_num_threads();
    at::set_num_threads(1);
    const GemmPath one = has_onednn_gemm()      ? GemmPath::kOnednn
                         : cnx_gemm_supported() ? GemmPath::kCnx
                                                : GemmPath::kBlas;
    EXPECT_EQ(effective_gemm_path(), one);
    EXPECT_NE(describe_gemm_path().find(gemm_path_name(effective_gemm_path())), std::string::npos);
    at::set_num_threads(2);
    const GemmPath two = cnx_gemm_supported() ? GemmPath::kCnx : GemmPath::kBlas;
    EXPECT_EQ(effective_gemm_path(), two);
    EXPECT_NE(describe_gemm_path().find(cnx::str("GEMM path ", gemm_path_name(two))), std::string::npos)
        << describe_gemm_path();
    at::set_num_threads(threads);
  }
  ScopedGemm g(GemmPath::kBlas);
  EXPECT_EQ(effective_gemm_path(), GemmPath::kBlas);
  EXPECT_NE(describe_gemm_path().find("GEMM path blas"), std::string::npos) << describe_gemm_path();
}

}  // namespace
}  // namespace cnx::model
