// decode_jpeg_region (data/image_codec.h): a rectangle of a JPEG through
// libjpeg's API (jpeg_crop_scanline, jpeg_skip_scanlines), identical pixel for
// pixel to TurboJPEG's whole-image decode there. Without jpeglib.h (CMake
// defines CNX_HAVE_LIBJPEG when it finds it) the whole image is decoded.
#include <turbojpeg.h>

#include <algorithm>

#include "data/image_codec.h"

#ifdef CNX_HAVE_LIBJPEG
#include <csetjmp>
#include <cstdio>  // jpeglib.h needs FILE and size_t first

#include <jpeglib.h>
#endif

namespace cnx::data {
namespace {

#ifndef CNX_HAVE_LIBJPEG
DecodeStatus decode_whole(const uint8_t* data, size_t size, int64_t max_pixels, ScaleFactor scale, JpegRegion* out,
                          std::string* error) {
  const DecodeStatus st = decode_image(data, size, ImageFormat::kJpeg, max_pixels, scale, &out->image, error);
  out->x0 = out->y0 = 0;
  out->full_width = out->image.width;
  out->full_height = out->image.height;
  return st;
}
#else

// The rectangle [x, x + w) x [y, y + h) clamped to a full_w x full_h image.
void clamp_rect(int full_w, int full_h, int* x, int* y, int* w, int* h) {
  const int x1 = std::clamp(*x + std::max(*w, 0), 0, full_w), y1 = std::clamp(*y + std::max(*h, 0), 0, full_h);
  *x = std::clamp(*x, 0, full_w);
  *y = std::clamp(*y, 0, full_h);
  *w = std::max(x1 - *x, 0);
  *h = std::max(y1 - *y, 0);
}

// Columns of margin kept between the requested rectangle and the decoded
// region's left edge (after iMCU alignment) and right edge, where not at the
// image's edge: libjpeg's fancy h2v1/h2v2 chroma upsampling treats the first
// and last columns of a cropped region as image edges (libjpeg.txt, "Partial
// image decompression"). tests/data/jpeg_region_test.cc fails without it (a
// pixel at the left and at the right edge differs) and passes with 1; 2 keeps
// a cushion. Rows need none: after jpeg_skip_scanlines libjpeg re-reads the
// iMCU row above when the upsampling needs context rows, and rows below the
// region are read past (read_rows), so its last rows have their context.
constexpr int kMargin = 2;

struct ErrorMgr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  bool warned;
  char message[JMSG_LENGTH_MAX];
};

extern "C" void region_error_exit(j_common_ptr cinfo) {
  ErrorMgr* e = reinterpret_cast<ErrorMgr*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings (corrupt data, premature end) are kept, as TurboJPEG does: the
// first one's text, and the decode goes on; the status is kTruncated then.
extern "C" void region_emit_message(j_common_ptr cinfo, int level) {
  ErrorMgr* e = reinterpret_cast<ErrorMgr*>(cinfo->err);
  if (level >= 0) return;
  if (!e->warned) (*cinfo->err->format_message)(cinfo, e->message);
  e->warned = true;
  ++cinfo->err->num_warnings;
}

// One decode's libjpeg state, destroyed with the object. The functions that
// call into libjpeg set the jump target and hold only trivially destructible
// locals, so a longjmp out of libjpeg skips no destructor.
struct Decompressor {
  jpeg_decompress_struct cinfo;
  ErrorMgr err;
  bool created = false;
  Decompressor() {
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = region_error_exit;
    err.mgr.emit_message = region_emit_message;
    err.warned = false;
    err.message[0] = '\0';
  }
  ~Decompressor() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
  Decompressor(const Decompressor&) = delete;
  Decompressor& operator=(const Decompressor&) = delete;
};

// Header, scale, start; then the horizontal crop to [*x0, *x0 + *w) (moved
// left to an iMCU boundary by libjpeg). False on a libjpeg error.
bool start(Decompressor& d, const uint8_t* data, size_t size, ScaleFactor scale, bool gray, int* x0, int* w) {
  if (setjmp(d.err.jump)) return false;
  jpeg_create_decompress(&d.cinfo);
  d.created = true;
  jpeg_mem_src(&d.cinfo, data, static_cast<unsigned long>(size));
  if (jpeg_read_header(&d.cinfo, TRUE) != JPEG_HEADER_OK) {
    std::snprintf(d.err.message, sizeof(d.err.message), "no image in the JPEG data");
    return false;
  }
  // As TurboJPEG's tjDecompress2 without flags: accurate integer IDCT,
  // fancy upsampling, RGB or gray output.
  d.cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_EXT_RGB;
  d.cinfo.scale_num = static_cast<unsigned int>(scale.num);
  d.cinfo.scale_denom = static_cast<unsigned int>(scale.den);
  jpeg_start_decompress(&d.cinfo);
  if (*x0 > 0 || *w < static_cast<int>(d.cinfo.output_width)) {
    JDIMENSION xoff = static_cast<JDIMENSION>(*x0), width = static_cast<JDIMENSION>(*w);
    jpeg_crop_scanline(&d.cinfo, &xoff, &width);
    *x0 = static_cast<int>(xoff);
    *w = static_cast<int>(width);
  }
  return true;
}

// Skips to row y0, reads rows [y0, y0 + n) into `rows`, then entropy-decodes
// the rows below (jpeg_skip_scanlines: no inverse DCT, upsampling or colour
// conversion) but the last, reads that one into `scratch` and finishes: the
// whole file is read as TurboJPEG reads it, so damage or a missing end
// anywhere gives the same warning or error. (Skipping straight to the end
// would not: libjpeg then stops reading.)
bool read_rows(Decompressor& d, int y0, JSAMPROW* rows, int n, JSAMPROW scratch) {
  if (setjmp(d.err.jump)) return false;
  if (y0 > 0 && jpeg_skip_scanlines(&d.cinfo, static_cast<JDIMENSION>(y0)) != static_cast<JDIMENSION>(y0)) {
    std::snprintf(d.err.message, sizeof(d.err.message), "jpeg_skip_scanlines skipped fewer rows than asked");
    return false;
  }
  int done = 0;
  while (done < n) {
    const JDIMENSION got = jpeg_read_scanlines(&d.cinfo, rows + done, static_cast<JDIMENSION>(n - done));
    if (got == 0) {
      std::snprintf(d.err.message, sizeof(d.err.message), "jpeg_read_scanlines returned no row");
      return false;
    }
    done += static_cast<int>(got);
  }
  const JDIMENSION height = d.cinfo.output_height;
  if (d.cinfo.output_scanline + 1 < height) jpeg_skip_scanlines(&d.cinfo, height - 1 - d.cinfo.output_scanline);
  while (d.cinfo.output_scanline < height) {
    if (jpeg_read_scanlines(&d.cinfo, &scratch, 1) == 0) {
      std::snprintf(d.err.message, sizeof(d.err.message), "jpeg_read_scanlines returned no row");
      return false;
    }
  }
  jpeg_finish_decompress(&d.cinfo);
  return true;
}

// The scale TurboJPEG's tjDecompress2 decodes at when asked for the size of
// `want`: the first of its factors (largest first) whose output fits. It can
// differ from `want` (same output size) for images a few pixels wide.
ScaleFactor turbojpeg_scale(int width, int height, ScaleFactor want) {
  const int tw = scaled_dim(width, want), th = scaled_dim(height, want);
  int n = 0;
  const tjscalingfactor* f = tjGetScalingFactors(&n);
  for (int i = 0; f && i < n; ++i) {
    const ScaleFactor s{f[i].num, f[i].denom};
    if (scaled_dim(width, s) <= tw && scaled_dim(height, s) <= th) return s;
  }
  return want;
}

#endif  // CNX_HAVE_LIBJPEG

}  // namespace

bool jpeg_region_decode_available() {
#ifdef CNX_HAVE_LIBJPEG
  return true;
#else
  return false;
#endif
}

DecodeStatus decode_jpeg_region(const uint8_t* data, size_t size, int64_t max_pixels, ScaleFactor scale, int x, int y,
                                int w, int h, JpegRegion* out, std::string* error) {
#ifndef CNX_HAVE_LIBJPEG
  (void)x, (void)y, (void)w, (void)h;
  return decode_whole(data, size, max_pixels, scale, out, error);
#else
  ImageInfo info;
  const DecodeStatus probed = probe_image(data, size, ImageFormat::kJpeg, max_pixels, &info, error);
  if (probed != DecodeStatus::kOk) return probed;
  const ScaleFactor sf = turbojpeg_scale(info.width, info.height, scale);
  const int full_w = scaled_dim(info.width, sf), full_h = scaled_dim(info.height, sf);
  clamp_rect(full_w, full_h, &x, &y, &w, &h);
  if (w == 0 || h == 0) {  // nothing asked: the smallest region still decodes
    w = std::max(w, 1), h = std::max(h, 1);
    x = std::min(x, full_w - 1), y = std::min(y, full_h - 1);
  }
  // kMargin columns either side; libjpeg moves x0 left to an iMCU boundary.
  const int y0 = y, y1 = y + h;
  int x0 = std::max(0, x - kMargin), rw = std::min(full_w, x + w + kMargin) - x0;

  // A libjpeg error is kCorrupt, unless a warning came first: TurboJPEG's
  // error code is then TJERR_WARNING, which decode_image reports as kTruncated.
  Decompressor d;
  if (!start(d, data, size, sf, info.gray, &x0, &rw)) {
    *error = d.err.message;
    return d.err.warned ? DecodeStatus::kTruncated : DecodeStatus::kCorrupt;
  }
  if (static_cast<int>(d.cinfo.output_width) != rw || static_cast<int>(d.cinfo.output_height) != full_h ||
      d.cinfo.output_components != (info.gray ? 1 : 3) || x0 + rw > full_w || x0 > x - std::min(x, kMargin)) {
    *error = "libjpeg's region geometry differs from the expected one";
    return DecodeStatus::kCorrupt;
  }
  Image& img = out->image;
  img.width = rw;
  img.height = y1 - y0;
  img.channels = info.gray ? 1 : 3;
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * img.channels);
  std::vector<JSAMPROW> rows(static_cast<size_t>(img.height));
  for (int r = 0; r < img.height; ++r) rows[r] = img.pixels.data() + static_cast<size_t>(r) * img.width * img.channels;
  std::vector<JSAMPLE> scratch(static_cast<size_t>(img.width) * img.channels);
  if (!read_rows(d, y0, rows.data(), img.height, scratch.data())) {
    *error = d.err.message;
    return d.err.warned ? DecodeStatus::kTruncated : DecodeStatus::kCorrupt;
  }
  if (d.err.warned) {
    *error = d.err.message;
    return DecodeStatus::kTruncated;
  }
  out->x0 = x0;
  out->y0 = y0;
  out->full_width = full_w;
  out->full_height = full_h;
  return DecodeStatus::kOk;
#endif
}

}  // namespace cnx::data
