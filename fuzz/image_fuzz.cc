// Fuzz target: image decoding and the per-sample transform (data/image_codec.h,
// data/transform.h) on JPEG and PNG bytes, as the input pipeline runs them.
//
// Input: 4 bytes of options (format, train/eval, DCT scaling, flip, output
// size, decode scale, crop seed), then the image bytes.
// Contract: no throw (the decoders report a DecodeStatus); probe, decode and
// transform agree on the status; a decoded image has the probed size (scaled
// as TJSCALED), 1 or 3 channels and exactly w*h*c bytes; a transformed one
// has 3 x size x size finite values within the normalised range of 0..255.
// JPEG: decode_jpeg_region of a rectangle (from the crop seed) gives the
// status of the whole decode and, where both succeed, the same pixels in the
// rectangle; the transform with crop_decode on and off gives the same status
// and the same floats.
// The pixel bound is 4 Mpx instead of the pipeline's 64 Mpx so that one
// execution stays short under ASan; the code paths are the same.
#include <algorithm>
#include <cmath>

#include "data/image_codec.h"
#include "data/transform.h"
#include "fuzz/fuzz_util.h"

namespace {
namespace d = cnx::data;
constexpr int64_t kMaxPixels = int64_t{1} << 22;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint8_t flags = data[0], size_sel = data[1], scale_sel = data[2], seed = data[3];
  data += 4;
  size -= 4;
  const d::ImageFormat fmt = (flags & 1) ? d::ImageFormat::kPng : d::ImageFormat::kJpeg;
  static const d::ScaleFactor kScales[] = {{1, 1}, {1, 2}, {1, 4}, {1, 8}, {3, 8}, {7, 8}};
  const d::ScaleFactor scale = kScales[scale_sel % 6];

  d::ImageInfo info;
  std::string probe_error;
  const d::DecodeStatus probed = d::probe_image(data, size, fmt, kMaxPixels, &info, &probe_error);
  if (probed == d::DecodeStatus::kOk) {
    FUZZ_REQUIRE(info.width > 0 && info.height > 0 && int64_t{info.width} * info.height <= kMaxPixels,
                 "probe accepted " + std::to_string(info.width) + "x" + std::to_string(info.height));
  } else {
    FUZZ_REQUIRE(!probe_error.empty(), "probe failed without a message");
  }

  d::Image img;
  std::string error;
  const d::DecodeStatus decoded = d::decode_image(data, size, fmt, kMaxPixels, scale, &img, &error);
  if (probed != d::DecodeStatus::kOk) FUZZ_REQUIRE(decoded == probed, "decode and probe disagree");
  if (decoded == d::DecodeStatus::kOk) {
    const d::ScaleFactor used = fmt == d::ImageFormat::kJpeg ? scale : d::ScaleFactor{1, 1};
    FUZZ_REQUIRE(img.width == d::scaled_dim(info.width, used) && img.height == d::scaled_dim(info.height, used),
                 "decoded size differs from the probed size");
    FUZZ_REQUIRE(img.channels == 1 || img.channels == 3, "channels " + std::to_string(img.channels));
    FUZZ_REQUIRE(img.pixels.size() == static_cast<size_t>(img.width) * img.height * img.channels,
                 "pixel buffer size differs from w*h*c");
  } else {
    FUZZ_REQUIRE(!error.empty(), std::string("decode failed without a message: ") + d::decode_status_name(decoded));
  }

  if (fmt == d::ImageFormat::kJpeg) {
    const bool ok = decoded == d::DecodeStatus::kOk;
    const int W = ok ? img.width : 16, H = ok ? img.height : 16;
    const int x = (seed * 37) % W, y = (seed * 11) % H;
    const int w = 1 + (seed * 53) % (W - x), h = 1 + (seed * 29) % (H - y);
    d::JpegRegion region;
    std::string region_error;
    const d::DecodeStatus rs = d::decode_jpeg_region(data, size, kMaxPixels, scale, x, y, w, h, &region, &region_error);
    FUZZ_REQUIRE(rs == decoded, std::string("region decode ") + d::decode_status_name(rs) + ", whole decode " +
                                    d::decode_status_name(decoded) + " (" + region_error + ")");
    if (ok) {
      const d::Image& r = region.image;
      FUZZ_REQUIRE(region.full_width == W && region.full_height == H && r.channels == img.channels,
                   "region decode: full size or channels differ");
      FUZZ_REQUIRE(region.x0 <= x && region.y0 <= y && region.x0 + r.width >= x + w && region.y0 + r.height >= y + h &&
                       r.pixels.size() == static_cast<size_t>(r.width) * r.height * r.channels,
                   "region decode: the region misses the rectangle");
      const int C = img.channels;
      for (int yy = y; yy < y + h; ++yy) {
        FUZZ_REQUIRE(std::equal(img.pixels.begin() + (static_cast<size_t>(yy) * W + x) * C,
                                img.pixels.begin() + (static_cast<size_t>(yy) * W + x + w) * C,
                                r.pixels.begin() + (static_cast<size_t>(yy - region.y0) * r.width + x - region.x0) * C),
                     "region decode: pixels differ from the whole decode in row " + std::to_string(yy));
      }
    } else {
      FUZZ_REQUIRE(!region_error.empty(), "region decode failed without a message");
    }
  }

  d::TransformOptions opt;
  opt.size = 8 + (size_sel % 8) * 8;  // 8..64
  opt.train = flags & 2;
  opt.dct_scaling = flags & 4;
  opt.hflip = flags & 8;
  opt.crop_pct = (flags & 16) ? 1.0 : 0.875;
  opt.max_pixels = kMaxPixels;
  const d::TransformResult r = d::decode_and_transform(data, size, fmt, cnx::SplitMix64(seed), opt);
  if (probed != d::DecodeStatus::kOk) FUZZ_REQUIRE(r.status == probed, "transform and probe disagree");
  d::TransformOptions whole = opt;
  whole.crop_decode = false;
  const d::TransformResult rw = d::decode_and_transform(data, size, fmt, cnx::SplitMix64(seed), whole);
  FUZZ_REQUIRE(rw.status == r.status, "transform status differs with crop_decode off");
  FUZZ_REQUIRE(rw.chw == r.chw, "transform output differs with crop_decode off");
  if (r.status != d::DecodeStatus::kOk) {
    FUZZ_REQUIRE(!r.error.empty(), "transform failed without a message");
    return 0;
  }
  FUZZ_REQUIRE(r.chw.size() == static_cast<size_t>(3 * opt.size * opt.size), "output size");
  for (size_t i = 0; i < r.chw.size(); ++i) {
    const size_t c = i / static_cast<size_t>(opt.size * opt.size);
    const float lo = (0.0f - opt.mean[c]) / opt.std[c], hi = (1.0f - opt.mean[c]) / opt.std[c];
    FUZZ_REQUIRE(std::isfinite(r.chw[i]) && r.chw[i] >= lo - 1e-4f && r.chw[i] <= hi + 1e-4f,
                 "output value " + std::to_string(r.chw[i]) + " outside the normalised range");
  }
  return 0;
}
