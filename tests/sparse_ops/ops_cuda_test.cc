// CPU vs CUDA for every sparse op, forward and backward (label gpu; skipped
// when LibTorch has no usable CUDA device).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>

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

struct Pair {
  at::Tensor cpu, cuda;
};

Pair leaves(const at::Tensor& t) {
  return {t.detach().clone().requires_grad_(true), t.detach().to(at::kCUDA).requires_grad_(true)};
}

TEST(SparseOpsCuda, MatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (auto dt : {at::kFloat, at::kDouble}) {
    const double tol = dt == at::kDouble ? 1e-10 : 1e-5;
    auto mask = random_mask(3, 3, 4, 0.5, 5);
    auto fine_c = layout_from_patch_mask(mask, 3, 4, 8);
    auto coarse_c = layout_from_patch_mask(mask, 3, 4, 4);
    auto fine_g = layout_from_patch_mask(mask, 3, 4, 8, at::kCUDA);
    auto coarse_g = layout_from_patch_mask(mask, 3, 4, 4, at::kCUDA);
    auto img = leaves(seeded_randn({3, 3, 96, 128}, 1, dt));
    auto stem_w = leaves(seeded_randn({6, 3, 4, 4}, 2, dt));
    auto dw_w = leaves(seeded_randn({6, 1, 7, 7}, 3, dt));
    auto dw_b = leaves(seeded_randn({6}, 4, dt));
    auto gm = leaves(seeded_randn({1, 1, 1, 6}, 5, dt));
    auto bt = leaves(seeded_randn({1, 1, 1, 6}, 6, dt));
    auto ds_w = leaves(seeded_randn({10, 6, 2, 2}, 7, dt));
    auto run = [&](bool cuda) {
      auto pick = [&](const Pair& p) { return cuda ? p.cuda : p.cpu; };
      const auto& fine = cuda ? fine_g : fine_c;
      const auto& coarse = cuda ? coarse_g : coarse_c;
      auto x = sparse_stem_conv(pick(img), fine, pick(stem_w), at::Tensor());
      x = sparse_depthwise_conv(x, neighbour_map(fine, 7), pick(dw_w), pick(dw_b));
      x = sparse_grn(x, fine.offsets, pick(gm), pick(bt));
      x = sparse_downsample_conv(x, cell_map(fine, coarse, 2), pick(ds_w), at::Tensor());
      auto d = densify(x, coarse);
      (d * d).sum().backward();
      return d;
    };
    auto out_c = run(false);
    auto out_g = run(true);
    CNX_EXPECT_CLOSE(out_g.cpu(), out_c, tol, "output");
    for (const auto* p : {&img, &stem_w, &dw_w, &dw_b, &gm, &bt, &ds_w}) {
      CNX_EXPECT_CLOSE(p->cuda.grad().cpu(), p->cpu.grad(), tol, "gradient");
    }
  }
}

}  // namespace
}  // namespace cnx::sparse_ops
