// decode_jpeg_region (data/image_codec.h) against the oracle "decode_image at
// the same scale, then crop": identical pixels on every chroma subsampling,
// gray, odd sizes, every cheap DCT scale, boxes at each edge and 1 pixel wide;
// the same statuses on truncated and damaged files; and decode_and_transform
// with crop_decode on equal, float for float, to crop_decode off.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "data/image_codec.h"
#include "data/transform.h"
#include "tests/data/data_fixtures.h"

namespace cnx::data {
namespace {

struct Coded {
  std::string name;
  std::vector<uint8_t> bytes;
};

// Odd and even sizes, each subsampling (4:1:1 and 4:4:0 too) and gray.
std::vector<Coded> coded_images() {
  const struct {
    ChromaSubsampling ss;
    const char* name;
  } kinds[] = {{ChromaSubsampling::k420, "420"},
               {ChromaSubsampling::k422, "422"},
               {ChromaSubsampling::k444, "444"},
               {ChromaSubsampling::k440, "440"},
               {ChromaSubsampling::k411, "411"}};
  const int sizes[][2] = {{97, 61}, {203, 157}, {64, 48}, {9, 13}};
  std::vector<Coded> out;
  uint64_t seed = 100;
  for (const auto& sz : sizes) {
    for (const auto& k : kinds) {
      const Image im = testing::synth_image(sz[0], sz[1], 3, ++seed);
      out.push_back(
          {std::string(k.name) + "_" + std::to_string(sz[0]) + "x" + std::to_string(sz[1]), encode_jpeg(im, 90, k.ss)});
    }
    const Image g = testing::synth_image(sz[0], sz[1], 1, ++seed);
    out.push_back({"gray_" + std::to_string(sz[0]) + "x" + std::to_string(sz[1]), encode_jpeg(g, 90)});
  }
  return out;
}

const ScaleFactor kScales[] = {{1, 1}, {1, 2}, {3, 8}, {1, 4}, {1, 8}};

// The rectangle's pixels of `region` equal those of `full`; "" or the first difference.
std::string compare_rect(const Image& full, const JpegRegion& region, int x, int y, int w, int h) {
  const Image& r = region.image;
  if (region.full_width != full.width || region.full_height != full.height) return "full size differs";
  if (r.channels != full.channels) return "channels differ";
  if (region.x0 > x || region.y0 > y || region.x0 + r.width < x + w || region.y0 + r.height < y + h) {
    return "region [" + std::to_string(region.x0) + "+" + std::to_string(r.width) + ", " + std::to_string(region.y0) +
           "+" + std::to_string(r.height) + "] misses the rectangle";
  }
  if (r.pixels.size() != static_cast<size_t>(r.width) * r.height * r.channels) return "pixel buffer size";
  const int C = full.channels;
  for (int yy = y; yy < y + h; ++yy) {
    for (int xx = x; xx < x + w; ++xx) {
      for (int c = 0; c < C; ++c) {
        const uint8_t a = full.pixels[(static_cast<size_t>(yy) * full.width + xx) * C + c];
        const uint8_t b = r.pixels[(static_cast<size_t>(yy - region.y0) * r.width + (xx - region.x0)) * C + c];
        if (a != b) {
          return "pixel (" + std::to_string(xx) + ", " + std::to_string(yy) + ") channel " + std::to_string(c) +
                 ": full " + std::to_string(a) + ", region " + std::to_string(b);
        }
      }
    }
  }
  return "";
}

// CMake finds jpeglib.h on Debian 12 (libjpeg62-turbo-dev, scripts/setup.sh);
// a build without it decodes whole images: the equalities below still hold,
// the geometry of LargeImageDecodesFewerPixelsAndMatches does not.
#define CNX_SKIP_WITHOUT_LIBJPEG()                                                                   \
  if (!jpeg_region_decode_available()) {                                                             \
    GTEST_SKIP() << "built without libjpeg's jpeglib.h: decode_jpeg_region decodes the whole image"; \
  }

TEST(JpegRegion, EqualsFullDecodeThenCrop) {
  int checked = 0, smaller = 0;
  for (const Coded& f : coded_images()) {
    for (const ScaleFactor sf : kScales) {
      Image full;
      std::string err;
      ASSERT_EQ(decode_image(f.bytes.data(), f.bytes.size(), ImageFormat::kJpeg, 1 << 24, sf, &full, &err),
                DecodeStatus::kOk)
          << f.name << ": " << err;
      const int W = full.width, H = full.height;
      std::vector<std::array<int, 4>> rects = {
          {0, 0, W, H},                                                    // whole
          {0, 0, std::max(1, W / 3), std::max(1, H / 3)},                  // top-left corner
          {W - std::max(1, W / 3), H - std::max(1, H / 2), W / 3, H / 2},  // bottom-right corner
          {0, H / 4, std::max(1, W / 2), std::max(1, H / 2)},              // touches the left edge
          {W / 3, 0, std::max(1, W / 3), std::max(1, H / 3)},              // touches the top edge
          {W / 2, H / 3, W - W / 2, std::max(1, H / 3)},                   // touches the right edge
          {W / 4, H / 2, std::max(1, W / 2), H - H / 2},                   // touches the bottom edge
          {W / 2, 0, 1, H},                                                // 1 pixel wide, full height
          {0, H / 2, W, 1},                                                // 1 pixel tall
          {W - 1, H - 1, 1, 1},                                            // last pixel
          {W / 2, H / 2, 1, 1},                                            // middle pixel
      };
      SplitMix64 rng(static_cast<uint64_t>(W * 1000 + H + sf.den));
      for (int i = 0; i < 24; ++i) {
        const int x = static_cast<int>(rng.below(static_cast<uint64_t>(W)));
        const int y = static_cast<int>(rng.below(static_cast<uint64_t>(H)));
        rects.push_back({x, y, 1 + static_cast<int>(rng.below(static_cast<uint64_t>(W - x))),
                         1 + static_cast<int>(rng.below(static_cast<uint64_t>(H - y)))});
      }
      for (const auto& r : rects) {
        const int x = std::clamp(r[0], 0, W - 1), y = std::clamp(r[1], 0, H - 1);
        const int w = std::clamp(r[2], 1, W - x), h = std::clamp(r[3], 1, H - y);
        JpegRegion region;
        ASSERT_EQ(decode_jpeg_region(f.bytes.data(), f.bytes.size(), 1 << 24, sf, x, y, w, h, &region, &err),
                  DecodeStatus::kOk)
            << f.name << ": " << err;
        const std::string diff = compare_rect(full, region, x, y, w, h);
        ASSERT_EQ(diff, "") << f.name << " at " << sf.num << "/" << sf.den << ", rect " << x << "," << y << " " << w
                            << "x" << h;
        ++checked;
        if (static_cast<int64_t>(region.image.width) * region.image.height < static_cast<int64_t>(W) * H) ++smaller;
      }
    }
  }
  EXPECT_EQ(checked, 24 * 5 * 35);
  if (jpeg_region_decode_available()) {
    EXPECT_GT(smaller, checked / 2);  // the region path really decodes less
  }
}

TEST(JpegRegion, LargeImageDecodesFewerPixelsAndMatches) {
  CNX_SKIP_WITHOUT_LIBJPEG();
  // 4:2:0 photo-like 640x480: an iMCU is 16 px, so the margins and the
  // alignment cost at most 15 + 2 + 2 columns and no row.
  const auto jpg = encode_jpeg(testing::synth_image(640, 480, 3, 7), 90);
  Image full;
  std::string err;
  ASSERT_EQ(decode_image(jpg.data(), jpg.size(), ImageFormat::kJpeg, 1 << 24, {}, &full, &err), DecodeStatus::kOk);
  JpegRegion region;
  ASSERT_EQ(decode_jpeg_region(jpg.data(), jpg.size(), 1 << 24, {}, 301, 203, 100, 50, &region, &err),
            DecodeStatus::kOk)
      << err;
  EXPECT_EQ(compare_rect(full, region, 301, 203, 100, 50), "");
  EXPECT_EQ(region.x0, 288);  // 301 - 2 down to a multiple of 16
  EXPECT_EQ(region.image.width, 301 + 100 + 2 - 288);
  EXPECT_EQ(region.y0, 203);
  EXPECT_EQ(region.image.height, 50);
}

TEST(JpegRegion, TruncatedAndDamagedFilesGiveTheFullDecodeStatus) {
  const auto jpg = encode_jpeg(testing::synth_image(160, 120, 3, 21), 85);
  std::string err;
  // Cut anywhere: the same status as a whole decode, whatever the rectangle
  // (a top-left one lies in the data that is still there).
  for (size_t cut = 1; cut < jpg.size(); cut += 97) {
    Image full;
    const DecodeStatus want = decode_image(jpg.data(), cut, ImageFormat::kJpeg, 1 << 24, {}, &full, &err);
    for (const auto& r : {std::array<int, 4>{0, 0, 20, 10}, std::array<int, 4>{100, 90, 50, 20}}) {
      JpegRegion region;
      const DecodeStatus got = decode_jpeg_region(jpg.data(), cut, 1 << 24, {}, r[0], r[1], r[2], r[3], &region, &err);
      EXPECT_EQ(got, want) << "cut at " << cut << ": " << decode_status_name(got) << " vs " << decode_status_name(want);
      if (got != DecodeStatus::kOk) {
        EXPECT_FALSE(err.empty());
      }
    }
  }
  // Byte flips and insertions (the EOI marker kept): the same status as the
  // whole decode (the region decode entropy-decodes the whole file), and
  // where both succeed, the same pixels.
  int both_ok = 0, both_bad = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    SplitMix64 rng(1000 + trial);
    std::vector<uint8_t> b = jpg;
    const int edits = 1 + static_cast<int>(rng.below(4));
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng.below(b.size() - 2);
      if (rng.below(2) == 0) {
        b[at] = static_cast<uint8_t>(rng.next());
      } else {
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng.next()));
      }
    }
    Image full;
    const DecodeStatus want = decode_image(b.data(), b.size(), ImageFormat::kJpeg, 1 << 24, {}, &full, &err);
    const int x = static_cast<int>(rng.below(120)), y = static_cast<int>(rng.below(90));
    JpegRegion region;
    const DecodeStatus got = decode_jpeg_region(b.data(), b.size(), 1 << 24, {}, x, y, 40, 30, &region, &err);
    ASSERT_EQ(got, want) << "trial " << trial << ": " << decode_status_name(got) << " vs " << decode_status_name(want)
                         << " (" << err << ")";
    if (want == DecodeStatus::kOk) {
      const int cx = std::min(x, full.width - 1), cy = std::min(y, full.height - 1);
      ASSERT_EQ(compare_rect(full, region, cx, cy, std::min(40, full.width - cx), std::min(30, full.height - cy)), "")
          << "trial " << trial;
      ++both_ok;
    } else {
      EXPECT_FALSE(err.empty());
      ++both_bad;
    }
  }
  EXPECT_GT(both_ok, 10);
  EXPECT_GT(both_bad, 10);
}

