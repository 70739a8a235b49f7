// Fuzz target: raw Fashion-MNIST records (IDX3 images + IDX1 labels, gzip)
// as cnx-make-shards reads them (data/make_shards.h:
// make_shards_from_fashion_mnist), up to the shards it writes.
//
// Input: one flag byte (bit 0/1: the image/label bytes are written as the
// .gz file as they are instead of being gzip-compressed first, so gzip
// framing is fuzzed too), then the image file's and the label file's
// contents (FuzzedDataProvider strings).
// Contract: DataError, or an index of min(n, limit) samples whose shards
// hold, in order (no shuffle), each record as a 28x28 gray PNG that decodes
// to exactly the record's bytes, labelled with the record's label (0..9).
#include <fuzzer/FuzzedDataProvider.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "data/image_codec.h"
#include "data/make_shards.h"
#include "data/tar_io.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace d = cnx::data;
constexpr int64_t kLimit = 3;

void write_gz(const std::string& path, const std::string& bytes, bool raw) {
  if (raw) {
    cnx::fuzz::write_file(path, bytes.data(), bytes.size());
    return;
  }
  gzFile f = gzopen(path.c_str(), "wb1");
  FUZZ_REQUIRE(f != nullptr, "gzopen " + path);
  if (!bytes.empty()) FUZZ_REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) > 0, "gzwrite");
  gzclose(f);
}

std::string unzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  std::string out;
  char buf[65536];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  FuzzedDataProvider in(data, size);
  const uint8_t flags = in.ConsumeIntegral<uint8_t>();
  const std::string images = in.ConsumeRandomLengthString(1 << 16);
  const std::string labels = in.ConsumeRemainingBytesAsString();
  static const std::string src = cnx::fuzz::scratch_dir() + "/idx";
  static const std::string out = cnx::fuzz::scratch_dir() + "/shards";
  std::filesystem::create_directories(src);
  write_gz(src + "/train-images-idx3-ubyte.gz", images, flags & 1);
  write_gz(src + "/train-labels-idx1-ubyte.gz", labels, flags & 2);

  d::MakeShardsOptions opt;
  opt.out_dir = out;
  opt.force = true;
  opt.shuffle = false;
  opt.limit = kLimit;
  opt.samples_per_shard = 2;
  d::ShardIndex index;
  try {
    index = d::make_shards_from_fashion_mnist(src, "train", opt);
  } catch (const d::DataError&) {
    return 0;
  }
  // Accepted: the files are well-formed; check the shards against them.
  const std::string img = unzip(src + "/train-images-idx3-ubyte.gz");
  const std::string lab = unzip(src + "/train-labels-idx1-ubyte.gz");
  FUZZ_REQUIRE(img.size() >= 16 && lab.size() >= 8, "short IDX files accepted");
  const int64_t n = static_cast<int64_t>((img.size() - 16) / 784);
  FUZZ_REQUIRE(index.total_samples == std::min(n, kLimit), "index holds " + std::to_string(index.total_samples));
  FUZZ_REQUIRE(index.classes.size() == 10, "classes");
  int64_t i = 0;
  for (const auto& shard : index.shards) {
    d::TarSampleReader reader(out + "/" + shard.name, 1 << 20);
    while (auto s = reader.next()) {
      FUZZ_REQUIRE(i < index.total_samples && s->members.size() == 2, "unexpected sample " + s->key);
      for (const auto& m : s->members) {
        if (m.ext == "cls") {
          int64_t label = -1;
          FUZZ_REQUIRE(d::parse_label(m.data, &label) && label == static_cast<uint8_t>(lab[8 + i]) && label <= 9,
                       "label of sample " + std::to_string(i));
        } else {
          FUZZ_REQUIRE(m.ext == "png", "member ." + m.ext);
          d::Image im;
          std::string err;
          FUZZ_REQUIRE(d::decode_image(m.data.data(), m.data.size(), d::ImageFormat::kPng, 1 << 20, {1, 1}, &im,
                                       &err) == d::DecodeStatus::kOk,
                       "PNG of sample " + std::to_string(i) + ": " + err);
          FUZZ_REQUIRE(im.width == 28 && im.height == 28 && im.channels == 1 &&
                           std::memcmp(im.pixels.data(), img.data() + 16 + i * 784, 784) == 0,
                       "pixels of sample " + std::to_string(i));
        }
      }
      ++i;
    }
  }
  FUZZ_REQUIRE(i == index.total_samples, "shards hold " + std::to_string(i) + " samples");
  return 0;
}
