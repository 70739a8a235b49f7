#pragma once
// FCMAE reconstructions as pictures (the library behind cnx-visualize).
//
// For each image, four panels side by side (MAE's visualisation):
//   original | masked input | reconstruction | reconstruction pasted into
//   the visible patches (visible patches = original pixels, masked patches
//   = reconstruction).
// With norm_pix_loss the model predicts each patch standardised by its own
// mean and variance; as MAE's visualisations of norm_pix models do, the
// prediction is un-normalised with the statistics of the same patch of the
// original (pred * sqrt(var + 1e-6) + mean, unbiased variance as in the
// loss). So the masked patches' mean colour and contrast come from the
// original and the picture shows the structure the model predicted. Without
// norm_pix_loss the prediction is used as it is. Pixels are then
// un-normalised with the data mean/std, scaled to 0..255, rounded, clamped.
// Masked patches in panel 2 are filled with mid grey (128).
//
// Threading: single-threaded use of the model; pure functions otherwise.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image_codec.h"
#include "model/fcmae.h"

namespace cnx::viz {

struct Panels {
  at::Tensor original;    // uint8 [N, H, W, 3]
  at::Tensor masked;      // uint8 [N, H, W, 3]
  at::Tensor recon;       // uint8 [N, H, W, 3]
  at::Tensor pasted;      // uint8 [N, H, W, 3]
  at::Tensor pixel_mask;  // bool [N, H, W], true = masked
  double loss = 0;        // the model's loss on this batch
};

struct Normalization {
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  double crop_pct = 0.875;  // loading: resize to size / crop_pct, centre crop (1.0 = whole image)
};

// images: normalised float [N, 3, H, W] (H, W multiples of the patch size);
// mask: float [N, L], 1 = masked. Runs the model in eval mode, no autograd.
Panels reconstruct(model::FcmaeImpl& net, const at::Tensor& images, const at::Tensor& mask,
                   const Normalization& norm = {});

// Un-normalises [N, 3, H, W] to uint8 [N, H, W, 3].
at::Tensor to_uint8_hwc(const at::Tensor& images, const Normalization& norm);

// One row: the four panels of image i separated by `gap` white columns.
// Result: height H, width 4*W + 3*gap, 3 channels.
data::Image compose_row(const Panels& panels, int64_t i, int gap);

// Rows stacked top to bottom with `gap` white rows between them (same widths).
data::Image stack_rows(const std::vector<data::Image>& rows, int gap);

// The column names of a row, left to right.
const std::vector<std::string>& panel_labels();

// Images to show, decoded and eval-transformed (resize to size/crop_pct,
// center crop; data/transform.h) and normalised with `norm`: float [N, 3, size, size].
// From shards: the first `count` decodable images in index order (keys
// "<shard>/<key>" appended to *keys). Undecodable samples are skipped;
// throws data::DataError when none could be read or a file is unreadable.
at::Tensor load_shard_images(const std::string& index_path, int64_t count, int64_t size, const Normalization& norm,
                             std::vector<std::string>* keys);
at::Tensor load_image_files(const std::vector<std::string>& paths, int64_t size, const Normalization& norm);

// Writes a PNG (libpng); throws std::runtime_error naming the path on failure.
void write_png(const std::string& path, const data::Image& image);

}  // namespace cnx::viz
