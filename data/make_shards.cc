#include "data/make_shards.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>

#include "common/check.h"
#include "common/logging.h"
#include "common/rng.h"
#include "data/image_codec.h"
#include "data/tar_io.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

// One sample to write: image bytes + extension + label (-1 = none).
struct SourceSample {
  std::vector<uint8_t> image;
  std::string ext;
  int64_t label = -1;
};
using SampleSource = std::function<SourceSample(int64_t)>;

void prepare_out_dir(const MakeShardsOptions& opt) {
  if (opt.out_dir.empty()) throw DataError("make-shards: no output folder given");
  std::error_code ec;
  fs::create_directories(opt.out_dir, ec);
  if (ec) throw DataError(str("make-shards: cannot create ", opt.out_dir, ": ", ec.message()));
  const std::regex shard_re(std::regex_replace(opt.prefix, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                            R"(-\d{6}\.tar)");
  std::vector<fs::path> existing;
  for (const auto& e : fs::directory_iterator(opt.out_dir)) {
    const std::string name = e.path().filename().string();
    if (name == opt.index_name || std::regex_match(name, shard_re)) existing.push_back(e.path());
  }
  if (existing.empty()) return;
  std::sort(existing.begin(), existing.end());
  if (!opt.force) {
    throw DataError(str("make-shards: ", opt.out_dir, " already holds ", existing.front().filename().string(),
                        existing.size() > 1 ? str(" and ", existing.size() - 1, " more") : std::string(),
                        "; pass --force to replace them"));
  }
  for (const auto& p : existing) fs::remove(p);
}

ShardIndex write_shards(int64_t count, const SampleSource& source, std::vector<std::string> classes,
                        const std::string& dataset, const MakeShardsOptions& opt) {
  if (opt.shard_size_mb < 0 || opt.samples_per_shard < 0 || opt.limit < 0) {
    throw DataError("make-shards: shard size, samples per shard and limit must be >= 0");
  }
  prepare_out_dir(opt);
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (opt.shuffle) {
    SplitMix64 rng(mix_seed(opt.seed, 0x6d616b65ULL));
    for (int64_t i = count - 1; i > 0; --i) {
      std::swap(order[i], order[static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
    }
  }
  if (opt.limit > 0 && opt.limit < count) order.resize(static_cast<size_t>(opt.limit));
  const int64_t total = static_cast<int64_t>(order.size());
  const int64_t max_bytes = opt.shard_size_mb > 0 ? static_cast<int64_t>(opt.shard_size_mb * 1048576.0) : 0;

  ShardIndex index;
  index.dataset = opt.dataset.empty() ? dataset : opt.dataset;
  index.classes = std::move(classes);
  std::unique_ptr<TarWriter> tar;
  ShardInfo cur;
  int64_t cur_bytes = 0;
  auto finish = [&]() {
    tar->close();
    tar.reset();
    const std::string path = opt.out_dir + "/" + cur.name;
    cur.bytes = static_cast<int64_t>(fs::file_size(path));
    cur.sha256 = sha256_file(path);
    index.total_samples += cur.samples;
    index.shards.push_back(cur);
  };
  char key[32];
  for (int64_t o = 0; o < total; ++o) {
    SourceSample s = source(order[o]);
    std::snprintf(key, sizeof(key), "%09lld", static_cast<long long>(o));
    const std::string label = s.label >= 0 ? std::to_string(s.label) : std::string();
    const int64_t bytes =
        TarWriter::member_bytes(s.image.size()) + (label.empty() ? 0 : TarWriter::member_bytes(label.size()));
    if (tar && ((max_bytes > 0 && cur_bytes + bytes + 1024 > max_bytes) ||
                (opt.samples_per_shard > 0 && cur.samples >= opt.samples_per_shard))) {
      finish();
    }
    if (!tar) {
      char name[64];
      std::snprintf(name, sizeof(name), "-%06zu.tar", index.shards.size());
      cur = ShardInfo();
      cur.name = opt.prefix + name;
      tar = std::make_unique<TarWriter>(opt.out_dir + "/" + cur.name);
      cur_bytes = 0;
    }
    // Sorted member order: "<key>.cls" < "<key>.jpg" < "<key>.png".
    if (!label.empty()) tar->add(str(key, ".cls"), label.data(), label.size());
    tar->add(str(key, ".", s.ext), s.image.data(), s.image.size());
    cur.samples += 1;
    cur_bytes += bytes;
    if (opt.progress) opt.progress(o + 1, total);
  }
  if (tar) finish();
  save_index(index, opt.out_dir + "/" + opt.index_name);
  return index;
}

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw DataError(str("make-shards: cannot read ", p.string()));
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> read_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw DataError(str("make-shards: cannot open ", path));
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  int n;
  while ((n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0)
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  std::string what = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) throw DataError(str("make-shards: bad gzip ", path, ": ", what));
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t off) {
  return (uint32_t{b[off]} << 24) | (uint32_t{b[off + 1]} << 16) | (uint32_t{b[off + 2]} << 8) | uint32_t{b[off + 3]};
}

}  // namespace

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> k = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                             "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return k;
}

