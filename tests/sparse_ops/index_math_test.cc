// The index arithmetic the CUDA kernels share with the CPU code
// (sparse_ops/index_math.h), checked here on the CPU against direct
// constructions: the kernels run exactly these functions.
#include "sparse_ops/index_math.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace cnx::sparse_ops::detail {
namespace {

TEST(IndexMath, SegmentOfMatchesALinearScanWithEmptySegments) {
  // Segments of sizes 3, 0, 1, 0, 0, 5, 2 (empty ones in the middle).
  const std::vector<int64_t> sizes{3, 0, 1, 0, 0, 5, 2};
  std::vector<int64_t> offsets{0};
  for (int64_t s : sizes) offsets.push_back(offsets.back() + s);
  const int64_t nseg = static_cast<int64_t>(sizes.size());
  int64_t row = 0;
  for (int64_t s = 0; s < nseg; ++s) {
    for (int64_t r = 0; r < sizes[s]; ++r, ++row) {
      EXPECT_EQ(segment_of(offsets.data(), nseg, row), s) << "row " << row;
    }
  }
  EXPECT_EQ(row, offsets.back());
  // One segment holding every row.
  const std::vector<int64_t> one{0, 4};
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(segment_of(one.data(), 1, i), 0);
}

TEST(IndexMath, PatchPixelAndColumnMatchAnExplicitImage) {
  const int64_t n = 2, cin = 3, k = 4, h = 8, w = 12, hc = h / k, wc = w / k;
  // Every pixel of an explicit (n, cin, h, w) image is reached once, from the
  // patch (site, column) that holds it.
  std::vector<int> seen(n * cin * h * w, 0);
  for (int64_t p = 0; p < n * hc * wc; ++p) {
    const int64_t img = p / (hc * wc), y = (p / wc) % hc, x = p % wc;
    for (int64_t col = 0; col < cin * k * k; ++col) {
      const PatchColumn c = patch_column(col, k);
      EXPECT_EQ((c.ch * k + c.ky) * k + c.kx, col);
      const int64_t pix = patch_pixel(p, c.ch, c.ky, c.kx, cin, h, w, k);
      const int64_t expect = ((img * cin + c.ch) * h + (y * k + c.ky)) * w + (x * k + c.kx);
      ASSERT_EQ(pix, expect) << "site " << p << " column " << col;
      ++seen[pix];
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], 1) << "pixel " << i;
}

}  // namespace
}  // namespace cnx::sparse_ops::detail
