// Sparse ops against dense LibTorch ops (float and double), against
// finite differences (double) on the kernel and the generic path, the generic
// (ATen-only) path against the CPU kernels, reduced precision, layouts, maps
// and error handling.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/torch_compat.h"
#include "sparse_ops/backend.h"
#include "sparse_ops/conv_cells.h"
#include "sparse_ops/densify.h"
#include "sparse_ops/dwconv.h"
#include "sparse_ops/grn.h"
#include "sparse_ops/layout.h"
#include "tests/sparse_ops/test_util.h"

namespace cnx::sparse_ops {
namespace {

using testing::random_mask;
using testing::seeded_randn;

at::Tensor leaf(at::Tensor t) {
  return t.detach().requires_grad_(true);
}

at::Tensor active_f(const SparseLayout& lay, at::ScalarType dtype) {
  // (N, 1, H, W) 1 at active sites.
  auto a = lay.dense_to_site.ge(0).to(dtype);
  return a.view({lay.batch, 1, lay.height, lay.width});
}

TEST(SparseLayout, OrdersSitesAndMapsAreSymmetric) {
  auto mask = random_mask(3, 2, 3, 0.5, 7);
  mask[1].fill_(1);  // a sample with no visible patch
  auto lay = layout_from_patch_mask(mask, 2, 3, 4);
  EXPECT_EQ(lay.height, 8);
  EXPECT_EQ(lay.width, 12);
  auto visible = mask.eq(0).sum({1, 2}) * 16;
  auto off = lay.offsets;
  for (int64_t n = 0; n < 3; ++n) {
    EXPECT_EQ(off[n + 1].item<int64_t>() - off[n].item<int64_t>(), visible[n].item<int64_t>()) << "sample " << n;
  }
  auto si = lay.site_index;
  if (lay.num_sites > 1) {
    EXPECT_TRUE(si.slice(0, 1).gt(si.slice(0, 0, -1)).all().item<bool>());
  }
  auto map = neighbour_map(lay, 7);
  ASSERT_EQ(map.sizes(), (at::IntArrayRef{lay.num_sites, 49}));
  auto acc = map.accessor<int32_t, 2>();
  for (int64_t i = 0; i < lay.num_sites; ++i) {
    EXPECT_EQ(acc[i][24], i);
    for (int64_t t = 0; t < 49; ++t) {
      if (acc[i][t] >= 0) {
        ASSERT_EQ(acc[acc[i][t]][48 - t], i) << "map not symmetric at site " << i << " offset " << t;
      }
    }
  }
  auto coarse = layout_from_patch_mask(mask, 2, 3, 2);
  auto cells = cell_map(lay, coarse, 2);
  EXPECT_TRUE(cells.ge(0).all().item<bool>()) << "cells of an upsampled mask are all-visible";
  EXPECT_EQ(cells.numel(), lay.num_sites);
}

TEST(SparseLayout, RejectsBadMasks) {
  auto mask = at::zeros({2, 6});
  EXPECT_THROW(layout_from_patch_mask(mask, 2, 2, 4), CheckError);
  EXPECT_THROW(layout_from_patch_mask(mask, 2, 3, 0), CheckError);
  auto lay = layout_from_patch_mask(mask, 2, 3, 1);
  EXPECT_THROW(neighbour_map(lay, 4), CheckError);
}

class SparseOpsVsDense : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(SparseOpsVsDense, DepthwiseConv) {
  const auto dt = GetParam();
  const double tol = dt == at::kDouble ? 1e-10 : 1e-6;
  const int64_t c = 5;
  auto mask = random_mask(2, 3, 4, 0.5, 11);
  auto lay = layout_from_patch_mask(mask, 3, 4, 4);  // 12 x 16
  auto map = neighbour_map(lay, 7);
  auto dense_in = seeded_randn({2, c, 12, 16}, 1, dt) * active_f(lay, dt);
  auto w = seeded_randn({c, 1, 7, 7}, 2, dt);
  auto b = seeded_randn({c}, 3, dt);
  auto r = seeded_randn({lay.num_sites, c}, 4, dt);

  auto xs = leaf(sparsify(dense_in, lay));
  auto ws = leaf(w), bs = leaf(b);
  auto ys = sparse_depthwise_conv(xs, map, ws, bs);
  (ys * r).sum().backward();

  auto xd = leaf(dense_in), wd = leaf(w), bd = leaf(b);
  auto yd = sparsify(at::conv2d(xd, wd, bd, 1, 3, 1, c), lay);
  (yd * r).sum().backward();

