#include "data/transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/check.h"

namespace cnx::data {
namespace {

// Keys' cubic convolution kernel with a = -0.5 (PIL / torch antialias).
inline double cubic(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Taps of one axis: for output i, source indices [first[i], first[i] + n[i])
// with weights w[i * taps + k].
struct Taps {
  std::vector<int64_t> first;
  std::vector<int64_t> n;
  std::vector<float> w;
  int64_t taps = 0;
  int64_t lo = 0, hi = 0;  // union of source indices read
};

Taps compute_taps(const ResampleAxis& ax, int64_t in_size) {
  CNX_CHECK(ax.out_size > 0 && ax.box_len > 0, "resize: empty box or output");
  CNX_CHECK(ax.out_start >= 0 && ax.out_count > 0 && ax.out_start + ax.out_count <= ax.out_size,
            "resize: output range out of bounds");
  const double scale = ax.box_len / static_cast<double>(ax.out_size);
  const double support = scale >= 1.0 ? 2.0 * scale : 2.0;
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  const int64_t bound_lo = std::max<int64_t>(0, static_cast<int64_t>(std::floor(ax.box_start)));
  const int64_t bound_hi = std::min<int64_t>(in_size, static_cast<int64_t>(std::ceil(ax.box_start + ax.box_len)));
  CNX_CHECK(bound_hi > bound_lo, "resize: box outside the source");
  Taps t;
  t.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.first.resize(ax.out_count);
  t.n.resize(ax.out_count);
  t.w.assign(ax.out_count * t.taps, 0.0f);
  t.lo = bound_hi;
  t.hi = bound_lo;
  for (int64_t o = 0; o < ax.out_count; ++o) {
    const int64_t i = ax.out_start + o;
    const double center = ax.box_start + scale * (static_cast<double>(i) + 0.5);
    int64_t xmin = std::max<int64_t>(static_cast<int64_t>(std::floor(center - support + 0.5)), bound_lo);
    int64_t xmax = std::min<int64_t>(static_cast<int64_t>(std::floor(center + support + 0.5)), bound_hi);
    xmax = std::min(xmax, xmin + t.taps);
    if (xmax <= xmin) {  // degenerate (box narrower than a pixel at the edge): nearest pixel
      xmin = std::clamp<int64_t>(static_cast<int64_t>(center), bound_lo, bound_hi - 1);
      xmax = xmin + 1;
    }
    double total = 0;
    const int64_t n = xmax - xmin;
    std::vector<double> wv(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      wv[j] = cubic((static_cast<double>(j + xmin) - center + 0.5) * invscale);
      total += wv[j];
    }
    for (int64_t j = 0; j < n; ++j) t.w[o * t.taps + j] = static_cast<float>(total != 0.0 ? wv[j] / total : 0.0);
    if (total == 0.0) t.w[o * t.taps] = 1.0f;
    t.first[o] = xmin;
    t.n[o] = n;
    t.lo = std::min(t.lo, xmin);
    t.hi = std::max(t.hi, xmax);
  }
  return t;
}

}  // namespace

CropBox random_resized_crop_box(int64_t height, int64_t width, double scale_lo, double scale_hi, double ratio_lo,
                                double ratio_hi, SplitMix64& rng) {
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_lo = std::log(ratio_lo), log_hi = std::log(ratio_hi);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale_lo, scale_hi);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int64_t w = std::llround(std::sqrt(target_area * aspect));
    const int64_t h = std::llround(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      CropBox b;
      b.top = static_cast<int64_t>(rng.below(static_cast<uint64_t>(height - h + 1)));
      b.left = static_cast<int64_t>(rng.below(static_cast<uint64_t>(width - w + 1)));
      b.height = h;
      b.width = w;
      return b;
    }
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  CropBox b;
  if (in_ratio < ratio_lo) {
    b.width = width;
    b.height = std::max<int64_t>(1, std::min<int64_t>(height, std::llround(width / ratio_lo)));
  } else if (in_ratio > ratio_hi) {
    b.height = height;
    b.width = std::max<int64_t>(1, std::min<int64_t>(width, std::llround(height * ratio_hi)));
  } else {
    b.width = width;
    b.height = height;
  }
  b.top = (height - b.height) / 2;
  b.left = (width - b.width) / 2;
  return b;
}

namespace {

// Pixels [x0, x0 + width) x [y0, y0 + height) of a larger image, HWC.
struct SourceView {
  const uint8_t* pixels;
  int64_t x0, y0, width, height, channels;
};

// Horizontal pass of a 3-channel image, 4 lanes at a time: the source
// window [tx.lo, tx.hi) of each row is widened to float once, then each
// output pixel accumulates its taps as (R, G, B, next R) vectors; lane 3 is
// discarded. Four output pixels run side by side (independent dependency
// chains), each over the largest tap count of the four: a tap past an
// output's own count has weight 0 (Taps pads w with zeros) and reads the
// zero padding after the window, adding exactly 0. So each lane gets the
// same products and sums in the same order as the scalar loop.
void horizontal_rgb(const SourceView& src, const Taps& tx, int64_t row0, int64_t rows, int64_t out_count,
                    std::vector<float>& rowf, float* tmp) {
  typedef float V4 __attribute__((vector_size(16)));
  const int64_t n_in = (tx.hi - tx.lo) * 3;
  rowf.assign(static_cast<size_t>(n_in + 3 * tx.taps + 4), 0.0f);
  auto load = [](const float* p) {
    V4 v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = src.pixels + ((row0 + r - src.y0) * src.width + tx.lo - src.x0) * 3;
    float* f = rowf.data();
    for (int64_t i = 0; i < n_in; ++i) f[i] = static_cast<float>(in[i]);
    float* out = tmp + r * out_count * 3;
    int64_t o = 0;
    for (; o + 4 <= out_count; o += 4) {
      const int64_t kmax = std::max(std::max(tx.n[o], tx.n[o + 1]), std::max(tx.n[o + 2], tx.n[o + 3]));
      const float* w0 = tx.w.data() + o * tx.taps;
      const float* w1 = w0 + tx.taps;
      const float* w2 = w1 + tx.taps;
      const float* w3 = w2 + tx.taps;
      const float* p0 = f + (tx.first[o] - tx.lo) * 3;
      const float* p1 = f + (tx.first[o + 1] - tx.lo) * 3;
      const float* p2 = f + (tx.first[o + 2] - tx.lo) * 3;
      const float* p3 = f + (tx.first[o + 3] - tx.lo) * 3;
      V4 a0 = {0.0f, 0.0f, 0.0f, 0.0f}, a1 = a0, a2 = a0, a3 = a0;
      for (int64_t k = 0; k < kmax; ++k) {
        a0 += w0[k] * load(p0 + k * 3);
        a1 += w1[k] * load(p1 + k * 3);
        a2 += w2[k] * load(p2 + k * 3);
        a3 += w3[k] * load(p3 + k * 3);
      }
      std::memcpy(out + o * 3, &a0, 3 * sizeof(float));
      std::memcpy(out + o * 3 + 3, &a1, 3 * sizeof(float));
      std::memcpy(out + o * 3 + 6, &a2, 3 * sizeof(float));
      std::memcpy(out + o * 3 + 9, &a3, 3 * sizeof(float));
    }
    for (; o < out_count; ++o) {
      const float* w = tx.w.data() + o * tx.taps;
      const float* p = f + (tx.first[o] - tx.lo) * 3;
      V4 acc = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t k = 0; k < tx.n[o]; ++k) acc += w[k] * load(p + k * 3);
      std::memcpy(out + o * 3, &acc, 3 * sizeof(float));
    }
  }
}

// resize_bicubic_aa of a full_height x full_width image of which `src` holds
// a rectangle, into caller-owned buffers (reused across samples by the decode
// threads: fresh multi-MB allocations per image cost page faults). The taps
// are those of the full image, so the result does not depend on which
// rectangle (covering the pixels read) is held.
void resize_into(const SourceView& src, int64_t full_height, int64_t full_width, const ResampleAxis& y,
                 const ResampleAxis& x, std::vector<float>& rowf, std::vector<float>& tmp, std::vector<float>& dst) {
  const Taps tx = compute_taps(x, full_width);
  const Taps ty = compute_taps(y, full_height);
  CNX_CHECK(tx.lo >= src.x0 && tx.hi <= src.x0 + src.width && ty.lo >= src.y0 && ty.hi <= src.y0 + src.height,
            "resize: the held rectangle [", src.x0, ", ", src.x0 + src.width, ") x [", src.y0, ", ",
            src.y0 + src.height, ") misses source pixels [", tx.lo, ", ", tx.hi, ") x [", ty.lo, ", ", ty.hi, ")");
  const int64_t C = src.channels;
  const int64_t rows = ty.hi - ty.lo;
  // Horizontal pass over the rows the vertical pass reads.
  tmp.resize(static_cast<size_t>(rows * x.out_count * C));
  if (C == 3) {
    horizontal_rgb(src, tx, ty.lo, rows, x.out_count, rowf, tmp.data());
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* in = src.pixels + ((ty.lo + r - src.y0) * src.width - src.x0) * C;
      float* out = tmp.data() + r * x.out_count * C;
      for (int64_t o = 0; o < x.out_count; ++o) {
        const float* w = tx.w.data() + o * tx.taps;
        const uint8_t* p = in + tx.first[o] * C;
        for (int64_t c = 0; c < C; ++c) {
          float acc = 0;
          for (int64_t k = 0; k < tx.n[o]; ++k) acc += w[k] * static_cast<float>(p[k * C + c]);
          out[o * C + c] = acc;
        }
      }
    }
  }
  // Vertical pass (the first tap initialises the row: no zero fill).
  const int64_t row_len = x.out_count * C;
  dst.resize(static_cast<size_t>(y.out_count * row_len));
  for (int64_t o = 0; o < y.out_count; ++o) {
    const float* w = ty.w.data() + o * ty.taps;
    float* out = dst.data() + o * row_len;
    const float* in0 = tmp.data() + (ty.first[o] - ty.lo) * row_len;
    for (int64_t j = 0; j < row_len; ++j) out[j] = w[0] * in0[j];
    for (int64_t k = 1; k < ty.n[o]; ++k) {
      const float wk = w[k];
      const float* in = tmp.data() + (ty.first[o] + k - ty.lo) * row_len;
      for (int64_t j = 0; j < row_len; ++j) out[j] += wk * in[j];
    }
  }
}

}  // namespace

