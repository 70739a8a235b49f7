#pragma once
// Per-sample augmentation: RandomResizedCrop / eval resize + center crop,
// bicubic antialiased resampling, horizontal flip, normalisation.
//
// Everything here is a pure function of its inputs (the random stream is
// passed in), so the same bytes, seed, epoch and key give the same pixels
// on any thread, in any run.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/rng.h"
#include "data/image_codec.h"

namespace cnx::data {

struct CropBox {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;
};

// torchvision's RandomResizedCrop.get_params: 10 attempts of
// (area ~ U(scale) * H * W, log-ratio ~ U(log ratio)), then the
// center-crop fallback clamped to the ratio range.
CropBox random_resized_crop_box(int64_t height, int64_t width, double scale_lo, double scale_hi, double ratio_lo,
                                double ratio_hi, SplitMix64& rng);

// Resampling along one axis of the source: output pixel i (i in [out_start,
// out_start + out_count)) of a resize of the source interval
// [box_start, box_start + box_len) to out_size pixels. Source pixels outside
// [floor(box_start), ceil(box_start + box_len)) are never read (as if the
// box had been cropped first).
struct ResampleAxis {
  double box_start = 0;
  double box_len = 0;
  int64_t out_size = 0;
  int64_t out_start = 0;
  int64_t out_count = 0;
};

// Separable antialiased bicubic (Keys a = -0.5, support scaled with the
// downscale factor, weights renormalised at the box edges): the same filter
// as torch.nn.functional.interpolate(mode="bicubic", antialias=True,
// align_corners=False) and PIL's BICUBIC. Source: 8-bit HWC with `channels`
// channels; result: float HWC (out_count_y x out_count_x x channels), not
// clamped, in 0..255 units. Width is resampled first, then height.
std::vector<float> resize_bicubic_aa(const uint8_t* src, int64_t height, int64_t width, int64_t channels,
                                     const ResampleAxis& y, const ResampleAxis& x);

struct TransformOptions {
  int64_t size = 224;  // output is size x size
  bool train = true;   // RandomResizedCrop + flip; false: resize to size/crop_pct, center crop
  // Eval only: the shorter side is resized to floor(size / crop_pct), then
  // the centre size x size is kept (timm / torchvision convention). 0.875 is
  // the ImageNet convention; 1.0 keeps the whole (square) image, for data
  // whose objects fill the frame (Fashion-MNIST). In (0, 1].
  double crop_pct = 0.875;
  double scale_lo = 0.2, scale_hi = 1.0;
  double ratio_lo = 3.0 / 4.0, ratio_hi = 4.0 / 3.0;
  bool hflip = true;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};  // in [0, 1] pixel units
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  bool dct_scaling = true;  // JPEG: decode at the smallest DCT scale that keeps the crop >= size
  // JPEG: when the crop is smaller than the image, decode only (about) the
  // crop's rows and columns (decode_jpeg_region); same pixels, less work.
  bool crop_decode = true;
  int64_t max_pixels = int64_t{1} << 26;  // refuse images with more pixels (header check)
};

struct TransformResult {
  DecodeStatus status = DecodeStatus::kOk;
  std::string error;       // decoder message when status != kOk
  std::vector<float> chw;  // 3 x size x size, normalised
  ScaleFactor jpeg_scale;  // the DCT scale used (1/1 for PNG)
};

// Decodes `data` and produces the normalised 3 x size x size float image.
// Thread-safe; each calling thread keeps scratch buffers (decoded image and
// resize intermediates) sized by the largest image it has processed.
// `rng` is the sample's stream (sample_rng(seed, epoch, key)); the crop draws
// come first, then the flip draw. Never throws on bad image data (throws
// cnx::CheckError for options out of range).
TransformResult decode_and_transform(const uint8_t* data, size_t size, ImageFormat fmt, SplitMix64 rng,
                                     const TransformOptions& opt);

}  // namespace cnx::data