TEST(JpegRegion, AFileWithoutItsTablesDoesNotBorrowAnEarlierImages) {
  // Table 0 of the luma component relabelled as table 2: "Quantization table
  // 0x00 was not defined", however many images this thread decoded before.
  const auto good = encode_jpeg(testing::synth_image(48, 32, 3, 41), 90);
  std::vector<uint8_t> bad = good;
  size_t at = 0;
  while (at + 4 < bad.size() && !(bad[at] == 0xFF && bad[at + 1] == 0xDB)) ++at;
  ASSERT_LT(at + 4, bad.size());
  ASSERT_EQ(bad[at + 4] & 0x0F, 0);
  bad[at + 4] = static_cast<uint8_t>((bad[at + 4] & 0xF0) | 2);
  Image out;
  std::string err;
  const DecodeStatus alone = decode_image(bad.data(), bad.size(), ImageFormat::kJpeg, 1 << 24, {}, &out, &err);
  EXPECT_EQ(alone, DecodeStatus::kCorrupt) << err;
  ASSERT_EQ(decode_image(good.data(), good.size(), ImageFormat::kJpeg, 1 << 24, {}, &out, &err), DecodeStatus::kOk);
  EXPECT_EQ(decode_image(bad.data(), bad.size(), ImageFormat::kJpeg, 1 << 24, {}, &out, &err), alone) << err;
  JpegRegion region;
  EXPECT_EQ(decode_jpeg_region(bad.data(), bad.size(), 1 << 24, {}, 8, 8, 8, 8, &region, &err), alone) << err;
}