std::vector<float> resize_bicubic_aa(const uint8_t* src, int64_t height, int64_t width, int64_t channels,
                                     const ResampleAxis& y, const ResampleAxis& x) {
  std::vector<float> rowf, tmp, dst;
  resize_into(SourceView{src, 0, 0, width, height, channels}, height, width, y, x, rowf, tmp, dst);
  return dst;
}

TransformResult decode_and_transform(const uint8_t* data, size_t size, ImageFormat fmt, SplitMix64 rng,
                                     const TransformOptions& opt) {
  TransformResult res;
  ImageInfo info;
  res.status = probe_image(data, size, fmt, opt.max_pixels, &info, &res.error);
  if (res.status != DecodeStatus::kOk) return res;
  const int64_t S = opt.size;
  const int64_t H = info.height, W = info.width;

  // Geometry in original-image pixels (independent of the DCT scale).
  double bx, by, bw, bh;         // source box
  int64_t out_w, out_h;          // size the box is resized to
  int64_t off_x = 0, off_y = 0;  // center-crop offset inside the resized box (eval)
  bool flip = false;
  if (opt.train) {
    CropBox b = random_resized_crop_box(H, W, opt.scale_lo, opt.scale_hi, opt.ratio_lo, opt.ratio_hi, rng);
    bx = static_cast<double>(b.left);
    by = static_cast<double>(b.top);
    bw = static_cast<double>(b.width);
    bh = static_cast<double>(b.height);
    out_w = out_h = S;
    flip = opt.hflip && rng.uniform() < 0.5;
  } else {
    CNX_CHECK(opt.crop_pct > 0.0 && opt.crop_pct <= 1.0, "eval crop_pct must be in (0, 1], got ", opt.crop_pct);
    // floor(S / crop_pct) as Python's int(); the epsilon keeps exact
    // quotients (S / 1.0) from rounding down.
    const int64_t resize = static_cast<int64_t>(static_cast<double>(S) / opt.crop_pct + 1e-9);
    if (W <= H) {
      out_w = resize;
      out_h = static_cast<int64_t>(static_cast<double>(resize) * H / W);
    } else {
      out_h = resize;
      out_w = static_cast<int64_t>(static_cast<double>(resize) * W / H);
    }
    out_h = std::max(out_h, S);
    out_w = std::max(out_w, S);
    bx = by = 0;
    bw = static_cast<double>(W);
    bh = static_cast<double>(H);
    off_y = static_cast<int64_t>(std::lround((out_h - S) / 2.0));
    off_x = static_cast<int64_t>(std::lround((out_w - S) / 2.0));
  }

  ScaleFactor sf;
  if (fmt == ImageFormat::kJpeg && opt.dct_scaling) {
    sf = choose_jpeg_scale(bw, bh, static_cast<double>(out_w), static_cast<double>(out_h));
  }
  thread_local JpegRegion region;  // scratch reused by this thread (see resize_into)
  thread_local std::vector<float> rowf, tmp, hwc;
  Image& img = region.image;
  // The box in decoded pixels (exact ratio of decoded to stored size); the
  // resize reads source pixels [floor(start), ceil(start + len)) only.
  const int64_t dec_w = fmt == ImageFormat::kJpeg ? scaled_dim(info.width, sf) : W;
  const int64_t dec_h = fmt == ImageFormat::kJpeg ? scaled_dim(info.height, sf) : H;
  const double fx = static_cast<double>(dec_w) / W, fy = static_cast<double>(dec_h) / H;
  ResampleAxis ax{bx * fx, bw * fx, out_w, off_x, S};
  ResampleAxis ay{by * fy, bh * fy, out_h, off_y, S};
  const int64_t rx0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(ax.box_start)));
  const int64_t rx1 = std::min<int64_t>(dec_w, static_cast<int64_t>(std::ceil(ax.box_start + ax.box_len)));
  const int64_t ry0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(ay.box_start)));
  const int64_t ry1 = std::min<int64_t>(dec_h, static_cast<int64_t>(std::ceil(ay.box_start + ay.box_len)));
  if (fmt == ImageFormat::kJpeg && opt.crop_decode && (rx1 - rx0) * (ry1 - ry0) < dec_w * dec_h) {
    res.status = decode_jpeg_region(data, size, opt.max_pixels, sf, static_cast<int>(rx0), static_cast<int>(ry0),
                                    static_cast<int>(rx1 - rx0), static_cast<int>(ry1 - ry0), &region, &res.error);
  } else {
    res.status = decode_image(data, size, fmt, opt.max_pixels, sf, &img, &res.error);
    region.x0 = region.y0 = 0;
    region.full_width = img.width;
    region.full_height = img.height;
  }
  if (res.status != DecodeStatus::kOk) return res;
  CNX_CHECK(region.full_width == dec_w && region.full_height == dec_h, "decoded size ", region.full_width, "x",
            region.full_height, " differs from the expected ", dec_w, "x", dec_h);
  res.jpeg_scale = sf;
  resize_into(SourceView{img.pixels.data(), region.x0, region.y0, img.width, img.height, img.channels}, dec_h, dec_w,
              ay, ax, rowf, tmp, hwc);

  res.chw.resize(static_cast<size_t>(3 * S * S));
  const int64_t C = img.channels;
  for (int64_t c = 0; c < 3; ++c) {
    const int64_t sc = C == 1 ? 0 : c;
    const float scale = 1.0f / (255.0f * opt.std[c]);
    const float shift = opt.mean[c] / opt.std[c];
    float* out = res.chw.data() + c * S * S;
    for (int64_t yy = 0; yy < S; ++yy) {
      const float* row = hwc.data() + yy * S * C;
      float* orow = out + yy * S;
      for (int64_t xx = 0; xx < S; ++xx) {
        const int64_t src_x = flip ? S - 1 - xx : xx;
        // Clamp like an 8-bit image (PIL/torchvision uint8) before normalising.
        const float v = std::min(255.0f, std::max(0.0f, row[src_x * C + sc]));
        orow[xx] = v * scale - shift;
      }
    }
  }
  return res;
}

}  // namespace cnx::data
