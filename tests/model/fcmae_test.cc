// FCMAE: sparse encoder vs the dense-masked oracle (outputs, loss, every
// parameter gradient), masks, loss semantics, parameter names and init.
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>

#include "common/check.h"
#include "model/fcmae.h"
#include "model/fcmae_encoder.h"
#include "sparse_ops/backend.h"
#include "tests/sparse_ops/test_util.h"

namespace cnx::model {
namespace {

using sparse_ops::testing::seeded_randn;

FcmaeOptions tiny_options() {
  FcmaeOptions o;
  o.encoder.depths = {1, 1, 2, 1};
  o.encoder.dims = {8, 16, 24, 32};
  o.decoder_dim = 48;
  return o;
}

struct RunResult {
  torch::Tensor latent, loss;
  std::map<std::string, torch::Tensor> grads;
};

// `decoder_type` (default: `type`) selects the decoder's implementation, which
// follows the encoder type (forward_decoder).
RunResult run(Fcmae& model, const torch::Tensor& images, const torch::Tensor& mask, const std::string& type,
              const std::string& decoder_type = "") {
  model->set_encoder_type(type);
  model->zero_grad();
  auto latent = model->forward_encoder(images, mask);
  if (!decoder_type.empty()) model->set_encoder_type(decoder_type);
  auto pred = model->forward_decoder(latent, mask);
  auto loss = fcmae_loss(images, pred, mask, model->patch_size(), model->options().norm_pix_loss);
  loss.backward();
  RunResult r{latent.detach(), loss.detach(), {}};
  for (const auto& p : model->named_parameters()) {
    r.grads[p.key()] = p.value().grad().defined() ? p.value().grad().clone() : torch::Tensor();
  }
  return r;
}

// Non-zero GRN parameters (and O(1) V1 layer scales instead of 1e-6) so that
// those paths are exercised.
void randomise_grn(Fcmae& model, uint64_t seed) {
  torch::NoGradGuard g;
  for (auto& p : model->named_parameters()) {
    const auto& k = p.key();
    const bool layer_scale = k.size() > 6 && k.compare(k.size() - 6, 6, ".gamma") == 0;
    if (k.find(".grn.") != std::string::npos || layer_scale) {
      p.value().copy_(seeded_randn(p.value().sizes(), seed++, p.value().scalar_type()) * 0.5);
    }
  }
}

void compare_encoders(FcmaeOptions options, int64_t batch, int64_t height, int64_t width, double ratio,
                      torch::ScalarType dtype, uint64_t seed, const torch::Tensor& given_mask = {}) {
  torch::manual_seed(seed);
  Fcmae model(options);
  model->to(dtype);
  randomise_grn(model, seed + 100);
  // Float: the sparse sums accumulate in double (no drift over a sample's
  // sites), so encoder output and loss agree to ~2e-6 and ~2e-7 (measured).
  const double tol = dtype == torch::kDouble ? 1e-10 : 5e-6;
  const double loss_tol = dtype == torch::kDouble ? 1e-10 : 1e-6;
  // Float gradients: the reference init (std 1.0 weights through 12 blocks)
  // makes the backward chain ill-conditioned; float rounding alone moves a few
  // bias/GRN gradients of either path by up to ~7e-6 from float64 (see
  // FcmaeFloat32), the two paths apart by up to ~1.1e-5, so they get 2e-5.
  const double grad_tol = dtype == torch::kDouble ? 1e-10 : 2e-5;
  auto images = seeded_randn({batch, 3, height, width}, seed + 1, dtype);
  auto mask = given_mask.defined() ? given_mask : generate_mask(batch, height / 32, width / 32, ratio, seed + 2);
  auto sparse = run(model, images, mask, "sparse");
  auto dense = run(model, images, mask, "dense_masked");
  const std::string where = cnx::str("batch ", batch, " ", height, "x", width, " ratio ", ratio, " ", dtype);
  CNX_EXPECT_CLOSE(sparse.latent, dense.latent, tol, where + " encoder output");
  CNX_EXPECT_CLOSE(sparse.loss, dense.loss, loss_tol, where + " loss");
  // Masked positions of the encoder output are exactly zero in both.
  auto m = mask.reshape({batch, 1, height / 32, width / 32}).to(dtype);
  EXPECT_EQ((sparse.latent * m).abs().max().item<double>(), 0.0) << where;
  ASSERT_EQ(sparse.grads.size(), dense.grads.size());
  int64_t checked = 0;
  for (const auto& [name, g] : dense.grads) {
    const auto& gs = sparse.grads.at(name);
    ASSERT_TRUE(g.defined() && gs.defined()) << where << " " << name << " has no gradient";
    CNX_EXPECT_CLOSE(gs, g, grad_tol, where + " grad of " + name);
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int64_t>(model->parameters().size()));
}

class SparseVsDenseMasked : public ::testing::TestWithParam<std::tuple<double, int64_t, torch::ScalarType>> {};

TEST_P(SparseVsDenseMasked, TinyNonSquare) {
  auto [ratio, batch, dtype] = GetParam();
  compare_encoders(tiny_options(), batch, 160, 64, ratio, dtype, 11);
}

TEST_P(SparseVsDenseMasked, Atto) {
  auto [ratio, batch, dtype] = GetParam();
  auto o = fcmae_options("atto");
  compare_encoders(o, batch, 96, 128, ratio, dtype, 23);
}

INSTANTIATE_TEST_SUITE_P(Grid, SparseVsDenseMasked,
                         ::testing::Combine(::testing::Values(0.3, 0.6, 0.9), ::testing::Values(1, 4),
                                            ::testing::Values(torch::kFloat, torch::kDouble)));

// The GRN ablation's encoder (ConvNeXt V1 blocks: layer scale, no GRN): the
// sparse path equals the dense-masked one as for V2 blocks; the decoder keeps
// its V2 block.
TEST(SparseVsDenseMaskedV1Blocks, TinyAndAtto) {
  auto tiny = tiny_options();
  tiny.encoder.block = "v1";
  for (auto dtype : {torch::kFloat, torch::kDouble}) compare_encoders(tiny, 4, 160, 64, 0.6, dtype, 31);
  auto atto = fcmae_options("atto");
  atto.encoder.block = "v1";
  compare_encoders(atto, 2, 96, 128, 0.6, torch::kDouble, 37);
  Fcmae model(atto);
  auto p = model->named_parameters();
  EXPECT_TRUE(p.contains("encoder.stages.0.0.gamma"));
  EXPECT_FALSE(p.contains("encoder.stages.0.0.grn.gamma"));
  EXPECT_TRUE(p.contains("decoder.0.grn.gamma"));
  EXPECT_EQ(p["encoder.stages.0.0.gamma"].max().item<double>(), 1e-6f);  // the reference init leaves it
}

// The paper's dense-convolution ablation (model.encoder: dense): the dense
// network on the masked image with no further masking. Its forward, loss and
// every parameter gradient equal the same model written with LibTorch's own
// modules (ConvNeXtV2::forward_encoder on images * keep, the LibTorch
// decoder); unlike dense_masked it is NOT the sparse encoder's function when
// patches are masked (information crosses into masked patches), and it is
// when nothing is masked.
TEST(FcmaeDenseEncoder, IsTheDenseNetworkOnTheMaskedImage) {
  for (const char* block : {"v2", "v1"}) {
    torch::manual_seed(41);
    auto options = tiny_options();
    options.encoder.block = block;
    Fcmae model(options);
    model->to(torch::kDouble);
    randomise_grn(model, 141);
    const int64_t n = 3, h = 96, w = 64;
    auto images = seeded_randn({n, 3, h, w}, 42, torch::kDouble);
    auto mask = generate_mask(n, h / 32, w / 32, 0.5, 43);
    auto keep = mask.reshape({n, 1, h / 32, w / 32}).eq(0).to(torch::kDouble);
    keep = keep.repeat_interleave(32, 2).repeat_interleave(32, 3);
    const std::string where = std::string("block ") + block;

    auto dense = run(model, images, mask, "dense");
    // The oracle: LibTorch's dense encoder on the masked image, LibTorch's decoder.
    model->zero_grad();
    auto latent = model->encoder_model()->forward_encoder((images * keep).contiguous());
    model->set_encoder_type("dense_masked");  // selects the LibTorch decoder
    auto pred = model->forward_decoder(latent, mask);
    auto loss = fcmae_loss(images, pred, mask, model->patch_size(), model->options().norm_pix_loss);
    loss.backward();
    CNX_EXPECT_CLOSE(dense.latent, latent.detach(), 1e-10, where + " encoder output");
    CNX_EXPECT_CLOSE(dense.loss, loss.detach(), 1e-10, where + " loss");
    int64_t checked = 0;
    for (const auto& p : model->named_parameters()) {
      const auto& g = dense.grads.at(p.key());
      ASSERT_TRUE(g.defined() && p.value().grad().defined()) << where << " " << p.key() << " has no gradient";
      CNX_EXPECT_CLOSE(g, p.value().grad(), 1e-10, where + " grad of " + p.key());
      ++checked;
    }
    EXPECT_EQ(checked, static_cast<int64_t>(model->parameters().size()));

    // Not the sparse encoder's function: masked patches get features, and
    // visible ones see the zeros of their masked neighbours.
    auto m = mask.reshape({n, 1, h / 32, w / 32}).to(torch::kDouble);
    EXPECT_GT((dense.latent * m).abs().max().item<double>(), 1e-3) << where;
    auto sparse = run(model, images, mask, "sparse");
    EXPECT_GT(((dense.latent - sparse.latent) * (1 - m)).abs().max().item<double>(), 1e-3) << where;
    // With nothing masked, dense, sparse and dense-masked are one network.
    // (Encoder outputs only: the loss has no masked patch to average over.)
    torch::NoGradGuard no_grad;
    auto none = torch::zeros_like(mask);
    model->set_encoder_type("dense");
    auto all_dense = model->forward_encoder(images, none);
    model->set_encoder_type("sparse");
    CNX_EXPECT_CLOSE(all_dense, model->forward_encoder(images, none), 1e-10, where + " nothing masked");
  }
}

// The whole FCMAE step (sparse encoder, decoder, loss, backward) on the
// generic ATen-only kernels equals the one on the CPU kernels: loss, encoder
// output and every parameter gradient. Each op alone agrees to 1e-6 in float
// (test_ops); through 12 blocks and back the two summation orders drift
// apart by up to ~1.4e-6 (measured, std02 init; ~6e-6 with the reference's
// std-1.0 init), so the float step gets 4e-6. Double must agree to 1e-12.
class GenericKernelsStep : public ::testing::TestWithParam<torch::ScalarType> {};

TEST_P(GenericKernelsStep, MatchesCpuKernels) {
  const auto dtype = GetParam();
  const double tol = dtype == torch::kDouble ? 1e-12 : 4e-6;
  torch::manual_seed(31);
  auto options = fcmae_options("atto");
  options.init = "std02";
  Fcmae model(options);
  model->to(dtype);
  randomise_grn(model, 131);
  auto images = seeded_randn({2, 3, 96, 128}, 32, dtype);
  auto mask = generate_mask(2, 3, 4, 0.6, 33);
  RunResult fast, generic;
  {
    sparse_ops::ScopedKernelMode mode(sparse_ops::KernelMode::kAuto);
    fast = run(model, images, mask, "sparse");
  }
  {
    sparse_ops::ScopedKernelMode mode(sparse_ops::KernelMode::kGeneric);
    generic = run(model, images, mask, "sparse");
  }
  CNX_EXPECT_CLOSE(generic.loss, fast.loss, tol, "loss");
  CNX_EXPECT_CLOSE(generic.latent, fast.latent, tol, "encoder output");
  ASSERT_EQ(generic.grads.size(), fast.grads.size());
  for (const auto& [name, g] : fast.grads) {
    ASSERT_TRUE(g.defined() && generic.grads.at(name).defined()) << name << " has no gradient";
    CNX_EXPECT_CLOSE(generic.grads.at(name), g, tol, "grad of " + name);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GenericKernelsStep, ::testing::Values(torch::kFloat, torch::kDouble));

// Float32 rounding measured against a float64 oracle (the same parameters and
// inputs in double): the sparse encoder's errors must be no larger than the
// dense-masked encoder's, which sums with LibTorch's pairwise reductions. Atto
// at 224 with mask 0.6 puts ~1.2k sites per sample in the stage-0 GRN
// statistics and depthwise weight gradients. Measures, each averaged over three
// seeds (one run's loss error is a fraction of a float ulp, so one seed decides
// little): the loss, the encoder output, and all parameter gradients together
// (sqrt(sum of squared errors / sum of squared oracle values)). The loss is
// compared with the same (LibTorch) decoder behind both encoders: the sparse
// decoder's GEMMs round differently from LibTorch's 1x1 convolutions, which
// moves the loss by up to ~1 float ulp either way (reference init: ~1e-7 vs
// ~5e-8, printed); encoder output and gradients are compared for the whole
// sparse path.
struct Float32Errors {
  double loss = 0.0, latent = 0.0, grads = 0.0;
};

Float32Errors float32_errors(const RunResult& got, const RunResult& oracle) {
  using sparse_ops::testing::rel_err;
  Float32Errors e;
  e.loss = rel_err(got.loss, oracle.loss);
  e.latent = rel_err(got.latent, oracle.latent);
  double err2 = 0.0, ref2 = 0.0;
  for (const auto& [name, g] : oracle.grads) {
    err2 += (got.grads.at(name).to(torch::kDouble) - g).pow(2).sum().item<double>();
    ref2 += g.pow(2).sum().item<double>();
  }
  e.grads = std::sqrt(err2 / ref2);
  return e;
}

class FcmaeFloat32 : public ::testing::TestWithParam<std::string> {};

TEST_P(FcmaeFloat32, SparseErrorVsFloat64NoLargerThanDenseMasked) {
  Float32Errors sparse, dense;
  const int seeds = 3;
  for (int seed = 0; seed < seeds; ++seed) {
    torch::manual_seed(41 + seed);
    auto options = fcmae_options("atto");
    options.init = GetParam();
    Fcmae model(options);
    model->to(torch::kDouble);
    randomise_grn(model, 141 + seed);
    const int64_t batch = 2;
    auto images = seeded_randn({batch, 3, 224, 224}, 42 + seed, torch::kDouble);
    auto mask = generate_mask(batch, 7, 7, 0.6, 43 + seed);
    const auto oracle = run(model, images, mask, "sparse");
    model->to(torch::kFloat);
    const auto images_f = images.to(torch::kFloat);
    const auto s = float32_errors(run(model, images_f, mask, "sparse"), oracle);
    const auto d = float32_errors(run(model, images_f, mask, "dense_masked"), oracle);
    const auto e = float32_errors(run(model, images_f, mask, "sparse", "dense_masked"), oracle);
    std::printf(
        "init %s seed %d, float32 vs float64, relative: loss sparse %.3g (sparse encoder, LibTorch decoder "
        "%.3g) dense %.3g; encoder output sparse %.3g dense %.3g; gradients sparse %.3g dense %.3g\n",
        GetParam().c_str(), seed, s.loss, e.loss, d.loss, s.latent, d.latent, s.grads, d.grads);
    sparse.loss += e.loss / seeds;
    sparse.latent += s.latent / seeds;
    sparse.grads += s.grads / seeds;
    dense.loss += d.loss / seeds;
    dense.latent += d.latent / seeds;
    dense.grads += d.grads / seeds;
  }
  // The loss is one float32 scalar: its error is a fraction of an ulp, and
  // which side of the rounding it lands on moves with any change of the
  // summation order upstream (e.g. the GEMM path, model/onednn_matmul.h:
  // with oneDNN the encoder output and gradients here are closer to float64
  // than with BLAS, and one seed's loss still lands one ulp further). So the
  // loss may be worse by one ulp (2^-23 relative) on one of the seeds.
  EXPECT_LE(sparse.loss, dense.loss + std::ldexp(1.0, -23) / seeds);
  EXPECT_LE(sparse.latent, dense.latent);
  EXPECT_LE(sparse.grads, dense.grads);
}

INSTANTIATE_TEST_SUITE_P(Inits, FcmaeFloat32, ::testing::Values("reference", "std02"));

TEST(Fcmae, EdgeRowMaskedEverywhereAndFullyMaskedImages) {
  // 3 x 2 patches; the bottom row is masked in every image, image 1 entirely.
  auto mask = torch::tensor({0.f, 1.f, 0.f, 0.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f}).reshape({2, 6});
  compare_encoders(tiny_options(), 2, 96, 64, 0.0, torch::kDouble, 5, mask);
  compare_encoders(tiny_options(), 2, 96, 64, 0.0, torch::kFloat, 6, mask);
}

TEST(Fcmae, RatioOneWorksRatioZeroIsAClearError) {
  torch::manual_seed(1);
  auto o = tiny_options();
  Fcmae model(o);
  auto images = torch::randn({1, 3, 64, 64});
  auto out = model->forward(images, generate_mask(1, 2, 2, 1.0, 3));
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  EXPECT_EQ(out.mask.sum().item<float>(), 4.f);
  out.loss.backward();

  Fcmae model0(o);
  try {
    model0->forward(images, generate_mask(1, 2, 2, 0.0, 3));
    FAIL() << "mask ratio 0 must be refused";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("no patch is masked"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model->forward(torch::randn({1, 3, 64, 48}), generate_mask(1, 2, 1, 0.5, 3)), CheckError);
  o.encoder_type = "minkowski";
  EXPECT_THROW(Fcmae{o}, std::invalid_argument);
}

TEST(FcmaeMask, ExactCountDeterministicAndUniform) {
  for (double ratio : {0.0, 0.3, 0.6, 0.75, 0.9, 1.0}) {
    auto m = generate_mask(5, 7, 3, ratio, 42);
    ASSERT_EQ(m.sizes(), (torch::IntArrayRef{5, 21}));
    const int64_t keep = static_cast<int64_t>(21 * (1.0 - ratio));
    for (int64_t n = 0; n < 5; ++n) {
      EXPECT_EQ(m[n].eq(0).sum().item<int64_t>(), keep) << "ratio " << ratio << " row " << n;
    }
    EXPECT_TRUE(m.equal(generate_mask(5, 7, 3, ratio, 42)));
  }
  EXPECT_EQ(num_visible(49, 0.6), 19);  // int(49 * 0.4) = int(19.6)
  EXPECT_FALSE(generate_mask(4, 7, 7, 0.6, 1).equal(generate_mask(4, 7, 7, 0.6, 2)));
  // Every patch position is kept about equally often.
  auto many = generate_mask(4000, 2, 2, 0.5, 9);
  auto freq = many.eq(0).to(torch::kDouble).mean(0);
  EXPECT_LT((freq - 0.5).abs().max().item<double>(), 0.04) << freq;
  EXPECT_THROW(generate_mask(1, 2, 2, 1.5, 0), CheckError);
}

TEST(FcmaeLoss, IgnoresVisiblePatchesAndMatchesReferenceFormula) {
  const int64_t p = 32;
  auto images = seeded_randn({2, 3, 64, 96}, 1, torch::kDouble);
  auto pred = seeded_randn({2, p * p * 3, 2, 3}, 2, torch::kDouble);
  auto mask = torch::tensor({1., 0., 0., 1., 1., 0., 0., 0., 1., 1., 0., 0.}, torch::kDouble).reshape({2, 6});
  const double base = fcmae_loss(images, pred, mask, p, true).item<double>();
  // Patch (row 0, col 1) of image 0 is visible (mask index 1): changing it keeps the loss.
  auto changed = images.clone();
  changed.index_put_({0, 1, 5, 40}, 100.0);
  EXPECT_EQ(fcmae_loss(changed, pred, mask, p, true).item<double>(), base);
  // Patch (row 0, col 0) is masked.
  changed = images.clone();
  changed.index_put_({0, 1, 5, 5}, 100.0);
  EXPECT_NE(fcmae_loss(changed, pred, mask, p, true).item<double>(), base);

  // Reference formula written out independently.
  auto target = patchify(images, p);
  double num = 0, den = 0;
  for (int64_t n = 0; n < 2; ++n) {
    for (int64_t l = 0; l < 6; ++l) {
      if (mask[n][l].item<double>() == 0) continue;
      auto t = target[n][l];
      auto tn = (t - t.mean()) / (t.var() + 1e-6).sqrt();
      const int64_t hh = l / 3, ww = l % 3;
      auto pr = pred.index({n, torch::indexing::Slice(), hh, ww});
      num += (pr - tn).pow(2).mean().item<double>();
      den += 1;
    }
  }
  EXPECT_NEAR(base, num / den, 1e-12);

  // Gradient for the prediction (NCHW and channels-last memory) equals
  // autograd's through the same formula written with plain ops.
  for (bool channels_last : {false, true}) {
    auto leaf = (channels_last ? pred.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2}) : pred.clone())
                    .requires_grad_(true);
    fcmae_loss(images, leaf, mask, p, true).backward();
    auto ref_leaf = pred.clone().requires_grad_(true);
    auto tgt = patchify(images, p);
    tgt = (tgt - tgt.mean(-1, true)) / (tgt.var(-1, true, true) + 1e-6).sqrt();
    auto per_patch = (ref_leaf.reshape({2, p * p * 3, 6}).permute({0, 2, 1}) - tgt).pow(2).mean(-1);
    ((per_patch * mask).sum() / mask.sum()).backward();
    EXPECT_TRUE(torch::allclose(leaf.grad(), ref_leaf.grad(), 1e-12, 1e-14)) << "channels_last " << channels_last;
  }
}

// The fused CPU loss kernel (kernel mode auto) against the ATen formulation
// (kernel mode generic): weighted masks, both target normalisations, NCHW and
// channels-last predictions, an upstream gradient other than 1. float64 to
// rounding; float32 no further from the float64 value than ATen's float32.
TEST(FcmaeLoss, FusedKernelMatchesAtenFormulation) {
  using sparse_ops::KernelMode;
  using sparse_ops::ScopedKernelMode;
  const int64_t p = 8;
  auto images64 = seeded_randn({3, 3, 16, 24}, 11, torch::kDouble) * 2.0 + 0.5;
  auto pred64 = seeded_randn({3, p * p * 3, 2, 3}, 12, torch::kDouble);
  auto mask = torch::tensor({1., 0., 0.5, 1., 0., 0., 0., 0., 0., 0., 0., 2., 1., 1., 1., 1., 1., 1.}).reshape({3, 6});
  auto run = [&](KernelMode mode, torch::ScalarType dt, bool norm, bool channels_last) {
    ScopedKernelMode scoped(mode);
    auto base = pred64.to(dt);
    auto leaf = (channels_last ? base.permute({0, 2, 3, 1}).contiguous().permute({0, 3, 1, 2}) : base.clone())
                    .requires_grad_(true);
    auto loss = fcmae_loss(images64.to(dt), leaf, mask, p, norm);
    (loss * 3.0).backward();
    return std::make_pair(loss.detach().to(torch::kDouble), leaf.grad().to(torch::kDouble));
  };
  for (bool norm : {true, false}) {
    for (bool cl : {false, true}) {
      const auto ref = run(KernelMode::kGeneric, torch::kDouble, norm, cl);
      const auto fused = run(KernelMode::kAuto, torch::kDouble, norm, cl);
      EXPECT_NEAR(fused.first.item<double>(), ref.first.item<double>(), 1e-12) << "norm " << norm << " cl " << cl;
      EXPECT_TRUE(torch::allclose(fused.second, ref.second, 1e-10, 1e-14)) << "norm " << norm << " cl " << cl;
      // Visible patches (mask 0) get a zero gradient.
      EXPECT_EQ(fused.second.index({1, torch::indexing::Slice(), 0, 0}).abs().max().item<double>(), 0.0);
      const auto fused32 = run(KernelMode::kAuto, torch::kFloat, norm, cl);
      const auto aten32 = run(KernelMode::kGeneric, torch::kFloat, norm, cl);
      const double ef = std::abs(fused32.first.item<double>() - ref.first.item<double>());
      const double ea = std::abs(aten32.first.item<double>() - ref.first.item<double>());
      EXPECT_LE(ef, std::max(ea, 1e-7 * std::abs(ref.first.item<double>()))) << "norm " << norm << " cl " << cl;
      EXPECT_TRUE(torch::allclose(fused32.second, ref.second, 1e-5, 1e-7)) << "norm " << norm << " cl " << cl;
    }
  }
}

TEST(FcmaePatchify, ChannelFastestNonSquareRoundTrip) {
  auto img = seeded_randn({2, 3, 64, 96}, 3, torch::kFloat);
  auto pt = patchify(img, 32);
  ASSERT_EQ(pt.sizes(), (torch::IntArrayRef{2, 6, 3072}));
  // patches[n, i*w + j, (py*p + px)*C + c] == img[n, c, i*p + py, j*p + px]
  EXPECT_EQ(pt[1][4][(7 * 32 + 9) * 3 + 2].item<float>(), img[1][2][32 + 7][32 + 9].item<float>());
  EXPECT_TRUE(unpatchify(pt, 32, 2, 3).equal(img));
}

TEST(FcmaeModel, ReferenceParameterNamesAndSharedEncoder) {
  torch::manual_seed(3);
  Fcmae model(fcmae_options("atto"));
  auto params = model->named_parameters();
  for (const char* name :
       {"encoder.downsample_layers.0.0.weight", "encoder.downsample_layers.0.1.bias",
        "encoder.downsample_layers.3.1.weight", "encoder.stages.3.1.grn.gamma", "encoder.stages.2.5.pwconv2.bias",
        "proj.weight", "proj.bias", "mask_token", "decoder.0.dwconv.weight", "decoder.0.grn.beta",
        "decoder.0.pwconv1.weight", "pred.weight", "pred.bias"}) {
    EXPECT_NE(params.find(name), nullptr) << "missing " << name;
  }
  EXPECT_EQ(params.find("encoder.norm.weight"), nullptr);
  EXPECT_EQ(params["mask_token"].sizes(), (torch::IntArrayRef{1, 512, 1, 1}));
  EXPECT_EQ(params["decoder.0.grn.gamma"].sizes(), (torch::IntArrayRef{1, 1, 1, 2048}));
  EXPECT_EQ(params["pred.weight"].sizes(), (torch::IntArrayRef{3072, 512, 1, 1}));
  // The dense view of the encoder shares the FCMAE's tensors.
  auto dense = model->encoder_model()->named_parameters();
  EXPECT_EQ(dense["stages.1.0.dwconv.weight"].data_ptr(), params["encoder.stages.1.0.dwconv.weight"].data_ptr());
  EXPECT_EQ(dense["downsample_layers.0.0.weight"].data_ptr(),
            params["encoder.downsample_layers.0.0.weight"].data_ptr());
}

double stddev(const torch::Tensor& t) {
  return t.to(torch::kDouble).std().item<double>();
}

TEST(FcmaeModel, ReferenceAndStd02Init) {
  torch::manual_seed(4);
  Fcmae ref(fcmae_options("atto"));
  auto p = ref->named_parameters();
  EXPECT_NEAR(stddev(p["encoder.downsample_layers.0.0.weight"]), 0.88, 0.1);  // trunc normal std 1 cut at +-2
  EXPECT_NEAR(stddev(p["encoder.stages.2.0.pwconv1.weight"]), 0.88, 0.05);
  EXPECT_NEAR(stddev(p["encoder.downsample_layers.2.1.weight"]), 0.02, 0.002);
  EXPECT_NEAR(stddev(p["proj.weight"]), 0.88, 0.05);
  EXPECT_NEAR(stddev(p["decoder.0.dwconv.weight"]), 0.88, 0.05);
  EXPECT_NEAR(stddev(p["mask_token"]), 0.02, 0.004);
  // Decoder Linear layers keep PyTorch's default init: uniform +-1/sqrt(fan_in) biases.
  EXPECT_GT(p["decoder.0.pwconv1.bias"].abs().max().item<double>(), 0.01);
  EXPECT_LE(p["decoder.0.pwconv1.bias"].abs().max().item<double>(), 1.0 / std::sqrt(512.0));
  EXPECT_EQ(p["encoder.stages.0.0.pwconv1.bias"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["encoder.stages.0.0.grn.gamma"].abs().max().item<double>(), 0.0);
  EXPECT_EQ(p["encoder.stages.0.0.norm.weight"].min().item<double>(), 1.0);

  auto o = fcmae_options("atto");
  o.init = "std02";
  Fcmae s02(o);
  auto q = s02->named_parameters();
  EXPECT_NEAR(stddev(q["encoder.downsample_layers.0.0.weight"]), 0.02, 0.003);
  EXPECT_NEAR(stddev(q["decoder.0.pwconv1.weight"]), 0.02, 0.002);
  EXPECT_EQ(q["decoder.0.pwconv1.bias"].abs().max().item<double>(), 0.0);
}

}  // namespace
}  // namespace cnx::model
