#include "tools/visualize/reconstruct.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "common/check.h"
#include "common/logging.h"
#include "common/rng.h"
#include "data/shard_index.h"
#include "data/tar_io.h"
#include "data/transform.h"

namespace cnx::viz {

at::Tensor to_uint8_hwc(const at::Tensor& images, const Normalization& norm) {
  const at::Tensor mean = at::tensor(std::vector<float>(norm.mean.begin(), norm.mean.end())).view({1, 3, 1, 1});
  const at::Tensor std = at::tensor(std::vector<float>(norm.std.begin(), norm.std.end())).view({1, 3, 1, 1});
  const at::Tensor pixels = ((images.to(at::kFloat) * std + mean) * 255.0f).round().clamp(0.0, 255.0);
  return pixels.to(at::kByte).permute({0, 2, 3, 1}).contiguous();
}

Panels reconstruct(model::FcmaeImpl& net, const at::Tensor& images, const at::Tensor& mask, const Normalization& norm) {
  const int64_t p = net.patch_size();
  CNX_CHECK(images.dim() == 4 && images.size(1) == 3, "reconstruct: images must be [N, 3, H, W], got ", images.sizes());
  CNX_CHECK(images.size(2) % p == 0 && images.size(3) % p == 0, "reconstruct: image size ", images.size(2), "x",
            images.size(3), " is not a multiple of the patch size ", p);
  const int64_t n = images.size(0), hp = images.size(2) / p, wp = images.size(3) / p;
  CNX_CHECK(mask.dim() == 2 && mask.size(0) == n && mask.size(1) == hp * wp, "reconstruct: mask must be [", n, ", ",
            hp * wp, "], got ", mask.sizes());
  at::NoGradGuard no_grad;
  const bool was_training = net.is_training();
  net.eval();
  model::FcmaeOutput out = net.forward(images, mask);
  if (was_training) net.train();

  // (N, p*p*3, hp, wp) -> (N, L, p*p*3), as the reference loss reads it.
  at::Tensor pred = out.pred.reshape({n, out.pred.size(1), hp * wp}).transpose(1, 2);
  if (net.options().norm_pix_loss) {
    const at::Tensor target = model::patchify(images, p);
    const at::Tensor mean = target.mean(-1, /*keepdim=*/true);
    const at::Tensor var = target.var(-1, /*unbiased=*/true, /*keepdim=*/true);
    pred = pred * (var + 1e-6).sqrt() + mean;
  }
  const at::Tensor recon = model::unpatchify(pred.contiguous(), p, hp, wp);

  Panels r;
  r.loss = out.loss.item<double>();
  r.original = to_uint8_hwc(images, norm);
  r.recon = to_uint8_hwc(recon, norm);
  r.pixel_mask = (mask.reshape({n, hp, wp}) > 0.5).repeat_interleave(p, 1).repeat_interleave(p, 2).contiguous();
  const at::Tensor m = r.pixel_mask.unsqueeze(-1);
  r.masked = at::where(m, at::full({}, 128, at::kByte), r.original).contiguous();
  r.pasted = at::where(m, r.recon, r.original).contiguous();
  return r;
}

data::Image compose_row(const Panels& panels, int64_t i, int gap) {
  CNX_CHECK(i >= 0 && i < panels.original.size(0), "compose_row: image ", i, " outside the batch of ",
            panels.original.size(0));
  CNX_CHECK(gap >= 0, "compose_row: gap must be >= 0");
  const int64_t h = panels.original.size(1), w = panels.original.size(2);
  data::Image img;
  img.height = static_cast<int>(h);
  img.width = static_cast<int>(4 * w + 3 * gap);
  img.channels = 3;
  img.pixels.assign(static_cast<size_t>(img.width) * img.height * 3, 255);
  const at::Tensor* parts[4] = {&panels.original, &panels.masked, &panels.recon, &panels.pasted};
  for (int k = 0; k < 4; ++k) {
    const at::Tensor src = (*parts[k])[i].contiguous();
    const uint8_t* s = src.data_ptr<uint8_t>();
    for (int64_t y = 0; y < h; ++y) {
      std::memcpy(img.pixels.data() + (y * img.width + k * (w + gap)) * 3, s + y * w * 3, static_cast<size_t>(w) * 3);
    }
  }
  return img;
}

const std::vector<std::string>& panel_labels() {
  static const std::vector<std::string> labels{"original", "masked input", "prediction", "prediction + visible"};
  return labels;
}

data::Image stack_rows(const std::vector<data::Image>& rows, int gap) {
  CNX_CHECK(!rows.empty(), "stack_rows: no rows");
  CNX_CHECK(gap >= 0, "stack_rows: gap must be >= 0");
  data::Image img;
  img.width = rows[0].width;
  img.channels = 3;
  for (const auto& r : rows) {
    CNX_CHECK(r.width == img.width && r.channels == 3, "stack_rows: rows differ in width or channels");
    img.height += r.height;
  }
  img.height += gap * static_cast<int>(rows.size() - 1);
  img.pixels.assign(static_cast<size_t>(img.width) * img.height * 3, 255);
  size_t offset = 0;
  for (const auto& r : rows) {
    std::memcpy(img.pixels.data() + offset, r.pixels.data(), r.pixels.size());
    offset += r.pixels.size() + static_cast<size_t>(gap) * img.width * 3;
  }
  return img;
}

namespace {

// Decodes one encoded image into row `row` of `out`; false when undecodable.
bool decode_into(const std::vector<uint8_t>& bytes, data::ImageFormat fmt, int64_t size, const Normalization& norm,
                 const std::string& name, std::vector<float>* out) {
  data::TransformOptions t;
  t.size = size;
  t.train = false;
  t.hflip = false;
  t.mean = norm.mean;
  t.std = norm.std;
  t.crop_pct = norm.crop_pct;
  const data::TransformResult r = data::decode_and_transform(bytes.data(), bytes.size(), fmt, SplitMix64(0), t);
  if (r.status != data::DecodeStatus::kOk) {
    CNX_LOG_WARN("skipping {}: {} ({})", name, data::decode_status_name(r.status), r.error);
    return false;
  }
  out->insert(out->end(), r.chw.begin(), r.chw.end());
  return true;
}

at::Tensor as_batch(std::vector<float>&& pixels, int64_t size) {
  const int64_t n = static_cast<int64_t>(pixels.size()) / (3 * size * size);
  at::Tensor t = at::empty({n, 3, size, size}, at::kFloat);
  std::memcpy(t.data_ptr<float>(), pixels.data(), pixels.size() * sizeof(float));
  return t;
}

}  // namespace

at::Tensor load_shard_images(const std::string& index_path, int64_t count, int64_t size, const Normalization& norm,
                             std::vector<std::string>* keys) {
  CNX_CHECK(count > 0 && size > 0, "load_shard_images: count and size must be > 0");
  const data::ShardIndex index = data::load_index(index_path);
  const std::string root = std::filesystem::path(index_path).parent_path().string();
  std::vector<float> pixels;
  int64_t got = 0;
  for (const auto& shard : index.shards) {
    if (got >= count) break;
    data::TarSampleReader reader((root.empty() ? std::string(".") : root) + "/" + shard.name, int64_t{64} << 20);
    while (got < count) {
      auto s = reader.next(true);
      if (!s) break;
      for (const auto& m : s->members) {
        const data::ImageFormat fmt = data::format_from_extension(m.ext);
        if (fmt == data::ImageFormat::kUnknown || m.too_large) continue;
        const std::string name = shard.name + "/" + s->key;
        if (decode_into(m.data, fmt, size, norm, name, &pixels)) {
          ++got;
          if (keys) keys->push_back(name);
        }
        break;
      }
    }
  }
  if (got == 0) throw data::DataError("no decodable image in the shards of '" + index_path + "'");
  return as_batch(std::move(pixels), size);
}

at::Tensor load_image_files(const std::vector<std::string>& paths, int64_t size, const Normalization& norm) {
  std::vector<float> pixels;
  for (const auto& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw data::DataError("cannot open image '" + path + "'");
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::string ext = std::filesystem::path(path).extension().string();
    for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const data::ImageFormat fmt = data::format_from_extension(ext.empty() ? ext : ext.substr(1));
    if (fmt == data::ImageFormat::kUnknown) throw data::DataError("'" + path + "' is not a .jpg/.jpeg/.png file");
    if (!decode_into(bytes, fmt, size, norm, path, &pixels))
      throw data::DataError("cannot decode image '" + path + "'");
  }
  CNX_CHECK(!pixels.empty(), "load_image_files: no paths given");
  return as_batch(std::move(pixels), size);
}

void write_png(const std::string& path, const data::Image& image) {
  const std::vector<uint8_t> bytes = data::encode_png(image);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write PNG '" + path + "'");
}

}  // namespace cnx::viz
