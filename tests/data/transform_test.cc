// Codecs and augmentation: resize against torch (Python fixture), crop
// geometry, DCT scaling choice, bad-image handling, determinism.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "data/image_codec.h"
#include "data/transform.h"
#include "tests/data/data_fixtures.h"

namespace cnx::data {
namespace {

TEST(Resize, MatchesTorchBicubicAntialias) {
  const std::string path = std::string(std::getenv("CNX_SOURCE_DIR")) + "/tests/data/fixtures/resize_bicubic_aa.json";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "missing fixture " << path << " (tests/data/make_resize_fixture.py writes it)";
  const auto j = nlohmann::json::parse(in);
  int case_no = 0;
  for (const auto& c : j.at("cases")) {
    const int64_t h = c.at("h"), w = c.at("w"), ch = c.at("c");
    const auto pix = c.at("pixels").get<std::vector<int>>();
    std::vector<uint8_t> src(pix.begin(), pix.end());
    const auto box = c.at("box").get<std::vector<int64_t>>();
    const auto out = c.at("out").get<std::vector<int64_t>>();
    const auto rng = c.at("range").get<std::vector<int64_t>>();
    const auto expected = c.at("expected").get<std::vector<float>>();
    ResampleAxis ay{static_cast<double>(box[0]), static_cast<double>(box[2]), out[0], rng[0], rng[2]};
    ResampleAxis ax{static_cast<double>(box[1]), static_cast<double>(box[3]), out[1], rng[1], rng[3]};
    const std::vector<float> got = resize_bicubic_aa(src.data(), h, w, ch, ay, ax);
    ASSERT_EQ(got.size(), expected.size()) << "case " << case_no;
    float max_err = 0;
    size_t worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const float e = std::fabs(got[i] - expected[i]);
      if (e > max_err) max_err = e, worst = i;
    }
    EXPECT_LT(max_err, 2e-3f) << "case " << case_no << ": element " << worst << " got " << got[worst] << " expected "
                              << expected[worst];
    ++case_no;
  }
  EXPECT_EQ(case_no, 7);
}

TEST(RandomResizedCrop, BoxesRespectScaleRatioAndBounds) {
  for (uint64_t s = 0; s < 2000; ++s) {
    SplitMix64 rng(s);
    const int64_t H = 50 + static_cast<int64_t>(s % 300), W = 40 + static_cast<int64_t>((s * 7) % 500);
    const CropBox b = random_resized_crop_box(H, W, 0.2, 1.0, 0.75, 4.0 / 3.0, rng);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_GE(b.height, 1);
    ASSERT_GE(b.width, 1);
    ASSERT_LE(b.top + b.height, H);
    ASSERT_LE(b.left + b.width, W);
    const double area = static_cast<double>(b.height * b.width) / (H * W);
    const double ratio = static_cast<double>(b.width) / b.height;
    const bool fallback = b.top == (H - b.height) / 2 && b.left == (W - b.width) / 2 && (b.height == H || b.width == W);
    if (fallback && (ratio < 0.75 || ratio > 4.0 / 3.0 || area < 0.2)) {
      // All ten attempts failed (very elongated image): full side, ratio clamped to the range.
      const double in_ratio = static_cast<double>(W) / H;
      if (in_ratio > 4.0 / 3.0) {
        EXPECT_EQ(b.width, std::llround(H * 4.0 / 3.0)) << "seed " << s;
      }
      if (in_ratio < 0.75) {
        EXPECT_EQ(b.height, std::llround(W / 0.75)) << "seed " << s;
      }
      continue;
    }
    // Rounding of w and h to integers moves area and ratio by at most ~1 px.
    EXPECT_GE(area, 0.2 * (1 - 2.0 / std::min(b.height, b.width)) - 1e-9) << "seed " << s;
    EXPECT_GE(ratio, 0.75 * (1 - 1.0 / b.height) - 1e-9) << "seed " << s;
    EXPECT_LE(ratio, 4.0 / 3.0 * (1 + 1.0 / b.height) + 1e-9) << "seed " << s;
  }
  // An extreme strip makes all ten attempts fail: center crop clamped to the ratio range.
  SplitMix64 rng(3);
  const CropBox b = random_resized_crop_box(10, 1000, 0.9, 1.0, 0.75, 4.0 / 3.0, rng);
  EXPECT_EQ(b.height, 10);
  EXPECT_EQ(b.width, 13);
  EXPECT_EQ(b.left, (1000 - 13) / 2);
  EXPECT_EQ(b.top, 0);
}

TEST(JpegScale, PicksStrongestDownscaleThatKeepsTheTarget) {
  // 5/8, 3/4 and 7/8 decode slower than full size (image_codec.h): never chosen.
  EXPECT_EQ(choose_jpeg_scale(500, 375, 224, 224).value(), 1.0);         // 375 * 5/8 = 234 would do, 1/2 not
  EXPECT_EQ(choose_jpeg_scale(1000, 750, 224, 224).value(), 3.0 / 8.0);  // 281 >= 224; 1/4: 187 < 224
  EXPECT_EQ(choose_jpeg_scale(500, 450, 224, 224).value(), 1.0 / 2.0);   // 225 >= 224
  for (const auto& [num, den, cheap] : std::vector<std::tuple<int, int, bool>>{
           {1, 8, true}, {1, 4, true}, {3, 8, true}, {1, 2, true}, {5, 8, false}, {3, 4, false}, {7, 8, false}}) {
    EXPECT_EQ(cheap_jpeg_scale(ScaleFactor{num, den}), cheap) << num << "/" << den;
  }
  EXPECT_EQ(choose_jpeg_scale(200, 150, 224, 224).value(), 1.0);  // crop already smaller: full size
  EXPECT_EQ(choose_jpeg_scale(2000, 1800, 224, 224).value(), 1.0 / 8.0);
  EXPECT_EQ(choose_jpeg_scale(900, 900, 224, 224).value(), 1.0 / 4.0);  // 225 >= 224
  EXPECT_EQ(scaled_dim(375, ScaleFactor{5, 8}), 235);                   // ceil(234.375)
}

std::vector<uint8_t> png_with_dims(uint32_t w, uint32_t h) {
  Image im;
  im.width = im.height = 4;
  im.channels = 1;
  im.pixels.assign(16, 7);
  std::vector<uint8_t> b = encode_png(im);
  // IHDR data starts at byte 16 (8 signature + 4 length + 4 type).
  for (int i = 0; i < 4; ++i) {
    b[16 + i] = static_cast<uint8_t>(w >> (24 - 8 * i));
    b[20 + i] = static_cast<uint8_t>(h >> (24 - 8 * i));
  }
  const uLong crc = crc32(0, b.data() + 12, 17);
  for (int i = 0; i < 4; ++i) b[29 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  return b;
}

TEST(Codec, RoundTripsAndRejectsBadData) {
  const Image rgb = testing::synth_image(33, 17, 3, 1);
  const Image gray = testing::synth_image(19, 41, 1, 2);
  for (const Image* im : {&rgb, &gray}) {
    const auto png = encode_png(*im);
    Image out;
    std::string err;
    ASSERT_EQ(decode_image(png.data(), png.size(), ImageFormat::kPng, 1 << 20, {}, &out, &err), DecodeStatus::kOk)
        << err;
    EXPECT_EQ(out.width, im->width);
    EXPECT_EQ(out.height, im->height);
    EXPECT_EQ(out.channels, im->channels);
    EXPECT_EQ(out.pixels, im->pixels);
    const auto jpg = encode_jpeg(*im, 95);
    ASSERT_EQ(decode_image(jpg.data(), jpg.size(), ImageFormat::kJpeg, 1 << 20, {}, &out, &err), DecodeStatus::kOk)
        << err;
    EXPECT_EQ(out.channels, im->channels);
    double mad = 0;
    for (size_t i = 0; i < out.pixels.size(); ++i) mad += std::abs(out.pixels[i] - im->pixels[i]);
    EXPECT_LT(mad / out.pixels.size(), 16.0);  // 4:2:0 chroma loss on a tiny noisy image
  }
  Image out;
  std::string err;
  const auto jpg = encode_jpeg(testing::synth_image(64, 48, 3, 3), 90);
  EXPECT_EQ(decode_image(jpg.data(), 0, ImageFormat::kJpeg, 1 << 20, {}, &out, &err), DecodeStatus::kEmpty);
  const DecodeStatus trunc = decode_image(jpg.data(), jpg.size() / 2, ImageFormat::kJpeg, 1 << 20, {}, &out, &err);
  EXPECT_EQ(trunc, DecodeStatus::kTruncated) << err;
  std::vector<uint8_t> garbage(500);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<uint8_t>(i * 31 + 7);
  EXPECT_EQ(decode_image(garbage.data(), garbage.size(), ImageFormat::kJpeg, 1 << 20, {}, &out, &err),
            DecodeStatus::kCorrupt);
  EXPECT_EQ(decode_image(garbage.data(), garbage.size(), ImageFormat::kPng, 1 << 20, {}, &out, &err),
            DecodeStatus::kCorrupt);
  const auto png = encode_png(testing::synth_image(64, 48, 3, 4));
  const DecodeStatus ptrunc = decode_image(png.data(), png.size() / 2, ImageFormat::kPng, 1 << 20, {}, &out, &err);
  EXPECT_TRUE(ptrunc == DecodeStatus::kTruncated || ptrunc == DecodeStatus::kCorrupt) << decode_status_name(ptrunc);
  // A chunk announcing 1 GiB past the end of the file is refused before
  // libpng allocates it, also when the file ends right after the chunk's
  // length and type, or a few bytes into its data (the image fuzz target's
  // reproducer: libpng malloc'd 1 GiB for this 41-byte file).
  const std::vector<uint8_t> splt = {0x89, 'P',  'N',  'G',  0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 'I',  'H',
                                     'D',  'R',  0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x1c, 0x08, 0x00, 0x00, 0x00,
                                     0x00, 0x57, 0x66, 0x80, 0x48, 0x40, 0x00, 0x00, 0x01, 's',  'P',  'L',  'T'};
  for (size_t extra : {0, 3}) {
    std::vector<uint8_t> f = splt;
    f.resize(f.size() + extra, 0);
    EXPECT_EQ(decode_image(f.data(), f.size(), ImageFormat::kPng, 1 << 20, {}, &out, &err), DecodeStatus::kCorrupt)
        << extra;
    EXPECT_NE(err.find("announces 1073741825 bytes"), std::string::npos) << err;
  }
  // Forged headers with huge dimensions are refused before any allocation.
  const auto huge_png = png_with_dims(100000, 100000);
  EXPECT_EQ(decode_image(huge_png.data(), huge_png.size(), ImageFormat::kPng, 1 << 26, {}, &out, &err),
            DecodeStatus::kTooLarge)
      << err;
  std::vector<uint8_t> huge_jpg = jpg;
  for (size_t i = 0; i + 8 < huge_jpg.size(); ++i) {
    if (huge_jpg[i] == 0xFF && huge_jpg[i + 1] == 0xC0) {  // SOF0: len(2) precision(1) height(2) width(2)
      huge_jpg[i + 5] = huge_jpg[i + 7] = 0xEA;
      huge_jpg[i + 6] = huge_jpg[i + 8] = 0x60;
      break;
    }
  }
  EXPECT_EQ(decode_image(huge_jpg.data(), huge_jpg.size(), ImageFormat::kJpeg, 1 << 26, {}, &out, &err),
            DecodeStatus::kTooLarge)
      << err;
}

TEST(Codec, MutatedFilesNeverCrash) {
  // Random byte flips, truncations and insertions: every outcome is a status.
  const auto jpg = encode_jpeg(testing::synth_image(48, 40, 3, 11), 85);
  const auto png = encode_png(testing::synth_image(40, 48, 3, 12));
  TransformOptions opt;
  opt.size = 16;
  int ok = 0, bad = 0;
  for (int trial = 0; trial < 400; ++trial) {
    SplitMix64 rng(trial);
    const bool is_jpg = trial % 2 == 0;
    std::vector<uint8_t> b = is_jpg ? jpg : png;
    const int edits = 1 + static_cast<int>(rng.below(8));
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng.below(b.size());
      switch (rng.below(3)) {
        case 0:
          b[at] = static_cast<uint8_t>(rng.next());
          break;
        case 1:
          b.resize(std::max<size_t>(1, at));
          break;
        default:
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng.next()));
          break;
      }
    }
    const auto r = decode_and_transform(b.data(), b.size(), is_jpg ? ImageFormat::kJpeg : ImageFormat::kPng,
                                        sample_rng(0, 0, "k"), opt);
    if (r.status == DecodeStatus::kOk) {
      ASSERT_EQ(r.chw.size(), 3u * 16 * 16);
      for (float v : r.chw) ASSERT_TRUE(std::isfinite(v));
      ++ok;
    } else {
      EXPECT_FALSE(r.error.empty());
      ++bad;
    }
  }
  EXPECT_GT(bad, 100);
  // A decode failure must not poison this thread's decoder for later images.
  const auto good = decode_and_transform(jpg.data(), jpg.size(), ImageFormat::kJpeg, sample_rng(0, 0, "k"), opt);
  EXPECT_EQ(good.status, DecodeStatus::kOk) << good.error;
}

