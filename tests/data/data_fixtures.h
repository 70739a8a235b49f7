#pragma once
// Helpers shared by the data tests: synthetic images, ImageFolder trees,
// hand-made shards in a per-test temporary folder, and running a program.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "common/rng.h"
#include "data/image_codec.h"
#include "data/shard_index.h"
#include "data/tar_io.h"

namespace cnx::data::testing {

// A fresh empty folder under the build tree (or /tmp), removed by the caller's TearDown.
inline std::filesystem::path temp_dir(const std::string& name) {
  const char* bin = std::getenv("CNX_BINARY_DIR");
  std::filesystem::path p = std::filesystem::path(bin ? bin : "/tmp") / "test_tmp" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

// Smooth gradients plus a few blobs and mild noise: compresses like a photo.
inline Image synth_image(int w, int h, int channels, uint64_t seed) {
  SplitMix64 rng(seed);
  Image im;
  im.width = w;
  im.height = h;
  im.channels = channels;
  im.pixels.resize(static_cast<size_t>(w) * h * channels);
  const double fx = rng.uniform(0.5, 3.0), fy = rng.uniform(0.5, 3.0), ph = rng.uniform(0, 6.28);
  const double cx = rng.uniform(0, w), cy = rng.uniform(0, h), r = rng.uniform(0.1, 0.4) * std::min(w, h);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const double u = static_cast<double>(x) / w, v = static_cast<double>(y) / h;
      const bool blob = (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r;
      for (int c = 0; c < channels; ++c) {
        double val = 128 + 90 * std::sin(fx * 6.28 * u + ph + c) * std::cos(fy * 6.28 * v - c);
        if (blob) val = 255 - val * 0.5;
        val += rng.uniform(-6, 6);
        im.pixels[(static_cast<size_t>(y) * w + x) * channels + c] = static_cast<uint8_t>(std::clamp(val, 0.0, 255.0));
      }
    }
  }
  return im;
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// root/<class_k>/img_i.{jpg,png}: JPEG and PNG, gray and RGB, odd sizes.
// Returns the number of images written.
inline int make_image_folder(const std::filesystem::path& root, int classes, int per_class, int min_side = 9,
                             int max_side = 61) {
  int n = 0;
  for (int c = 0; c < classes; ++c) {
    for (int i = 0; i < per_class; ++i) {
      SplitMix64 rng(1000 + 37 * c + i);
      const int w = min_side + static_cast<int>(rng.below(max_side - min_side + 1));
      const int h = min_side + static_cast<int>(rng.below(max_side - min_side + 1));
      const int ch = (i % 3 == 0) ? 1 : 3;
      Image im = synth_image(w, h, ch, 77 * c + i);
      const bool jpeg = i % 2 == 0;
      const std::string name = "img_" + std::to_string(i) + (jpeg ? (i % 4 == 0 ? ".JPEG" : ".jpg") : ".png");
      write_bytes(root / ("class_" + std::to_string(c)) / name, jpeg ? encode_jpeg(im, 90) : encode_png(im));
      ++n;
    }
  }
  return n;
}

// Writes one shard from (member name, bytes) pairs and returns its index entry.
inline ShardInfo write_shard(const std::filesystem::path& dir, const std::string& name,
                             const std::vector<std::pair<std::string, std::vector<uint8_t>>>& members,
                             int64_t samples) {
  {
    TarWriter w((dir / name).string());
    for (const auto& [m, b] : members) w.add(m, b.data(), b.size());
    w.close();
  }
  ShardInfo s;
  s.name = name;
  s.samples = samples;
  s.bytes = static_cast<int64_t>(std::filesystem::file_size(dir / name));
  s.sha256 = sha256_file((dir / name).string());
  return s;
}

// Runs a shell command; returns (exit status, stdout + stderr).
inline std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace cnx::data::testing
