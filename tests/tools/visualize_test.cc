// cnx_visualize: panel geometry, pasted visible pixels, un-normalisation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "tests/tools/tools_test_util.h"
#include "tools/visualize/reconstruct.h"

namespace cnx::viz {
namespace {

using tools::testing::TempDir;

TEST(Visualize, PngHasFourPanelsAndVisiblePatchesOfPanelFourAreTheOriginal) {
  TempDir dir;
  const std::string index = tools::testing::write_colour_shards(dir.file("shards"), 3, 3, 40, 1, false, 5);
  const Normalization norm;
  std::vector<std::string> keys;
  const at::Tensor images = load_shard_images(index, 2, 64, norm, &keys);
  ASSERT_EQ(images.sizes(), (at::IntArrayRef{2, 3, 64, 64}));
  ASSERT_EQ(keys.size(), 2u);
  at::manual_seed(7);
  model::Fcmae net(tools::testing::tiny_fcmae_options());
  const at::Tensor mask = model::generate_mask(2, 2, 2, 0.5, 11);  // 2 of 4 patches masked
  const Panels p = reconstruct(*net, images, mask, norm);

  const int gap = 3;
  const data::Image row = compose_row(p, 1, gap);
  write_png(dir.file("row.png"), row);
  std::ifstream in(dir.file("row.png"), std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  data::Image back;
  std::string err;
  ASSERT_EQ(data::decode_image(bytes.data(), bytes.size(), data::ImageFormat::kPng, int64_t{1} << 24, {}, &back, &err),
            data::DecodeStatus::kOk)
      << err;
  ASSERT_EQ(back.width, 4 * 64 + 3 * gap);
  ASSERT_EQ(back.height, 64);
  ASSERT_EQ(back.channels, 3);

  auto px = [&](int panel, int y, int x, int c) {
    return back.pixels[(y * back.width + panel * (64 + gap) + x) * 3 + c];
  };
  const at::Tensor m = mask[1];
  int visible = 0, masked = 0;
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) {
      const bool is_masked = m[(y / 32) * 2 + x / 32].item<float>() > 0.5f;
      for (int c = 0; c < 3; ++c) {
        const uint8_t orig = p.original[1][y][x][c].item<uint8_t>();
        ASSERT_EQ(px(0, y, x, c), orig);
        if (is_masked) {
          ASSERT_EQ(px(1, y, x, c), 128);
          ASSERT_EQ(px(3, y, x, c), px(2, y, x, c));
        } else {
          ASSERT_EQ(px(1, y, x, c), orig);
          ASSERT_EQ(px(3, y, x, c), orig) << "panel 4 visible pixel differs from the original at " << y << "," << x;
        }
      }
      (is_masked ? masked : visible)++;
    }
  }
  EXPECT_EQ(masked, 2 * 32 * 32);
  EXPECT_EQ(visible, 2 * 32 * 32);
  // The white gap columns.
  EXPECT_EQ(px(1, 10, -1, 0), 255);

  const data::Image grid = stack_rows({compose_row(p, 0, gap), row}, gap);
  EXPECT_EQ(grid.height, 2 * 64 + gap);
  EXPECT_EQ(grid.width, row.width);
}

TEST(Visualize, ReconstructionIsPredictionUnnormalisedWithEachPatchsStatistics) {
  TempDir dir;
  const std::string index = tools::testing::write_colour_shards(dir.file("shards"), 1, 1, 64, 1, false, 6);
  const Normalization norm;
  const at::Tensor images = load_shard_images(index, 1, 64, norm, nullptr);
  at::manual_seed(8);
  model::Fcmae net(tools::testing::tiny_fcmae_options());
  const at::Tensor mask = model::generate_mask(1, 2, 2, 0.75, 3);
  const Panels p = reconstruct(*net, images, mask, norm);
  net->eval();
  const at::Tensor pred = net->forward(images, mask).pred.detach();  // [1, 32*32*3, 2, 2]
  // Independent indexing: patch (py, px), pixel (y, x), channel c sits at
  // channel (y * 32 + x) * 3 + c of pred (einsum nchpwq->nhwpqc).
  for (int py = 0; py < 2; ++py) {
    for (int pxi = 0; pxi < 2; ++pxi) {
      const at::Tensor patch = images[0].narrow(1, py * 32, 32).narrow(2, pxi * 32, 32);  // [3, 32, 32]
      const double mean = patch.mean().item<double>();
      const double var = patch.var().item<double>();  // unbiased, over all 3*32*32 values
      for (int y : {0, 7, 31}) {
        for (int x : {0, 19}) {
          for (int c = 0; c < 3; ++c) {
            const double z = pred[0][(y * 32 + x) * 3 + c][py][pxi].item<double>();
            const double v = (z * std::sqrt(var + 1e-6) + mean) * norm.std[c] + norm.mean[c];
            const double expected = std::min(255.0, std::max(0.0, std::round(v * 255.0)));
            EXPECT_NEAR(p.recon[0][py * 32 + y][pxi * 32 + x][c].item<uint8_t>(), expected, 1.0)
                << "patch " << py << "," << pxi << " pixel " << y << "," << x << " channel " << c;
          }
        }
      }
    }
  }
}

TEST(Visualize, RejectsBadShapes) {
  model::Fcmae net(tools::testing::tiny_fcmae_options());
  EXPECT_THROW(reconstruct(*net, at::zeros({1, 3, 48, 64}), at::zeros({1, 2}), {}), std::exception);
  EXPECT_THROW(reconstruct(*net, at::zeros({1, 3, 64, 64}), at::zeros({1, 3}), {}), std::exception);
}

}  // namespace
}  // namespace cnx::viz
