#pragma once
// Image decoding (libjpeg-turbo's TurboJPEG API, libpng's simplified API; a
// region of a JPEG through libjpeg's API) and encoding (for cnx-make-shards,
// tests and benchmarks).
//
// Decoders never throw on bad data: they return a DecodeStatus and a message.
// Dimensions are checked against a pixel bound before any pixel buffer is
// allocated, so a forged header cannot make the process allocate gigabytes.
// Thread-safe: each thread uses its own TurboJPEG handles.
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::data {

enum class ImageFormat { kJpeg, kPng, kUnknown };

// "jpg"/"jpeg" -> kJpeg, "png" -> kPng, else kUnknown.
ImageFormat format_from_extension(const std::string& ext);

enum class DecodeStatus { kOk, kEmpty, kCorrupt, kTruncated, kTooLarge, kUnsupported };
const char* decode_status_name(DecodeStatus s);  // "ok", "empty_file", "corrupt_image", ...

// 8-bit interleaved pixels, row-major (HWC); channels is 1 (gray) or 3 (RGB).
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;
};

struct ImageInfo {
  int width = 0;
  int height = 0;
  bool gray = false;
};

// Reads only the header. kTooLarge when width*height > max_pixels.
DecodeStatus probe_image(const uint8_t* data, size_t size, ImageFormat fmt, int64_t max_pixels, ImageInfo* info,
                         std::string* error);

// A JPEG DCT-domain scaling factor num/den (<= 1).
struct ScaleFactor {
  int num = 1;
  int den = 1;
  double value() const { return static_cast<double>(num) / den; }
};

// Size of `dim` decoded at `f` (TurboJPEG's TJSCALED: ceil(dim * num / den)).
int scaled_dim(int dim, ScaleFactor f);

// The DCT scales that decode faster than full size: 1/8, 1/4, 3/8 and 1/2.
// libjpeg-turbo 2.1 has SIMD inverse DCTs for 1/1, 1/2, 1/4 and 1/8 only; its
// 5/8, 3/4 and 7/8 decodes are plain C and slower than a full-size decode
// (500x375 4:2:0 quality-90 photos, Ice Lake: 1/1 0.98 ms, 7/8 1.57, 3/4
// 1.31, 5/8 1.06, 1/2 0.73, 3/8 0.73, 1/4 0.62, 1/8 0.54).
bool cheap_jpeg_scale(ScaleFactor f);

// The strongest cheap downscale (cheap_jpeg_scale) TurboJPEG offers such that
// a region of region_w x region_h source pixels still covers at least
// need_w x need_h pixels after scaling; {1,1} when none qualifies.
ScaleFactor choose_jpeg_scale(double region_w, double region_h, double need_w, double need_h);

// Decodes (JPEG at `scale`, PNG always at full size) to gray or RGB as stored
// (palette/alpha/16-bit PNGs become 8-bit gray or RGB).
DecodeStatus decode_image(const uint8_t* data, size_t size, ImageFormat fmt, int64_t max_pixels, ScaleFactor scale,
                          Image* out, std::string* error);

// A rectangle of a JPEG decoded at a DCT scale: `image` holds the pixels
// [x0, x0 + image.width) x [y0, y0 + image.height) of the whole image decoded
// at that scale (full_width x full_height).
struct JpegRegion {
  Image image;
  int x0 = 0, y0 = 0;
  int full_width = 0, full_height = 0;
};

// True when this build has libjpeg's API (jpeglib.h: jpeg_crop_scanline,
// jpeg_skip_scanlines); without it decode_jpeg_region decodes the whole image.
bool jpeg_region_decode_available();

// Decodes the JPEG at `scale` but only (about) the rectangle [x, x + w) x
// [y, y + h), given in pixels of the image decoded at `scale`
// (scaled_dim(width, scale) x scaled_dim(height, scale)); the rectangle is
// clamped to the image. The result covers the rectangle, and its pixels there
// are identical to those of decode_image at the same scale. The decoded
// region has the rectangle's rows and a few more columns: its left edge is
// moved to an iMCU boundary (8 to 32 pixels at full scale), and 2 columns of
// margin on either side keep the region's edge pixels, which libjpeg's smooth
// chroma upsampling treats as image edges, out of the rectangle.
// Rows above and below the region and columns beside it are only
// entropy-decoded (libjpeg's jpeg_skip_scanlines, jpeg_crop_scanline): the
// whole file is read as decode_image reads it, so statuses (truncated,
// corrupt) are the same as decode_image's whatever the rectangle. The pixel
// bound as decode_image; never throws on bad data; thread-safe (per-call
// libjpeg state).
DecodeStatus decode_jpeg_region(const uint8_t* data, size_t size, int64_t max_pixels, ScaleFactor scale, int x, int y,
                                int w, int h, JpegRegion* out, std::string* error);

// Encoders; throw cnx::CheckError on failure (inputs are produced by us).
std::vector<uint8_t> encode_png(const Image& img);
// JPEG chroma subsampling for encode_jpeg (gray images are always stored gray).
enum class ChromaSubsampling { k420, k422, k444, k440, k411 };
std::vector<uint8_t> encode_jpeg(const Image& img, int quality = 90,
                                 ChromaSubsampling subsampling = ChromaSubsampling::k420);

}  // namespace cnx::data
