#include "data/image_codec.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cstring>

#include "common/check.h"

namespace cnx::data {
namespace {

// One decompressor and one compressor per thread, freed at thread exit.
struct TjHandles {
  tjhandle dec = nullptr;
  tjhandle enc = nullptr;
  ~TjHandles() {
    if (dec) tjDestroy(dec);
    if (enc) tjDestroy(enc);
  }
};
thread_local TjHandles tls_tj;

tjhandle decompressor() {
  if (!tls_tj.dec) tls_tj.dec = tjInitDecompress();
  CNX_CHECK(tls_tj.dec != nullptr, "tjInitDecompress failed: ", tjGetErrorStr2(nullptr));
  return tls_tj.dec;
}

// After a failed decode a TurboJPEG handle can stay in an error state and
// refuse later valid images; drop it so the next call starts fresh.
void reset_decompressor() {
  if (tls_tj.dec) tjDestroy(tls_tj.dec);
  tls_tj.dec = nullptr;
}

tjhandle compressor() {
  if (!tls_tj.enc) tls_tj.enc = tjInitCompress();
  CNX_CHECK(tls_tj.enc != nullptr, "tjInitCompress failed: ", tjGetErrorStr2(nullptr));
  return tls_tj.enc;
}

DecodeStatus check_dims(int w, int h, int64_t max_pixels, std::string* error) {
  if (w <= 0 || h <= 0) {
    *error = str("invalid dimensions ", w, "x", h);
    return DecodeStatus::kCorrupt;
  }
  if (static_cast<int64_t>(w) * h > max_pixels) {
    *error = str("dimensions ", w, "x", h, " exceed the bound of ", max_pixels, " pixels");
    return DecodeStatus::kTooLarge;
  }
  return DecodeStatus::kOk;
}

// libpng's simplified API reports truncation through its read callback.
// libpng allocates a chunk's announced length before reading it (a 72-byte
// file announcing a 1 GiB sPLT chunk made it malloc 1 GiB, and so did a
// 41-byte one whose last chunk was only its length and type: both found by
// the image fuzz target). Every chunk of a well-formed PNG lies inside the file, so the
// chunk lengths are walked first and a chunk reaching past the end is refused.
bool png_chunks_fit(const uint8_t* data, size_t size, std::string* error) {
  size_t off = 8;  // the signature
  // Every chunk whose length and type are in the file, the last one too when
  // its data and CRC are cut off entirely (libpng allocates then as well).
  while (off + 8 <= size) {
    const uint32_t len = (uint32_t{data[off]} << 24) | (uint32_t{data[off + 1]} << 16) |
                         (uint32_t{data[off + 2]} << 8) | uint32_t{data[off + 3]};
    // A cut-off file ends inside its last chunk; libpng reports that as
    // truncated. Only a length no real chunk of such a file has is refused here.
    const size_t after_type = size - off - 8;  // the bytes of data + CRC present
    if (size_t{len} + 4 > after_type && len > (uint32_t{1} << 24)) {
      *error = "PNG chunk at byte " + std::to_string(off) + " announces " + std::to_string(len) +
               " bytes, more than the file holds";
      return false;
    }
    const bool end = std::memcmp(data + off + 4, "IEND", 4) == 0;
    off += 12 + size_t{len};
    if (end) break;
  }
  return true;
}

DecodeStatus png_failure(const png_image& img, std::string* error) {
  *error = img.message;
  const std::string m = img.message;
  if (m.find("EOF") != std::string::npos || m.find("end of") != std::string::npos ||
      m.find("Read Error") != std::string::npos || m.find("truncated") != std::string::npos) {
    return DecodeStatus::kTruncated;
  }
  return DecodeStatus::kCorrupt;
}

}  // namespace

ImageFormat format_from_extension(const std::string& ext) {
  if (ext == "jpg" || ext == "jpeg") return ImageFormat::kJpeg;
  if (ext == "png") return ImageFormat::kPng;
  return ImageFormat::kUnknown;
}

const char* decode_status_name(DecodeStatus s) {
  switch (s) {
    case DecodeStatus::kOk:
      return "ok";
    case DecodeStatus::kEmpty:
      return "empty_file";
    case DecodeStatus::kCorrupt:
      return "corrupt_image";
    case DecodeStatus::kTruncated:
      return "truncated_image";
    case DecodeStatus::kTooLarge:
      return "image_too_large";
    case DecodeStatus::kUnsupported:
      return "unsupported_image";
  }
  return "unknown";
}

int scaled_dim(int dim, ScaleFactor f) {
  const tjscalingfactor sf{f.num, f.den};
  return TJSCALED(dim, sf);
}

bool cheap_jpeg_scale(ScaleFactor f) {
  return f.num * 8 == f.den || f.num * 4 == f.den || f.num * 8 == 3 * f.den || f.num * 2 == f.den;
}

ScaleFactor choose_jpeg_scale(double region_w, double region_h, double need_w, double need_h) {
  int n = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&n);
  ScaleFactor best;
  for (int i = 0; factors && i < n; ++i) {
    ScaleFactor f{factors[i].num, factors[i].denom};
    if (f.value() > 1.0 || f.value() >= best.value() || !cheap_jpeg_scale(f)) continue;
    if (region_w * f.value() >= need_w && region_h * f.value() >= need_h) best = f;
  }
  return best;
}