ShardIndex make_shards_from_folder(const std::string& root, const MakeShardsOptions& opt) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) throw DataError(str("make-shards: ", root, " is not a folder"));
  std::vector<std::string> classes;
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) classes.push_back(e.path().filename().string());
  }
  std::sort(classes.begin(), classes.end());
  if (classes.empty())
    throw DataError(str("make-shards: ", root, " has no class sub-folders (expected root/<class>/<image>)"));
  struct Item {
    fs::path path;
    std::string ext;
    int64_t label;
  };
  std::vector<Item> items;
  int64_t ignored = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(fs::path(root) / classes[c])) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::string ext = f.extension().string();
      if (!ext.empty()) ext = ext.substr(1);
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (ext == "jpeg") ext = "jpg";
      if (format_from_extension(ext) == ImageFormat::kUnknown) {
        CNX_LOG_WARN("make-shards: ignoring {} (not .jpg/.jpeg/.png)", f.string());
        ++ignored;
        continue;
      }
      items.push_back({f, ext, static_cast<int64_t>(c)});
    }
  }
  if (ignored > 0) CNX_LOG_WARN("make-shards: ignored {} files that are not images", ignored);
  const std::string name = fs::path(root).lexically_normal().filename().string();
  return write_shards(
      static_cast<int64_t>(items.size()),
      [&](int64_t i) {
        SourceSample s;
        s.image = read_file(items[i].path);
        s.ext = items[i].ext;
        s.label = items[i].label;
        return s;
      },
      classes, name.empty() ? std::string("images") : name, opt);
}

ShardIndex make_shards_from_fashion_mnist(const std::string& dir, const std::string& split,
                                          const MakeShardsOptions& opt) {
  if (split != "train" && split != "test")
    throw DataError(str("make-shards: split must be train or test, got ", split));
  const std::string stem = split == "train" ? "train" : "t10k";
  const std::string img_path = dir + "/" + stem + "-images-idx3-ubyte.gz";
  const std::string lab_path = dir + "/" + stem + "-labels-idx1-ubyte.gz";
  const std::vector<uint8_t> imgs = read_gzip(img_path);
  const std::vector<uint8_t> labs = read_gzip(lab_path);
  if (imgs.size() < 16 || be32(imgs, 0) != 0x00000803)
    throw DataError(str("make-shards: ", img_path, " is not an IDX3 uint8 file"));
  if (labs.size() < 8 || be32(labs, 0) != 0x00000801)
    throw DataError(str("make-shards: ", lab_path, " is not an IDX1 uint8 file"));
  const int64_t n = be32(imgs, 4), rows = be32(imgs, 8), cols = be32(imgs, 12);
  if (rows != 28 || cols != 28)
    throw DataError(str("make-shards: ", img_path, " holds ", rows, "x", cols, " images, expected 28x28"));
  if (static_cast<int64_t>(imgs.size()) != 16 + n * rows * cols)
    throw DataError(str("make-shards: ", img_path, " is truncated"));
  if (be32(labs, 4) != n || static_cast<int64_t>(labs.size()) != 8 + n) {
    throw DataError(str("make-shards: ", lab_path, " does not hold ", n, " labels"));
  }
  return write_shards(
      n,
      [&](int64_t i) {
        Image im;
        im.width = static_cast<int>(cols);
        im.height = static_cast<int>(rows);
        im.channels = 1;
        im.pixels.assign(imgs.begin() + 16 + i * rows * cols, imgs.begin() + 16 + (i + 1) * rows * cols);
        SourceSample s;
        s.image = encode_png(im);
        s.ext = "png";
        s.label = labs[8 + i];
        if (s.label > 9)
          throw DataError(str("make-shards: ", lab_path, ": label ", s.label, " of sample ", i, " is not in 0..9"));
        return s;
      },
      fashion_mnist_classes(), "fashion-mnist-" + split, opt);
}

}  // namespace cnx::data