TEST(Transform, GrayBecomesThreeEqualChannelsAndIsDeterministic) {
  const auto png = encode_png(testing::synth_image(45, 37, 1, 5));
  TransformOptions opt;
  opt.size = 32;
  const auto a = decode_and_transform(png.data(), png.size(), ImageFormat::kPng, sample_rng(1, 2, "s/k"), opt);
  const auto b = decode_and_transform(png.data(), png.size(), ImageFormat::kPng, sample_rng(1, 2, "s/k"), opt);
  const auto c = decode_and_transform(png.data(), png.size(), ImageFormat::kPng, sample_rng(1, 3, "s/k"), opt);
  ASSERT_EQ(a.status, DecodeStatus::kOk);
  EXPECT_EQ(a.chw, b.chw);
  EXPECT_NE(a.chw, c.chw);
  const int64_t plane = 32 * 32;
  for (int64_t i = 0; i < plane; ++i) {
    // Undo the per-channel normalisation: the same gray value in all three.
    const float v0 = a.chw[i] * opt.std[0] + opt.mean[0];
    const float v1 = a.chw[plane + i] * opt.std[1] + opt.mean[1];
    const float v2 = a.chw[2 * plane + i] * opt.std[2] + opt.mean[2];
    ASSERT_NEAR(v0, v1, 1e-5);
    ASSERT_NEAR(v0, v2, 1e-5);
  }
}

