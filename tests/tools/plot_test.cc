// The built-in font, the chart renderer, column labels and the worker
// progress-log parser (tools/visualize/plot.h, font.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

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

// On a log axis 100, 10 and 1 are equally spaced; on a linear one 10 and 1
// nearly coincide. The marker centres are found by colour.
TEST(Plot, LogAxisSpacesDecadesEqually) {
  auto marker_rows = [](bool log_y) {
    Chart c{"t", "x", {Series{"", {0, 1, 2}, {100, 10, 1}, {200, 0, 0}, true}}};
    c.log_y = log_y;
    const data::Image img = render_charts({c}, 420, 300);
    std::vector<double> rows;  // mean row of the marker pixels, per marker (left to right)
    std::vector<std::pair<int, int>> px;
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x) {
        const uint8_t* p = &img.pixels[(static_cast<size_t>(y) * img.width + x) * 3];
        if (p[0] == 200 && p[1] == 0 && p[2] == 0) px.push_back({x, y});
      }
    int xmin = img.width, xmax = 0;
    for (auto [x, y] : px) xmin = std::min(xmin, x), xmax = std::max(xmax, x);
    for (int k = 0; k < 3; ++k) {
      const int cx = xmin + 2 + k * (xmax - xmin - 4) / 2;
      double sum = 0;
      int n = 0;
      for (auto [x, y] : px)
        if (x == cx) sum += y, ++n;
      rows.push_back(n ? sum / n : -1);
    }
    return rows;
  };
  const std::vector<double> lg = marker_rows(true), lin = marker_rows(false);
  ASSERT_EQ(lg.size(), 3u);
  EXPECT_NEAR(lg[1] - lg[0], lg[2] - lg[1], 2.0);  // equal steps per decade
  EXPECT_GT(lg[1] - lg[0], 50);
  EXPECT_GT(lin[1] - lin[0], 8 * (lin[2] - lin[1]));  // linear: 90 vs 9
}

TEST(Plot, ParsesATableAndPlotsItsColumns) {
  const Table t = parse_tsv("# downstream top-1\nsteps\tprobe\tft\n0\t77.5\t70.1\n\n1125\t80.0\t\n4498\t81.5\t74.0\n");
  ASSERT_EQ(t.columns, (std::vector<std::string>{"steps", "probe", "ft"}));
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_DOUBLE_EQ(t.rows[2][0], 4498);
  EXPECT_DOUBLE_EQ(t.rows[1][1], 80.0);
  EXPECT_TRUE(std::isnan(t.rows[1][2]));  // an empty cell: no point
  EXPECT_EQ(t.column("ft"), 2u);
  EXPECT_THROW(t.column("nope"), std::invalid_argument);
  const data::Image img = render_table(t, "steps", {"probe", "ft"});
  EXPECT_EQ(img.width, 2 * 420);
  EXPECT_EQ(img.height, 300);
  EXPECT_GT(ink(img, 0, 0, 420, 300), 0);
  EXPECT_GT(ink(img, 420, 0, 840, 300), 0);
  EXPECT_THROW(render_table(t, "steps", {"missing"}), std::invalid_argument);
}

TEST(Plot, ATableWithABadCellOrRowNamesTheLine) {
  try {
    parse_tsv("a\tb\n1\t2\n3\tx4\n");
    FAIL() << "a non-number cell was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
  try {
    parse_tsv("a\tb\n1\n");
    FAIL() << "a short row was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_tsv("# only a comment\n"), std::invalid_argument);
}

}  // namespace
}  // namespace cnx::viz
