#pragma once
// Shared helpers for tests/tools: temp folders, tiny models, synthetic
// labelled shards.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/rng.h"
#include "data/image_codec.h"
#include "data/shard_index.h"
#include "data/tar_io.h"
#include "model/fcmae.h"

namespace cnx::tools::testing {

// A fresh folder under the temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("cnx_tools_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A small FCMAE (2 blocks in stage 2, narrow) for fast tests.
inline model::FcmaeOptions tiny_fcmae_options() {
  model::FcmaeOptions o;
  o.encoder.depths = {1, 1, 2, 1};
  o.encoder.dims = {8, 16, 24, 32};
  o.encoder.num_classes = 0;
  o.decoder_dim = 16;
  o.decoder_depth = 1;
  o.encoder_type = "dense_masked";
  return o;
}

// The model's parameters and buffers by name, as the trainer's model.pt holds them.
inline std::vector<std::pair<std::string, at::Tensor>> module_state(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : m.named_parameters(true)) out.emplace_back(item.key(), item.value().detach().clone());
  for (const auto& item : m.named_buffers(true)) out.emplace_back(item.key(), item.value().detach().clone());
  return out;
}

// Colour class c of `classes`: a distinct base RGB per class.
inline void class_colour(int64_t c, int64_t classes, uint8_t rgb[3]) {
  static const uint8_t palette[6][3] = {{220, 40, 40},  {40, 200, 40},  {40, 60, 220},
                                        {230, 220, 50}, {200, 60, 210}, {60, 210, 210}};
  (void)classes;
  for (int k = 0; k < 3; ++k) rgb[k] = palette[c % 6][k];
}

// Writes `n` size x size PNG samples into `shards` tar files under dir with
// index.json. Label of sample i: i % classes, or a seeded random label when
// random_labels. Pixels: the class colour of the TRUE class i % classes plus
// uniform noise of +-noise, so images are separable by colour and random
// labels carry no information. Optionally one corrupt image (sample 0).
inline std::string write_colour_shards(const std::string& dir, int64_t n, int64_t classes, int size, int shards,
                                       bool random_labels, uint64_t seed, bool corrupt_first = false, int noise = 30) {
  std::filesystem::create_directories(dir);
  SplitMix64 rng(seed);
  data::ShardIndex index;
  index.dataset = "colours";
  for (int64_t c = 0; c < classes; ++c) index.classes.push_back("c" + std::to_string(c));
  const int64_t per = (n + shards - 1) / shards;
  for (int s = 0; s < shards; ++s) {
    const std::string name = "part-" + std::to_string(s) + ".tar";
    const std::string path = dir + "/" + name;
    int64_t count = 0;
    {
      data::TarWriter w(path);
      for (int64_t i = s * per; i < std::min(n, (s + 1) * per); ++i, ++count) {
        const int64_t truth = i % classes;
        const int64_t label = random_labels ? static_cast<int64_t>(rng.below(classes)) : truth;
        data::Image img;
        img.width = img.height = size;
        img.channels = 3;
        img.pixels.resize(static_cast<size_t>(size) * size * 3);
        uint8_t base[3];
        class_colour(truth, classes, base);
        for (size_t p = 0; p < img.pixels.size(); ++p) {
          const int v = base[p % 3] + static_cast<int>(rng.below(2 * noise + 1)) - noise;
          img.pixels[p] = static_cast<uint8_t>(std::min(255, std::max(0, v)));
        }
        char key[32];
        std::snprintf(key, sizeof(key), "%09lld", static_cast<long long>(i));
        std::vector<uint8_t> png = data::encode_png(img);
        if (corrupt_first && i == 0) png.resize(png.size() / 3);
        w.add(std::string(key) + ".png", png.data(), png.size());
        const std::string cls = std::to_string(label);
        w.add(std::string(key) + ".cls", cls.data(), cls.size());
      }
      w.close();
    }
    data::ShardInfo info;
    info.name = name;
    info.samples = count;
    info.bytes = static_cast<int64_t>(std::filesystem::file_size(path));
    info.sha256 = cnx::sha256_file(path);
    index.shards.push_back(info);
    index.total_samples += count;
  }
  const std::string index_path = dir + "/index.json";
  data::save_index(index, index_path);
  return index_path;
}

}  // namespace cnx::tools::testing