TEST(Transform, FlipMirrorsTheUnflippedCrop) {
  const auto jpg = encode_jpeg(testing::synth_image(80, 60, 3, 6), 90);
  TransformOptions flip, noflip;
  flip.size = noflip.size = 24;
  noflip.hflip = false;
  int flipped = 0, same = 0;
  for (int s = 0; s < 24; ++s) {
    const auto a = decode_and_transform(jpg.data(), jpg.size(), ImageFormat::kJpeg, sample_rng(s, 0, "k"), flip);
    const auto b = decode_and_transform(jpg.data(), jpg.size(), ImageFormat::kJpeg, sample_rng(s, 0, "k"), noflip);
    if (a.chw == b.chw) {
      ++same;
      continue;
    }
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 24; ++y)
        for (int64_t x = 0; x < 24; ++x) ASSERT_EQ(a.chw[(c * 24 + y) * 24 + x], b.chw[(c * 24 + y) * 24 + 23 - x]);
    ++flipped;
  }
  EXPECT_GT(flipped, 3);
  EXPECT_GT(same, 3);
}

TEST(Transform, DctScalingStaysCloseToFullDecodeAndEvalIsCentered) {
  const auto jpg = encode_jpeg(testing::synth_image(1000, 750, 3, 7), 92);
  TransformOptions dct, full;
  full.dct_scaling = false;
  int scaled = 0;
  for (int s = 0; s < 20; ++s) {
    const auto a = decode_and_transform(jpg.data(), jpg.size(), ImageFormat::kJpeg, sample_rng(s, 0, "k"), dct);
    const auto b = decode_and_transform(jpg.data(), jpg.size(), ImageFormat::kJpeg, sample_rng(s, 0, "k"), full);
    ASSERT_EQ(a.status, DecodeStatus::kOk);
    EXPECT_EQ(b.jpeg_scale.value(), 1.0);
    if (a.jpeg_scale.value() < 1.0) ++scaled;
    double mad = 0;
    for (size_t i = 0; i < a.chw.size(); ++i) mad += std::fabs(a.chw[i] - b.chw[i]);
    EXPECT_LT(mad / a.chw.size(), 0.08) << "seed " << s << " scale " << a.jpeg_scale.num << "/" << a.jpeg_scale.den;
  }
  EXPECT_GT(scaled, 0);  // large crops (sides >= 448) decode at 1/2
  // Eval: a constant image stays constant; 1000x750 -> 341x256 fits the 3/8 scale (375x282).
  Image flat;
  flat.width = 500;
  flat.height = 375;
  flat.channels = 3;
  flat.pixels.assign(500 * 375 * 3, 200);
  const auto fj = encode_png(flat);
  TransformOptions ev;
  ev.train = false;
  const auto e = decode_and_transform(fj.data(), fj.size(), ImageFormat::kPng, sample_rng(0, 0, "k"), ev);
  ASSERT_EQ(e.status, DecodeStatus::kOk);
  for (size_t i = 0; i < e.chw.size(); i += 97) {
    const int c = static_cast<int>(i / (224 * 224));
    ASSERT_NEAR(e.chw[i], (200.0f / 255.0f - ev.mean[c]) / ev.std[c], 1e-4);
  }
  const auto e2 = decode_and_transform(jpg.data(), jpg.size(), ImageFormat::kJpeg, sample_rng(0, 0, "k"), ev);
  EXPECT_EQ(e2.jpeg_scale.value(), 3.0 / 8.0);
}

}  // namespace
}  // namespace cnx::data
