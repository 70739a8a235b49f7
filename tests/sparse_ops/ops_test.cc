// Sparse ops against dense LibTorch ops (float and double) and against
// finite differences (double); layouts, maps and error handling.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/check.h"
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
  const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
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
  const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
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
  const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
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
  const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
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

TEST(SparseOpsGradcheck, DepthwiseConv) {
  auto mask = random_mask(2, 2, 2, 0.4, 51);
  auto lay = layout_from_patch_mask(mask, 2, 2, 2);
  auto map = neighbour_map(lay, 3);
  auto x = leaf(seeded_randn({lay.num_sites, 3}, 1, at::kDouble));
  auto w = leaf(seeded_randn({3, 1, 3, 3}, 2, at::kDouble));
  auto b = leaf(seeded_randn({3}, 3, at::kDouble));
  testing::finite_difference_check([&] { return sparse_depthwise_conv(x, map, w, b); }, {x, w, b},
                                   {"features", "weight", "bias"});
}

TEST(SparseOpsGradcheck, Grn) {
  auto mask = random_mask(2, 2, 2, 0.4, 52);
  mask[0][0][0] = 0;
  auto lay = layout_from_patch_mask(mask, 2, 2, 2);
  auto x = leaf(seeded_randn({lay.num_sites, 4}, 4, at::kDouble));
  auto g = leaf(seeded_randn({1, 1, 1, 4}, 5, at::kDouble));
  auto b = leaf(seeded_randn({1, 1, 1, 4}, 6, at::kDouble));
  testing::finite_difference_check([&] { return sparse_grn(x, lay.offsets, g, b); }, {x, g, b},
                                   {"features", "gamma", "beta"});
}

TEST(SparseOpsGradcheck, Downsample) {
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

TEST(SparseOpsGradcheck, Stem) {
  auto mask = random_mask(2, 2, 2, 0.4, 54);
  mask[1][1][1] = 0;
  auto lay = layout_from_patch_mask(mask, 2, 2, 1);
  auto img = leaf(seeded_randn({2, 2, 8, 8}, 10, at::kDouble));
  auto w = leaf(seeded_randn({3, 2, 4, 4}, 11, at::kDouble));
  auto b = leaf(seeded_randn({3}, 12, at::kDouble));
  testing::finite_difference_check([&] { return sparse_stem_conv(img, lay, w, b); }, {img, w, b},
                                   {"image", "weight", "bias"});
}

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

}  // namespace
}  // namespace cnx::sparse_ops