DecodeStatus probe_image(const uint8_t* data, size_t size, ImageFormat fmt, int64_t max_pixels, ImageInfo* info,
                         std::string* error) {
  if (size == 0) {
    *error = "zero-byte file";
    return DecodeStatus::kEmpty;
  }
  if (fmt == ImageFormat::kJpeg) {
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (tjDecompressHeader3(decompressor(), data, static_cast<unsigned long>(size), &w, &h, &subsamp, &cs) != 0) {
      *error = tjGetErrorStr2(decompressor());
      reset_decompressor();
      return DecodeStatus::kCorrupt;
    }
    info->width = w;
    info->height = h;
    info->gray = cs == TJCS_GRAY;
    return check_dims(w, h, max_pixels, error);
  }
  if (fmt == ImageFormat::kPng) {
    if (!png_chunks_fit(data, size, error)) return DecodeStatus::kCorrupt;
    png_image img;
    std::memset(&img, 0, sizeof(img));
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, data, size)) return png_failure(img, error);
    info->width = static_cast<int>(std::min<png_uint_32>(img.width, 1u << 30));
    info->height = static_cast<int>(std::min<png_uint_32>(img.height, 1u << 30));
    info->gray = (img.format & PNG_FORMAT_FLAG_COLOR) == 0;
    png_image_free(&img);
    return check_dims(info->width, info->height, max_pixels, error);
  }
  *error = "unknown image format";
  return DecodeStatus::kUnsupported;
}

DecodeStatus decode_image(const uint8_t* data, size_t size, ImageFormat fmt, int64_t max_pixels, ScaleFactor scale,
                          Image* out, std::string* error) {
  ImageInfo info;
  DecodeStatus st = probe_image(data, size, fmt, max_pixels, &info, error);
  if (st != DecodeStatus::kOk) return st;
  if (fmt == ImageFormat::kJpeg) {
    // A fresh handle per image: a reused libjpeg decompressor keeps the
    // quantization and Huffman tables of earlier images, so a damaged file
    // that lacks its own decoded with those of whatever this thread decoded
    // before (found by the image fuzz target comparing with
    // decode_jpeg_region, which starts fresh). ~0.3 us (Ice Lake).
    reset_decompressor();
    tjhandle h = decompressor();
    out->width = scaled_dim(info.width, scale);
    out->height = scaled_dim(info.height, scale);
    out->channels = info.gray ? 1 : 3;
    out->pixels.resize(static_cast<size_t>(out->width) * out->height * out->channels);
    const int pf = info.gray ? TJPF_GRAY : TJPF_RGB;
    if (tjDecompress2(h, data, static_cast<unsigned long>(size), out->pixels.data(), out->width, 0, out->height, pf,
                      0) != 0) {
      *error = tjGetErrorStr2(h);
      // TurboJPEG reports a premature end of data as a warning after
      // filling the missing rows; such an image is not what was stored.
      const DecodeStatus st = tjGetErrorCode(h) == TJERR_WARNING ? DecodeStatus::kTruncated : DecodeStatus::kCorrupt;
      reset_decompressor();
      return st;
    }
    return DecodeStatus::kOk;
  }
  png_image img;
  std::memset(&img, 0, sizeof(img));
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, data, size)) return png_failure(img, error);
  img.format = info.gray ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  out->width = info.width;
  out->height = info.height;
  out->channels = info.gray ? 1 : 3;
  out->pixels.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out->pixels.data(), 0, nullptr)) {
    DecodeStatus s = png_failure(img, error);
    png_image_free(&img);
    return s;
  }
  return DecodeStatus::kOk;
}

std::vector<uint8_t> encode_png(const Image& img) {
  CNX_CHECK(img.channels == 1 || img.channels == 3, "encode_png: channels must be 1 or 3, got ", img.channels);
  png_image p;
  std::memset(&p, 0, sizeof(p));
  p.version = PNG_IMAGE_VERSION;
  p.width = static_cast<png_uint_32>(img.width);
  p.height = static_cast<png_uint_32>(img.height);
  p.format = img.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t bytes = 0;
  CNX_CHECK(png_image_write_to_memory(&p, nullptr, &bytes, 0, img.pixels.data(), 0, nullptr),
            "png_image_write_to_memory (size) failed: ", p.message);
  std::vector<uint8_t> out(bytes);
  CNX_CHECK(png_image_write_to_memory(&p, out.data(), &bytes, 0, img.pixels.data(), 0, nullptr),
            "png_image_write_to_memory failed: ", p.message);
  out.resize(bytes);
  return out;
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality, ChromaSubsampling subsampling) {
  CNX_CHECK(img.channels == 1 || img.channels == 3, "encode_jpeg: channels must be 1 or 3, got ", img.channels);
  unsigned char* buf = nullptr;
  unsigned long len = 0;
  const int pf = img.channels == 1 ? TJPF_GRAY : TJPF_RGB;
  int ss = TJSAMP_GRAY;
  if (img.channels == 3) {
    switch (subsampling) {
      case ChromaSubsampling::k420:
        ss = TJSAMP_420;
        break;
      case ChromaSubsampling::k422:
        ss = TJSAMP_422;
        break;
      case ChromaSubsampling::k444:
        ss = TJSAMP_444;
        break;
      case ChromaSubsampling::k440:
        ss = TJSAMP_440;
        break;
      case ChromaSubsampling::k411:
        ss = TJSAMP_411;
        break;
    }
  }
  int r = tjCompress2(compressor(), img.pixels.data(), img.width, 0, img.height, pf, &buf, &len, ss, quality, 0);
  if (r != 0) {
    std::string msg = tjGetErrorStr2(compressor());
    tjFree(buf);
    CNX_CHECK(false, "tjCompress2 failed: ", msg);
  }
  std::vector<uint8_t> out(buf, buf + len);
  tjFree(buf);
  return out;
}

}  // namespace cnx::data
