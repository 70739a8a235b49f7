// The dense model through each kernel set of dense_kernels.h: our kernels on
// an all-visible layout (and LibTorch channels-last) == ConvNeXtV2::forward
// (NCHW) in logits, features and every parameter gradient; drop path per
// sample in the sparse path; the size fallback and the kernel names.
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <map>
#include <string>

#include "common/check.h"
#include "model/dense_kernels.h"
#include "model/sparse_drop_path.h"
#include "tests/sparse_ops/test_util.h"

namespace cnx::model {
namespace {

using sparse_ops::testing::seeded_randn;

ConvNeXtV2Options small_options(double drop_path = 0.0, int64_t classes = 7) {
  ConvNeXtV2Options o;
  o.depths = {2, 1, 2, 1};
  o.dims = {8, 16, 24, 32};
  o.num_classes = classes;
  o.drop_path_rate = drop_path;
  return o;
}

// Every parameter perturbed (LayerNorm affine, GRN gamma/beta are 1/0 or 0 at
// init), so that each op's gradient path is exercised.
void randomise(ConvNeXtV2Impl& net, uint64_t seed) {
  torch::NoGradGuard g;
  for (auto& p : net.named_parameters()) {
    const double scale = p.key().find("weight") != std::string::npos && p.value().dim() > 1 ? 0.2 : 0.5;
    p.value().add_(seeded_randn(p.value().sizes(), seed++, p.value().scalar_type()) * scale);
  }
}

struct Run {
  torch::Tensor out;
  std::map<std::string, torch::Tensor> grads;
};

Run run(ConvNeXtV2Impl& net, const torch::Tensor& images, DenseKernels kernels, uint64_t rng_seed = 0) {
  net.zero_grad();
  torch::manual_seed(rng_seed);  // drop path draws from the global generator
  auto out = dense_forward(net, images, kernels);
  Run r{out.detach(), {}};
  if (torch::GradMode::is_enabled()) {
    // A loss that weights every output differently.
    (out * seeded_randn(out.sizes(), 99, out.scalar_type())).sum().backward();
    for (const auto& p : net.named_parameters()) {
      r.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
    }
  }
  return r;
}

void expect_same(const Run& got, const Run& want, double tol, double grad_tol, const std::string& where) {
  CNX_EXPECT_CLOSE(got.out, want.out, tol, where + " output");
  ASSERT_EQ(got.grads.size(), want.grads.size()) << where;
  for (const auto& [name, g] : want.grads) {
    ASSERT_TRUE(g.defined()) << where << " " << name;
    ASSERT_TRUE(got.grads.at(name).defined()) << where << " " << name;
    CNX_EXPECT_CLOSE(got.grads.at(name), g, grad_tol, where + " grad " + name);
  }
}

void compare(torch::ScalarType dtype, int64_t batch, int64_t h, int64_t w, bool training, double drop_path,
             uint64_t seed) {
  torch::manual_seed(seed);
  ConvNeXtV2 net(small_options(drop_path));
  net->to(dtype);
  randomise(*net, seed + 10);
  if (training) {
    net->train();
  } else {
    net->eval();
  }
  const auto images = seeded_randn({batch, 3, h, w}, seed + 1, dtype);
  const double tol = dtype == torch::kDouble ? 1e-11 : 3e-6;
  const double grad_tol = dtype == torch::kDouble ? 1e-10 : 2e-5;  // float: measured <= 5e-6
  const auto want = run(*net, images, DenseKernels::kLibTorch, seed + 2);
  const std::string where =
      cnx::str(dtype, " ", batch, "x", h, "x", w, training ? " train" : " eval", " drop path ", drop_path);
  expect_same(run(*net, images, DenseKernels::kCnx, seed + 2), want, tol, grad_tol, where + " cnx");
  expect_same(run(*net, images, DenseKernels::kLibTorchChannelsLast, seed + 2), want, tol, grad_tol,
              where + " libtorch-cl");
}

TEST(DenseKernels, MatchesLibTorchWithoutDropPath) {
  compare(torch::kDouble, 3, 64, 96, /*training=*/true, 0.0, 1);
  compare(torch::kFloat, 3, 64, 96, /*training=*/true, 0.0, 2);
  compare(torch::kFloat, 2, 32, 32, /*training=*/true, 0.0, 3);
  compare(torch::kFloat, 4, 96, 64, /*training=*/true, 0.0, 4);
}

TEST(DenseKernels, MatchesLibTorchInEvalModeWithDropPathConfigured) {
  compare(torch::kDouble, 2, 64, 64, /*training=*/false, 0.3, 5);
  compare(torch::kFloat, 2, 64, 64, /*training=*/false, 0.3, 6);
}

// On the CPU the sparse path draws the same per-sample Bernoulli values as the
// dense model for the same seed, so the two agree with drop path on too.
TEST(DenseKernels, MatchesLibTorchWithDropPathForTheSameSeed) {
  compare(torch::kDouble, 8, 64, 64, /*training=*/true, 0.5, 7);
  compare(torch::kFloat, 8, 64, 64, /*training=*/true, 0.5, 8);
}

TEST(DenseKernels, FeaturesWithoutHead) {
  torch::manual_seed(9);
  ConvNeXtV2 net(small_options(0.0, /*classes=*/0));
  randomise(*net, 20);
  torch::NoGradGuard g;
  const auto images = seeded_randn({2, 3, 64, 64}, 21, torch::kFloat);
  const auto want = net->forward_features(images);
  CNX_EXPECT_CLOSE(dense_forward_features(*net, images, DenseKernels::kCnx), want, 1e-5, "features");
  CNX_EXPECT_CLOSE(dense_forward(*net, images, DenseKernels::kCnx), want, 1e-5, "forward without head");
}

TEST(SparseDropPath, EachSampleIsKeptScaledOrDroppedWhole) {
  const int64_t n = 64, c = 5;
  // Samples with 0..4 rows each (some empty).
  auto counts = at::arange(n, at::kLong).remainder(5);
  auto offsets = at::zeros({n + 1}, at::kLong);
  offsets.slice(0, 1).copy_(counts.cumsum(0));
  const int64_t m = offsets[n].item<int64_t>();
  const double p = 0.5;
  auto x = (seeded_randn({m, c}, 30, at::kDouble) + 3.0).requires_grad_(true);  // no zero rows
  torch::manual_seed(31);
  auto y = sparse_drop_path(x, offsets, p);
  y.sum().backward();
  int64_t dropped = 0, kept = 0;
  for (int64_t s = 0; s < n; ++s) {
    const int64_t b = offsets[s].item<int64_t>(), e = offsets[s + 1].item<int64_t>();
    if (b == e) continue;
    auto ys = y.detach().slice(0, b, e), xs = x.detach().slice(0, b, e), gs = x.grad().slice(0, b, e);
    if (ys.eq(0).all().item<bool>()) {
      ++dropped;
      EXPECT_TRUE(gs.eq(0).all().item<bool>()) << "sample " << s;
    } else {
      ++kept;
      EXPECT_TRUE(ys.equal(xs / (1.0 - p))) << "sample " << s;
      EXPECT_TRUE(gs.eq(1.0 / (1.0 - p)).all().item<bool>()) << "sample " << s;
    }
  }
  EXPECT_GT(dropped, 5);
  EXPECT_GT(kept, 5);
  // A dropped branch leaves the residual's identity exactly.
  torch::manual_seed(31);
  auto residual = seeded_randn({m, c}, 32, at::kDouble);
  auto out = residual + sparse_drop_path(x.detach(), offsets, p);
  auto dropped_rows = y.detach().eq(0).all(1);
  EXPECT_TRUE(out.index({dropped_rows}).equal(residual.index({dropped_rows})));
  // p == 0 is the identity; p outside [0, 1) is rejected.
  EXPECT_TRUE(sparse_drop_path(x.detach(), offsets, 0.0).equal(x.detach()));
  EXPECT_THROW(sparse_drop_path(x.detach(), offsets, 1.0), CheckError);
}

// The sparse draws equal the dense drop_path's: same samples dropped.
TEST(SparseDropPath, SameSamplesAsDenseDropPathForTheSameSeed) {
  const int64_t n = 16, hw = 9, c = 3;
  auto dense = seeded_randn({n, c, 3, 3}, 40, at::kFloat) + 3.0f;
  auto rows = dense.permute({0, 2, 3, 1}).reshape({n * hw, c});
  auto offsets = at::arange(0, (n + 1) * hw, hw, at::kLong);
  torch::manual_seed(41);
  auto want = drop_path(dense, 0.4, /*training=*/true).permute({0, 2, 3, 1}).reshape({n * hw, c});
  torch::manual_seed(41);
  auto got = sparse_drop_path(rows, offsets, 0.4);
  EXPECT_TRUE(got.equal(want));
}

TEST(DenseKernels, SizesOffTheStrideFallBackToChannelsLast) {
  torch::manual_seed(50);
  ConvNeXtV2 net(small_options());
  randomise(*net, 51);
  torch::NoGradGuard g;
  const auto images = seeded_randn({2, 3, 48, 64}, 52, torch::kFloat);
  EXPECT_EQ(effective_dense_kernels(*net, images, DenseKernels::kCnx), DenseKernels::kLibTorchChannelsLast);
  EXPECT_EQ(effective_dense_kernels(*net, seeded_randn({2, 3, 64, 64}, 53, torch::kFloat), DenseKernels::kCnx),
            DenseKernels::kCnx);
  EXPECT_EQ(effective_dense_kernels(*net, images, DenseKernels::kLibTorch), DenseKernels::kLibTorch);
  CNX_EXPECT_CLOSE(dense_forward(*net, images, DenseKernels::kCnx), net->forward(images), 1e-5, "48x64");
}

TEST(DenseKernels, NamesAndDefault) {
  for (auto k : {DenseKernels::kLibTorch, DenseKernels::kLibTorchChannelsLast, DenseKernels::kCnx}) {
    EXPECT_EQ(parse_dense_kernels(dense_kernels_name(k), "test"), k);
  }
  EXPECT_THROW(parse_dense_kernels("mkl", "--kernels"), CheckError);
  if (std::getenv("CNX_DENSE_KERNELS") == nullptr) {
    EXPECT_EQ(dense_kernels(), DenseKernels::kCnx);
  }
  const auto before = dense_kernels();
  set_dense_kernels(DenseKernels::kLibTorch);
  EXPECT_EQ(dense_kernels(), DenseKernels::kLibTorch);
  set_dense_kernels(before);
}

}  // namespace
}  // namespace cnx::model