TEST(JpegRegion, TransformWithCropDecodeEqualsWithout) {
  std::vector<Coded> files = coded_images();
  files.push_back({"420_640x480", encode_jpeg(testing::synth_image(640, 480, 3, 31), 90)});
  files.push_back({"422_500x375", encode_jpeg(testing::synth_image(500, 375, 3, 32), 90, ChromaSubsampling::k422)});
  files.push_back({"444_333x500", encode_jpeg(testing::synth_image(333, 500, 3, 33), 90, ChromaSubsampling::k444)});
  files.push_back({"gray_480x360", encode_jpeg(testing::synth_image(480, 360, 1, 34), 90)});
  int compared = 0;
  for (const Coded& f : files) {
    for (const int64_t size : {32, 96, 224}) {
      for (const bool dct : {true, false}) {
        TransformOptions on;
        on.size = size;
        on.scale_lo = 0.08;
        on.dct_scaling = dct;
        TransformOptions off = on;
        off.crop_decode = false;
        for (uint64_t s = 0; s < 12; ++s) {
          const auto a =
              decode_and_transform(f.bytes.data(), f.bytes.size(), ImageFormat::kJpeg, sample_rng(s, 1, f.name), on);
          const auto b =
              decode_and_transform(f.bytes.data(), f.bytes.size(), ImageFormat::kJpeg, sample_rng(s, 1, f.name), off);
          ASSERT_EQ(a.status, DecodeStatus::kOk) << f.name << ": " << a.error;
          ASSERT_EQ(b.status, DecodeStatus::kOk) << f.name << ": " << b.error;
          ASSERT_EQ(a.jpeg_scale.num * b.jpeg_scale.den, b.jpeg_scale.num * a.jpeg_scale.den);
          ASSERT_EQ(a.chw.size(), b.chw.size());
          for (size_t i = 0; i < a.chw.size(); ++i) {
            ASSERT_EQ(a.chw[i], b.chw[i])
                << f.name << " size " << size << " dct " << dct << " seed " << s << " element " << i;
          }
          ++compared;
        }
      }
    }
  }
  EXPECT_EQ(compared, 28 * 3 * 2 * 12);
  // Eval (whole image resized): crop_decode changes nothing either.
  TransformOptions ev;
  ev.train = false;
  ev.size = 64;
  TransformOptions ev_off = ev;
  ev_off.crop_decode = false;
  const Coded& f = files[files.size() - 4];
  const auto a = decode_and_transform(f.bytes.data(), f.bytes.size(), ImageFormat::kJpeg, sample_rng(0, 0, "k"), ev);
  const auto b =
      decode_and_transform(f.bytes.data(), f.bytes.size(), ImageFormat::kJpeg, sample_rng(0, 0, "k"), ev_off);
  EXPECT_EQ(a.chw, b.chw);
  // A truncated file: the same status both ways.
  const size_t cut = f.bytes.size() * 2 / 3;
  const auto ta =
      decode_and_transform(f.bytes.data(), cut, ImageFormat::kJpeg, sample_rng(0, 0, "k"), TransformOptions{});
  TransformOptions full_decode;
  full_decode.crop_decode = false;
  const auto tb = decode_and_transform(f.bytes.data(), cut, ImageFormat::kJpeg, sample_rng(0, 0, "k"), full_decode);
  EXPECT_EQ(ta.status, DecodeStatus::kTruncated) << ta.error;
  EXPECT_EQ(tb.status, DecodeStatus::kTruncated) << tb.error;
}

}  // namespace
}  // namespace cnx::data
