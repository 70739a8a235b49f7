// The built-in font, the chart renderer, column labels and the worker
// progress-log parser (tools/visualize/plot.h, font.h).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tools/visualize/font.h"
#include "tools/visualize/plot.h"

namespace cnx::viz {
namespace {

int ink(const data::Image& img, int x0, int y0, int x1, int y1) {
  int n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) n += img.pixels[(static_cast<size_t>(y) * img.width + x) * 3] < 128 ? 1 : 0;
  return n;
}

TEST(Font, EveryLabelCharacterHasItsOwnGlyph) {
  const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:-+=/%()[]_'#?!<>|";
  for (char a : chars) {
    int on = 0;
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int k = 0; k < kGlyphWidth; ++k) on += glyph_pixel(a, r, k) ? 1 : 0;
    EXPECT_GT(on, 0) << "glyph '" << a << "' is blank";
    for (char b : chars) {
      if (a >= b) continue;
      bool differ = false;
      for (int r = 0; r < kGlyphHeight && !differ; ++r)
        for (int k = 0; k < kGlyphWidth && !differ; ++k) differ = glyph_pixel(a, r, k) != glyph_pixel(b, r, k);
      EXPECT_TRUE(differ) << "'" << a << "' and '" << b << "' look the same";
    }
  }
  for (int r = 0; r < kGlyphHeight; ++r)
    for (int k = 0; k < kGlyphWidth; ++k) {
      EXPECT_EQ(glyph_pixel('a', r, k), glyph_pixel('A', r, k));  // lower case drawn as capitals
      EXPECT_EQ(glyph_pixel('~', r, k), glyph_pixel('?', r, k));  // unknown -> '?'
      EXPECT_FALSE(glyph_pixel(' ', r, k));
    }
  EXPECT_EQ(text_width("AB", 1), 11);
  EXPECT_EQ(text_width("AB", 2), 22);
  EXPECT_EQ(text_width("", 3), 0);
}

TEST(Font, DrawTextInksOnlyItsBoxAndClips) {
  data::Image img{40, 20, 3, std::vector<uint8_t>(40 * 20 * 3, 255)};
  draw_text(img, 2, 3, "HI", {0, 0, 0}, 1);
  EXPECT_GT(ink(img, 2, 3, 2 + text_width("HI"), 3 + kGlyphHeight), 10);
  EXPECT_EQ(ink(img, 0, 0, 40, 20), ink(img, 2, 3, 2 + text_width("HI"), 3 + kGlyphHeight));
  draw_text(img, 35, 15, "WWWW", {0, 0, 0}, 3);  // mostly outside: clipped, no crash
}

TEST(Plot, ChartsHaveTheRequestedSizeAndDrawTheSeries) {
  Series s{"loss", {1, 2, 3, 4}, {4, 3, 2, 1}, {255, 0, 0}};
  const data::Image img = render_charts({Chart{"loss", "step", {s}}, Chart{"empty", "step", {}}}, 200, 150);
  EXPECT_EQ(img.width, 400);
  EXPECT_EQ(img.height, 150);
  int red = 0;
  for (size_t p = 0; p < img.pixels.size(); p += 3) red += img.pixels[p] == 255 && img.pixels[p + 1] == 0 ? 1 : 0;
  EXPECT_GT(red, 100);
  EXPECT_THROW(render_charts({Chart{"bad", "x", {Series{"s", {1, 2}, {1}}}}}), std::invalid_argument);
  EXPECT_EQ(axis_label(0.00123), "1.23E-03");
  EXPECT_EQ(axis_label(12.5), "12.5");
  EXPECT_EQ(axis_label(1265), "1265");
}

TEST(Plot, ColumnLabelsAddABandAndKeepTheGrid) {
  data::Image grid{4 * 64 + 3 * 4, 30, 3, std::vector<uint8_t>((4 * 64 + 12) * 30 * 3, 7)};
  const data::Image out =
      add_column_labels(grid, 64, 4, {"original", "masked input", "prediction", "prediction + visible"});
  ASSERT_GT(out.height, grid.height);
  const int band = out.height - grid.height;
  EXPECT_GE(band, 2 * kGlyphHeight);  // "prediction + visible" needs two lines at 64 px
  EXPECT_TRUE(std::equal(grid.pixels.begin(), grid.pixels.end(), out.pixels.begin() + band * out.width * 3));
  for (int k = 0; k < 4; ++k) EXPECT_GT(ink(out, k * 68, 0, k * 68 + 64, band), 20) << "column " << k;
}

TEST(Plot, ParsesWorkerProgressLines) {
  const std::string log =
      "2026-12-02 15:03:30.060 I [worker r0] step 250/328 (76.2%) epoch 0.27 | loss 0.8576 | lr 6.06e-05 | 21.5 "
      "img/s | data 2% fwd 23% | 2.980 s/step | ETA 3m52s\n"
      "some other line | loss 1.0\n"
      "I [worker r0] step 260 epoch 0.28 | loss nan | lr 5.00e-05 | 30.0 img/s | data 1%\n";
  const ProgressLog p = parse_progress_log(log);
  ASSERT_EQ(p.step.size(), 2u);
  EXPECT_EQ(p.step[0], 250);
  EXPECT_DOUBLE_EQ(p.epoch[0], 0.27);
  EXPECT_DOUBLE_EQ(p.loss[0], 0.8576);
  EXPECT_DOUBLE_EQ(p.lr[0], 6.06e-05);
  EXPECT_DOUBLE_EQ(p.images_per_s[0], 21.5);
  EXPECT_EQ(p.step[1], 260);
  EXPECT_TRUE(std::isnan(p.loss[1]));
  const data::Image img = render_progress(p);
  EXPECT_EQ(img.width, 3 * 420);
}

}  // namespace
}  // namespace cnx::viz