  CNX_EXPECT_CLOSE(ys, yd, tol, "dwconv output");
  CNX_EXPECT_CLOSE(xs.grad(), sparsify(xd.grad(), lay), tol, "dwconv input grad");
  CNX_EXPECT_CLOSE(ws.grad(), wd.grad(), tol, "dwconv weight grad");
  CNX_EXPECT_CLOSE(bs.grad(), bd.grad(), tol, "dwconv bias grad");
}

TEST_P(SparseOpsVsDense, GrnPerSampleOverActiveSites) {
  const auto dt = GetParam();
  const double tol = dt == at::kDouble ? 1e-10 : 1e-6;
  const int64_t c = 6;
  auto mask = random_mask(3, 2, 2, 0.5, 21);
  mask[2].fill_(1);  // empty sample
  auto lay = layout_from_patch_mask(mask, 2, 2, 3);
  auto x = seeded_randn({lay.num_sites, c}, 5, dt);
  auto gamma = seeded_randn({1, 1, 1, c}, 6, dt);
  auto beta = seeded_randn({1, 1, 1, c}, 7, dt);
  auto r = seeded_randn({lay.num_sites, c}, 8, dt);

  auto xs = leaf(x), gs = leaf(gamma), bs = leaf(beta);
  auto ys = sparse_grn(xs, lay.offsets, gs, bs);
  (ys * r).sum().backward();

  // Dense formula on the densified input (zeros elsewhere do not change the norms).
  auto xd = leaf(x), gd = leaf(gamma), bd = leaf(beta);
  auto dense = densify(xd, lay).permute({0, 2, 3, 1});  // N,H,W,C
  auto gx = at::norm(dense, 2, {1, 2}, true);
  auto nx = gx / (gx.mean(-1, true) + 1e-6);
  auto yd = sparsify((gd * (dense * nx) + bd + dense).permute({0, 3, 1, 2}), lay);
  (yd * r).sum().backward();

  CNX_EXPECT_CLOSE(ys, yd, tol, "grn output");
  CNX_EXPECT_CLOSE(xs.grad(), xd.grad(), tol, "grn input grad");
  CNX_EXPECT_CLOSE(gs.grad(), gd.grad(), tol, "grn gamma grad");
  CNX_EXPECT_CLOSE(bs.grad(), bd.grad(), tol, "grn beta grad");
}

TEST_P(SparseOpsVsDense, DownsampleConv) {
  const auto dt = GetParam();
  const double tol = dt == at::kDouble ? 1e-10 : 1e-6;
  auto mask = random_mask(2, 2, 3, 0.5, 31);
  auto fine = layout_from_patch_mask(mask, 2, 3, 4);
  auto coarse = layout_from_patch_mask(mask, 2, 3, 2);
  auto map = cell_map(fine, coarse, 2);
  auto dense_in = seeded_randn({2, 4, 8, 12}, 9, dt) * active_f(fine, dt);
  auto w = seeded_randn({7, 4, 2, 2}, 10, dt);
  auto b = seeded_randn({7}, 11, dt);
  auto r = seeded_randn({coarse.num_sites, 7}, 12, dt);

  auto xs = leaf(sparsify(dense_in, fine)), ws = leaf(w), bs = leaf(b);
  auto ys = sparse_downsample_conv(xs, map, ws, bs);
  (ys * r).sum().backward();
  auto xd = leaf(dense_in), wd = leaf(w), bd = leaf(b);
  auto yd = sparsify(at::conv2d(xd, wd, bd, 2), coarse);
  (yd * r).sum().backward();

  CNX_EXPECT_CLOSE(ys, yd, tol, "downsample output");
  CNX_EXPECT_CLOSE(xs.grad(), sparsify(xd.grad(), fine), tol, "downsample input grad");
  CNX_EXPECT_CLOSE(ws.grad(), wd.grad(), tol, "downsample weight grad");
  CNX_EXPECT_CLOSE(bs.grad(), bd.grad(), tol, "downsample bias grad");
}

TEST_P(SparseOpsVsDense, StemConvOnVisiblePatches) {
  const auto dt = GetParam();
  const double tol = dt == at::kDouble ? 1e-10 : 1e-6;
  auto mask = random_mask(2, 2, 3, 0.5, 41);
  auto lay = layout_from_patch_mask(mask, 2, 3, 2);  // stem output 4 x 6, image 16 x 24
  auto img = seeded_randn({2, 3, 16, 24}, 13, dt);
  auto w = seeded_randn({5, 3, 4, 4}, 14, dt);
  auto b = seeded_randn({5}, 15, dt);
  auto r = seeded_randn({lay.num_sites, 5}, 16, dt);

  auto is = leaf(img), ws = leaf(w), bs = leaf(b);
  auto ys = sparse_stem_conv(is, lay, ws, bs);
  (ys * r).sum().backward();
  auto id = leaf(img), wd = leaf(w), bd = leaf(b);
  auto yd = sparsify(at::conv2d(id, wd, bd, 4), lay);
  (yd * r).sum().backward();

  CNX_EXPECT_CLOSE(ys, yd, tol, "stem output");
  CNX_EXPECT_CLOSE(is.grad(), id.grad(), tol, "stem image grad");
  CNX_EXPECT_CLOSE(ws.grad(), wd.grad(), tol, "stem weight grad");
  CNX_EXPECT_CLOSE(bs.grad(), bd.grad(), tol, "stem bias grad");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SparseOpsVsDense, ::testing::Values(at::kFloat, at::kDouble));

// Long float sums do not drift: one sample with ~20k active sites (a GRN
// statistic and each depthwise weight-gradient tap sum over all of them),
// features with a non-zero mean so that the sums grow. Each float result is
// compared with its float64 value; the sparse CPU kernels' error must be no
// larger than that of the dense LibTorch ops (pairwise/blocked reductions) on
// the same data.
TEST(SparseOps, LongFloatSumsNoWorseThanLibTorch) {
  using testing::rel_err;
  ScopedKernelMode scoped(KernelMode::kAuto);
  const int64_t c = 16, side = 180;
  auto mask = random_mask(1, side / 4, side / 4, 0.4, 91);
  auto lay = layout_from_patch_mask(mask, side / 4, side / 4, 4);
  ASSERT_GT(lay.num_sites, 15000);
  auto map = neighbour_map(lay, 7);
  auto x64 = seeded_randn({lay.num_sites, c}, 1, at::kDouble) + 1.0;
  auto w64 = seeded_randn({c, 1, 7, 7}, 2, at::kDouble) * 0.1;
  auto b64 = seeded_randn({c}, 3, at::kDouble);
  auto gm64 = seeded_randn({1, 1, 1, c}, 4, at::kDouble), bt64 = seeded_randn({1, 1, 1, c}, 5, at::kDouble);
  auto r64 = seeded_randn({lay.num_sites, c}, 6, at::kDouble) + 0.5;

  // Sparse ops: dwconv then GRN; returns output and the parameter gradients.
  auto sparse_run = [&](at::ScalarType dt) {
    auto x = leaf(x64.to(dt)), w = leaf(w64.to(dt)), b = leaf(b64.to(dt));
    auto gm = leaf(gm64.to(dt)), bt = leaf(bt64.to(dt));
    auto y = sparse_grn(sparse_depthwise_conv(x, map, w, b), lay.offsets, gm, bt);
    (y * r64.to(dt)).sum().backward();
    return std::vector<at::Tensor>{y.detach(), w.grad(), b.grad(), gm.grad(), bt.grad(), x.grad()};
  };
  // The same function with dense LibTorch ops on the densified input.
  auto dense_run = [&](at::ScalarType dt) {
    auto x = leaf(x64.to(dt)), w = leaf(w64.to(dt)), b = leaf(b64.to(dt));
    auto gm = leaf(gm64.to(dt)), bt = leaf(bt64.to(dt));
    auto act = active_f(lay, dt);
    auto conv = at::conv2d(densify(x, lay), w, b, 1, 3, 1, c) * act;
    auto nhwc = conv.permute({0, 2, 3, 1});
    auto gx = at::norm(nhwc, 2, {1, 2}, true);
    auto nx = gx / (gx.mean(-1, true) + 1e-6);
    auto y = sparsify((gm * (nhwc * nx) + bt + nhwc).permute({0, 3, 1, 2}), lay);
    (y * r64.to(dt)).sum().backward();
    return std::vector<at::Tensor>{y.detach(), w.grad(), b.grad(), gm.grad(), bt.grad(), x.grad()};
  };
  const auto oracle = sparse_run(at::kDouble);
  const auto sparse = sparse_run(at::kFloat);
  const auto dense = dense_run(at::kFloat);
  const char* names[] = {"output",         "dwconv weight grad", "dwconv bias grad",
                         "grn gamma grad", "grn beta grad",      "input grad"};
  for (size_t q = 0; q < oracle.size(); ++q) {
    const double es = rel_err(sparse[q], oracle[q]), ed = rel_err(dense[q], oracle[q]);
    std::printf("%s: float32 vs float64 sparse %.3g dense %.3g\n", names[q], es, ed);
    EXPECT_LE(es, ed) << names[q];
  }
}

class SparseOpsGradcheck : public ::testing::TestWithParam<KernelMode> {};

TEST_P(SparseOpsGradcheck, DepthwiseConv) {
  ScopedKernelMode mode(GetParam());
  auto mask = random_mask(2, 2, 2, 0.4, 51);
  auto lay = layout_from_patch_mask(mask, 2, 2, 2);
  auto map = neighbour_map(lay, 3);
  auto x = leaf(seeded_randn({lay.num_sites, 3}, 1, at::kDouble));
  auto w = leaf(seeded_randn({3, 1, 3, 3}, 2, at::kDouble));
  auto b = leaf(seeded_randn({3}, 3, at::kDouble));
  testing::finite_difference_check([&] { return sparse_depthwise_conv(x, map, w, b); }, {x, w, b},
                                   {"features", "weight", "bias"});
}

TEST_P(SparseOpsGradcheck, Grn) {
  ScopedKernelMode mode(GetParam());
  auto mask = random_mask(2, 2, 2, 0.4, 52);
  mask[0][0][0] = 0;
  auto lay = layout_from_patch_mask(mask, 2, 2, 2);
  auto x = leaf(seeded_randn({lay.num_sites, 4}, 4, at::kDouble));
  auto g = leaf(seeded_randn({1, 1, 1, 4}, 5, at::kDouble));
  auto b = leaf(seeded_randn({1, 1, 1, 4}, 6, at::kDouble));
  testing::finite_difference_check([&] { return sparse_grn(x, lay.offsets, g, b); }, {x, g, b},
                                   {"features", "gamma", "beta"});
}

TEST_P(SparseOpsGradcheck, Downsample) {
  ScopedKernelMode mode(GetParam());
  auto mask = random_mask(2, 2, 2, 0.4, 53);
  auto fine = layout_from_patch_mask(mask, 2, 2, 2);
  auto coarse = layout_from_patch_mask(mask, 2, 2, 1);
  auto map = cell_map(fine, coarse, 2);
  auto x = leaf(seeded_randn({fine.num_sites, 3}, 7, at::kDouble));
  auto w = leaf(seeded_randn({4, 3, 2, 2}, 8, at::kDouble));
  auto b = leaf(seeded_randn({4}, 9, at::kDouble));
  testing::finite_difference_check([&] { return sparse_downsample_conv(x, map, w, b); }, {x, w, b},
                                   {"features", "weight", "bias"});
}

TEST_P(SparseOpsGradcheck, Stem) {
  ScopedKernelMode mode(GetParam());
  auto mask = random_mask(2, 2, 2, 0.4, 54);
  mask[1][1][1] = 0;
  auto lay = layout_from_patch_mask(mask, 2, 2, 1);
  auto img = leaf(seeded_randn({2, 2, 8, 8}, 10, at::kDouble));
  auto w = leaf(seeded_randn({3, 2, 4, 4}, 11, at::kDouble));
  auto b = leaf(seeded_randn({3}, 12, at::kDouble));
  testing::finite_difference_check([&] { return sparse_stem_conv(img, lay, w, b); }, {img, w, b},
                                   {"image", "weight", "bias"});
}

INSTANTIATE_TEST_SUITE_P(KernelModes, SparseOpsGradcheck, ::testing::Values(KernelMode::kAuto, KernelMode::kGeneric),
                         [](const ::testing::TestParamInfo<KernelMode>& info) {
                           return std::string(kernel_mode_name(info.param));
                         });

TEST(SparseOps, EmptyLayoutWorks) {
  auto lay = layout_from_patch_mask(at::ones({2, 4}), 2, 2, 2);
  ASSERT_EQ(lay.num_sites, 0);
  auto x = leaf(at::zeros({0, 3}));
  auto w = leaf(at::randn({3, 1, 3, 3})), b = leaf(at::randn({3}));
  auto y = sparse_depthwise_conv(x, neighbour_map(lay, 3), w, b);
  auto gm = leaf(at::randn({3})), bt = leaf(at::randn({3}));
  auto z = sparse_grn(y, lay.offsets, gm, bt);
  auto d = densify(z, lay);
  EXPECT_EQ(d.sizes(), (at::IntArrayRef{2, 3, 4, 4}));
  EXPECT_EQ(d.abs().sum().item<float>(), 0.f);
  d.sum().backward();
  EXPECT_EQ(w.grad().abs().sum().item<float>(), 0.f);
  EXPECT_EQ(bt.grad().abs().sum().item<float>(), 0.f);
}

TEST(SparseOps, BadInputsGiveClearErrors) {
  auto lay = layout_from_patch_mask(at::zeros({1, 4}), 2, 2, 2);
  auto map = neighbour_map(lay, 3);
  auto x = at::randn({lay.num_sites, 3});
  EXPECT_THROW(sparse_depthwise_conv(x, map, at::randn({4, 1, 3, 3}), at::Tensor()), CheckError);
  EXPECT_THROW(sparse_depthwise_conv(x, neighbour_map(lay, 5), at::randn({3, 1, 3, 3}), at::Tensor()), CheckError);
  EXPECT_THROW(sparse_depthwise_conv(x.to(at::kDouble), map, at::randn({3, 1, 3, 3}), at::Tensor()), CheckError);
  EXPECT_THROW(sparse_grn(x, lay.offsets, at::zeros({4}), at::zeros({3})), CheckError);
  EXPECT_THROW(sparse_stem_conv(at::randn({1, 3, 8, 8}), lay, at::randn({5, 3, 4, 4}), at::Tensor()), CheckError);
  EXPECT_THROW(densify(at::randn({lay.num_sites + 1, 3}), lay), CheckError);
  try {
    sparse_depthwise_conv(x, map, at::randn({4, 1, 3, 3}), at::Tensor());
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("channels"), std::string::npos) << e.what();
  }
}

// --- generic (ATen-only) path vs the CPU kernels --------------------------------

// Runs `f` (building its own leaves from `inputs`) in `mode`; returns the
// output and the gradients of sum(out * r) for every input.
std::vector<at::Tensor> run_in_mode(KernelMode mode, const std::function<at::Tensor(std::vector<at::Tensor>&)>& f,
                                    const std::vector<at::Tensor>& inputs) {
  ScopedKernelMode scoped(mode);
  EXPECT_EQ(kernel_path(inputs[0]), mode == KernelMode::kAuto ? KernelPath::kCpu : KernelPath::kGeneric);
  std::vector<at::Tensor> leaves;
  for (const auto& t : inputs) leaves.push_back(leaf(t));
  auto out = f(leaves);
  auto r = seeded_randn(out.sizes(), 99, out.scalar_type());
  (out * r).sum().backward();
  std::vector<at::Tensor> result{out.detach()};
  for (const auto& l : leaves) result.push_back(l.grad());
  return result;
}

void expect_generic_matches_kernels(const std::function<at::Tensor(std::vector<at::Tensor>&)>& f,
                                    const std::vector<at::Tensor>& inputs, const std::string& what) {
  const auto dt = inputs[0].scalar_type();
  const double tol = dt == at::kDouble ? 1e-12 : 1e-6;
  auto fast = run_in_mode(KernelMode::kAuto, f, inputs);
  auto generic = run_in_mode(KernelMode::kGeneric, f, inputs);
  for (size_t q = 0; q < fast.size(); ++q) {
    ASSERT_TRUE(generic[q].defined() && fast[q].defined()) << what << " output/gradient " << q;
    EXPECT_EQ(generic[q].scalar_type(), fast[q].scalar_type()) << what << " " << q;
    CNX_EXPECT_CLOSE(generic[q], fast[q], tol, what + (q == 0 ? " output" : " gradient " + std::to_string(q)));
  }
}

class GenericVsKernels : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(GenericVsKernels, DepthwiseConvC40) {
  const auto dt = GetParam();
  auto mask = random_mask(3, 3, 4, 0.5, 61);
  mask[2].fill_(1);  // an empty sample
  auto lay = layout_from_patch_mask(mask, 3, 4, 4);
  auto map = neighbour_map(lay, 7);
  expect_generic_matches_kernels(
      [&](std::vector<at::Tensor>& in) { return sparse_depthwise_conv(in[0], map, in[1], in[2]); },
      {seeded_randn({lay.num_sites, 40}, 1, dt), seeded_randn({40, 1, 7, 7}, 2, dt), seeded_randn({40}, 3, dt)},
      "dwconv");
}

TEST_P(GenericVsKernels, Grn) {
  const auto dt = GetParam();
  auto mask = random_mask(3, 2, 3, 0.5, 62);
  mask[1].fill_(1);
  auto lay = layout_from_patch_mask(mask, 2, 3, 4);
  expect_generic_matches_kernels(
      [&](std::vector<at::Tensor>& in) { return sparse_grn(in[0], lay.offsets, in[1], in[2]); },
      {seeded_randn({lay.num_sites, 24}, 4, dt), seeded_randn({1, 1, 1, 24}, 5, dt),
       seeded_randn({1, 1, 1, 24}, 6, dt)},
      "grn");
}

TEST_P(GenericVsKernels, Downsample) {
  const auto dt = GetParam();
  auto mask = random_mask(2, 2, 3, 0.5, 63);
  auto fine = layout_from_patch_mask(mask, 2, 3, 4);
  auto coarse = layout_from_patch_mask(mask, 2, 3, 2);
  auto map = cell_map(fine, coarse, 2);
  expect_generic_matches_kernels(
      [&](std::vector<at::Tensor>& in) { return sparse_downsample_conv(in[0], map, in[1], in[2]); },
      {seeded_randn({fine.num_sites, 12}, 7, dt), seeded_randn({20, 12, 2, 2}, 8, dt), seeded_randn({20}, 9, dt)},
      "downsample");
}

TEST_P(GenericVsKernels, StemAndDensify) {
  const auto dt = GetParam();
  auto mask = random_mask(2, 2, 3, 0.5, 64);
  auto lay = layout_from_patch_mask(mask, 2, 3, 2);
  expect_generic_matches_kernels(
      [&](std::vector<at::Tensor>& in) { return densify(sparse_stem_conv(in[0], lay, in[1], in[2]), lay); },
      {seeded_randn({2, 3, 16, 24}, 10, dt), seeded_randn({8, 3, 4, 4}, 11, dt), seeded_randn({8}, 12, dt)},
      "stem + densify");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GenericVsKernels, ::testing::Values(at::kFloat, at::kDouble));

TEST(SparseKernelMode, PathsAndParsing) {
  {
    ScopedKernelMode mode(KernelMode::kAuto);
    EXPECT_EQ(kernel_path(at::zeros({1}, at::kFloat)), KernelPath::kCpu);
    EXPECT_EQ(kernel_path(at::zeros({1}, at::kDouble)), KernelPath::kCpu);
    EXPECT_EQ(kernel_path(at::zeros({1}, at::kBFloat16)), KernelPath::kGeneric);
    EXPECT_EQ(kernel_path(at::zeros({1}, at::kHalf)), KernelPath::kGeneric);
  }
  {
    ScopedKernelMode mode(KernelMode::kGeneric);
    EXPECT_EQ(kernel_path(at::zeros({1}, at::kFloat)), KernelPath::kGeneric);
  }
  EXPECT_EQ(parse_kernel_mode("generic", "test"), KernelMode::kGeneric);
  EXPECT_EQ(parse_kernel_mode("auto", "test"), KernelMode::kAuto);
  try {
    parse_kernel_mode("fast", "environment variable CNX_SPARSE_KERNELS");
    ADD_FAILURE() << "no error for an unknown mode";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("CNX_SPARSE_KERNELS"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("auto or generic"), std::string::npos) << e.what();
  }
}

// The process-wide default comes from CNX_SPARSE_KERNELS (CTest also runs
// this binary with CNX_SPARSE_KERNELS=generic).
TEST(SparseKernelMode, EnvironmentSetsDefault) {
  const char* env = std::getenv("CNX_SPARSE_KERNELS");
  const KernelMode expected = env != nullptr && *env != '\0' ? parse_kernel_mode(env, "env") : KernelMode::kAuto;
  EXPECT_EQ(kernel_mode(), expected) << "CNX_SPARSE_KERNELS=" << (env != nullptr ? env : "(unset)");
}

// --- index maps that are not contiguous ---------------------------------------

TEST(SparseOps, NonContiguousMapsGiveTheSameResult) {
  auto mask = random_mask(2, 2, 3, 0.5, 71);
  auto lay = layout_from_patch_mask(mask, 2, 3, 4);
  auto coarse = layout_from_patch_mask(mask, 2, 3, 2);
  auto map = neighbour_map(lay, 3);
  auto cells = cell_map(lay, coarse, 2);
  // Column-major copies and slices of wider maps: same values, other strides.
  auto map_t = map.t().contiguous().t();
  auto map_sliced = at::cat({map, map}, 1).narrow(1, 0, 9);
  auto cells_sliced = at::cat({cells, cells}, 1).narrow(1, 4, 4);
  ASSERT_FALSE(map_t.is_contiguous());
  ASSERT_FALSE(map_sliced.is_contiguous());
  ASSERT_FALSE(cells_sliced.is_contiguous());
  auto x = seeded_randn({lay.num_sites, 5}, 1, at::kDouble);
  auto w = seeded_randn({5, 1, 3, 3}, 2, at::kDouble);
  auto b = seeded_randn({5}, 3, at::kDouble);
  auto dw = seeded_randn({6, 5, 2, 2}, 4, at::kDouble);
  for (auto mode : {KernelMode::kAuto, KernelMode::kGeneric}) {
    ScopedKernelMode scoped(mode);
    auto ref = sparse_depthwise_conv(x, map, w, b);
    EXPECT_TRUE(sparse_depthwise_conv(x, map_t, w, b).equal(ref)) << kernel_mode_name(mode);
    EXPECT_TRUE(sparse_depthwise_conv(x, map_sliced, w, b).equal(ref)) << kernel_mode_name(mode);
    auto ds = sparse_downsample_conv(x, cells, dw, at::Tensor());
    EXPECT_TRUE(sparse_downsample_conv(x, cells_sliced, dw, at::Tensor()).equal(ds)) << kernel_mode_name(mode);
  }
  // Non-contiguous features and offsets too.
  auto xw = at::cat({x, x}, 1).narrow(1, 5, 5);
  ASSERT_FALSE(xw.is_contiguous());
  EXPECT_TRUE(sparse_depthwise_conv(xw, map_sliced, w, b).equal(sparse_depthwise_conv(x, map, w, b)));
  auto off = at::stack({lay.offsets, lay.offsets}, 1).select(1, 0);
  ASSERT_FALSE(off.is_contiguous());
  auto gm = seeded_randn({5}, 5, at::kDouble), bt = seeded_randn({5}, 6, at::kDouble);
  EXPECT_TRUE(sparse_grn(x, off, gm, bt).equal(sparse_grn(x, lay.offsets, gm, bt)));
}

// --- float16 / bfloat16 ----------------------------------------------------------

// A stem -> dwconv -> GRN -> downsample chain with bfloat16
// activations and float32 parameters (as autocast produces them) against the
// same chain in float32: outputs within the reduced precision, parameter
// gradients in float32.
TEST(SparseOps, ReducedPrecisionActivationsWithFloatParameters) {
  auto mask = random_mask(2, 2, 3, 0.5, 81);
  auto fine = layout_from_patch_mask(mask, 2, 3, 4);    // 8 x 12, image 32 x 48
  auto coarse = layout_from_patch_mask(mask, 2, 3, 2);  // 4 x 6
  auto img = seeded_randn({2, 3, 32, 48}, 1, at::kFloat);
  auto params = std::vector<at::Tensor>{seeded_randn({16, 3, 4, 4}, 2, at::kFloat) * 0.2,
                                        seeded_randn({16, 1, 7, 7}, 3, at::kFloat) * 0.2,
                                        seeded_randn({16}, 4, at::kFloat),
                                        seeded_randn({16}, 5, at::kFloat) * 0.5,
                                        seeded_randn({16}, 6, at::kFloat) * 0.5,
                                        seeded_randn({24, 16, 2, 2}, 7, at::kFloat) * 0.2};
  auto map = neighbour_map(fine, 7);
  auto cells = cell_map(fine, coarse, 2);
  auto run = [&](at::ScalarType act) {
    std::vector<at::Tensor> p;
    for (const auto& t : params) p.push_back(leaf(t));
    auto x = sparse_stem_conv(img.to(act), fine, p[0], at::Tensor());
    x = sparse_depthwise_conv(x, map, p[1], p[2]);
    x = sparse_grn(x, fine.offsets, p[3], p[4]);
    x = sparse_downsample_conv(x, cells, p[5], at::Tensor());
    auto d = densify(x, coarse);
    EXPECT_EQ(d.scalar_type(), act);
    d.to(at::kFloat).square().sum().backward();
    std::vector<at::Tensor> out{d.detach().to(at::kFloat)};
    for (const auto& t : p) {
      EXPECT_EQ(t.grad().scalar_type(), at::kFloat);
      out.push_back(t.grad());
    }
    return out;
  };
  auto ref = run(at::kFloat);
  // float16 matrix products are CUDA-only in LibTorch 1.13; the GPU test covers float16.
  for (auto act : {at::kBFloat16}) {
    auto got = run(act);
    const double tol = 4e-2;
    for (size_t q = 0; q < ref.size(); ++q) {
      CNX_EXPECT_CLOSE(got[q], ref[q], tol,
                       std::string(q == 0 ? "output" : "gradient ") + std::to_string(q) + " " + c10::toString(act));
    }
  }
}

// The chain under CPU bfloat16 autocast (float32 image and parameters, as a
// training step has them), backward outside the autocast region as usual:
// the cell convs' GEMMs and the depthwise conv run in bfloat16, GRN and
// densify follow the dtypes they get; results within bfloat16 precision of
// the float32 chain.
TEST(SparseOps, ChainUnderAutocast) {
  auto mask = random_mask(2, 2, 3, 0.5, 82);
  auto fine = layout_from_patch_mask(mask, 2, 3, 4);
  auto coarse = layout_from_patch_mask(mask, 2, 3, 2);
  auto img = seeded_randn({2, 3, 32, 48}, 1, at::kFloat);
  auto params = std::vector<at::Tensor>{seeded_randn({16, 3, 4, 4}, 2, at::kFloat) * 0.2,
                                        seeded_randn({16, 1, 7, 7}, 3, at::kFloat) * 0.2,
                                        seeded_randn({16}, 4, at::kFloat),
                                        seeded_randn({16}, 5, at::kFloat) * 0.5,
                                        seeded_randn({16}, 6, at::kFloat) * 0.5,
                                        seeded_randn({24, 16, 2, 2}, 7, at::kFloat) * 0.2};
  auto map = neighbour_map(fine, 7);
  auto cells = cell_map(fine, coarse, 2);
  auto run = [&](bool autocast) {
    std::vector<at::Tensor> p;
    for (const auto& t : params) p.push_back(leaf(t));
    at::Tensor d;
    {
      compat::AutocastGuard guard(at::kCPU, at::kBFloat16, autocast);
      auto x = sparse_stem_conv(img, fine, p[0], p[2]);
      x = sparse_depthwise_conv(x, map, p[1], p[2]);
      x = sparse_grn(x, fine.offsets, p[3], p[4]);
      x = sparse_downsample_conv(x, cells, p[5], at::Tensor());
      d = densify(x, coarse);
    }
    EXPECT_EQ(d.scalar_type(), autocast ? at::kBFloat16 : at::kFloat);
    d.to(at::kFloat).square().sum().backward();
    std::vector<at::Tensor> out{d.detach().to(at::kFloat)};
    for (const auto& t : p) {
      EXPECT_EQ(t.grad().scalar_type(), at::kFloat);
      out.push_back(t.grad());
    }
    return out;
  };
  auto ref = run(false);
  auto got = run(true);
  for (size_t q = 0; q < ref.size(); ++q) {
    CNX_EXPECT_CLOSE(got[q], ref[q], 4e-2, std::string(q == 0 ? "output" : "gradient ") + std::to_string(q));
  }
}

TEST(SparseOps, UnsupportedDtypesAreRejectedAtTheOp) {
  auto lay = layout_from_patch_mask(at::zeros({1, 4}), 2, 2, 2);
  auto map = neighbour_map(lay, 3);
  auto xi = at::ones({lay.num_sites, 3}, at::kInt);
  try {
    sparse_depthwise_conv(xi, map, at::randn({3, 1, 3, 3}), at::Tensor());
    ADD_FAILURE() << "int features accepted";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("float32, float64, float16 or bfloat16"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sparse_depthwise_conv"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sparse_grn(xi, lay.offsets, at::zeros({3}), at::zeros({3})), CheckError);
  EXPECT_THROW(sparse_stem_conv(at::ones({1, 3, 16, 16}, at::kInt), lay, at::randn({5, 3, 4, 4}), at::Tensor()),
               CheckError);
  // float64 parameters with float16 features: not the autocast pattern.
  EXPECT_THROW(sparse_depthwise_conv(at::randn({lay.num_sites, 3}).to(at::kHalf), map,
                                     at::randn({3, 1, 3, 3}, at::kDouble), at::Tensor()),
               CheckError);
}

}  // namespace
}  // namespace cnx::sparse_ops
