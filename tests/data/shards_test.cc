// cnx-make-shards library and shard format: ImageFolder and Fashion-MNIST
// sources, determinism, overwrite protection, index validation.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <map>
#include <set>

#include "data/make_shards.h"
#include "data/shard_index.h"
#include "data/tar_io.h"
#include "tests/data/data_fixtures.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

// key -> (ext -> bytes) of every sample in every shard of an index.
std::map<std::string, std::map<std::string, std::vector<uint8_t>>> read_all(const fs::path& dir,
                                                                            const ShardIndex& idx) {
  std::map<std::string, std::map<std::string, std::vector<uint8_t>>> all;
  for (const auto& s : idx.shards) {
    TarSampleReader r((dir / s.name).string(), 1 << 20);
    int64_t n = 0;
    std::string prev;
    while (auto smp = r.next()) {
      EXPECT_LT(prev, smp->key) << "members not in sorted key order in " << s.name;
      prev = smp->key;
      for (auto& m : smp->members) all[smp->key][m.ext] = std::move(m.data);
      ++n;
    }
    EXPECT_EQ(n, s.samples) << s.name;
  }
  return all;
}

TEST(MakeShards, ImageFolderRoundTripDeterministicAndProtected) {
  const fs::path tmp = testing::temp_dir("make_shards_folder");
  const int n = testing::make_image_folder(tmp / "src", 3, 7);
  testing::write_bytes(tmp / "src" / "class_1" / "notes.txt", {'h', 'i'});
  MakeShardsOptions opt;
  opt.out_dir = (tmp / "out1").string();
  opt.samples_per_shard = 4;
  int64_t last_done = 0, calls = 0;
  opt.progress = [&](int64_t d, int64_t t) {
    EXPECT_EQ(t, n);
    last_done = d;
    ++calls;
  };
  const ShardIndex idx = make_shards_from_folder((tmp / "src").string(), opt);
  EXPECT_EQ(last_done, n);
  EXPECT_EQ(calls, n);
  EXPECT_EQ(idx.total_samples, n);
  EXPECT_EQ(idx.classes, (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  EXPECT_EQ(idx.shards.size(), static_cast<size_t>((n + 3) / 4));
  for (const auto& s : idx.shards) {
    EXPECT_EQ(s.bytes, static_cast<int64_t>(fs::file_size(tmp / "out1" / s.name)));
    EXPECT_EQ(s.sha256, sha256_file((tmp / "out1" / s.name).string()));
  }
  // The index on disk is what was returned.
  const ShardIndex loaded = load_index((tmp / "out1" / "index.json").string());
  EXPECT_EQ(index_to_json(loaded), index_to_json(idx));

  // Every source image is in the shards exactly once, bytes unchanged, with its class label.
  std::multiset<std::pair<std::string, std::string>> source, packed;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "src")) {
    if (!e.is_regular_file() || e.path().extension() == ".txt") continue;
    const std::string cls = e.path().parent_path().filename().string();
    source.insert({sha256_hex(testing::read_bytes(e.path()).data(), fs::file_size(e.path())), cls.substr(6)});
  }
  for (auto& [key, members] : read_all(tmp / "out1", idx)) {
    ASSERT_EQ(members.size(), 2u) << key;
    ASSERT_TRUE(members.count("cls")) << key;
    const auto& img = members.count("jpg") ? members["jpg"] : members["png"];
    packed.insert({sha256_hex(img.data(), img.size()), std::string(members["cls"].begin(), members["cls"].end())});
  }
  EXPECT_EQ(source, packed);

  // Same input -> byte-identical output; a different seed -> a different order.
  opt.out_dir = (tmp / "out2").string();
  opt.progress = nullptr;
  const ShardIndex idx2 = make_shards_from_folder((tmp / "src").string(), opt);
  EXPECT_EQ(index_to_json(idx2), index_to_json(idx));
  opt.out_dir = (tmp / "out3").string();
  opt.seed = 5;
  EXPECT_NE(index_to_json(make_shards_from_folder((tmp / "src").string(), opt)), index_to_json(idx));

  // Refuses to overwrite without force; --force replaces (also stale extra shards).
  opt.out_dir = (tmp / "out1").string();
  opt.seed = 0;
  try {
    make_shards_from_folder((tmp / "src").string(), opt);
    FAIL() << "expected a refusal to overwrite";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos) << e.what();
  }
  opt.force = true;
  opt.samples_per_shard = 100;
  const ShardIndex one = make_shards_from_folder((tmp / "src").string(), opt);
  EXPECT_EQ(one.shards.size(), 1u);
  EXPECT_FALSE(fs::exists(tmp / "out1" / "shard-000001.tar"));

  // Size-bounded shards: each stays under the target unless it holds one sample.
  opt.out_dir = (tmp / "out4").string();
  opt.samples_per_shard = 0;
  opt.shard_size_mb = 8192.0 / 1048576.0;  // 8 KiB
  const ShardIndex small = make_shards_from_folder((tmp / "src").string(), opt);
  EXPECT_GT(small.shards.size(), 2u);
  for (const auto& s : small.shards) {
    if (s.samples > 1) {
      EXPECT_LE(s.bytes, 8192 + 10240) << s.name;  // + libarchive's final block padding
    }
  }
  fs::remove_all(tmp);
}

std::vector<uint8_t> gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  std::vector<uint8_t> out, buf(1 << 16);
  int n;
  while ((n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()))) > 0)
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  gzclose(f);
  return out;
}

TEST(MakeShards, FashionMnistSubsetKeepsPixelsAndLabels) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/t10k-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  const fs::path tmp = testing::temp_dir("make_shards_fmnist");
  MakeShardsOptions opt;
  opt.out_dir = tmp.string();
  opt.prefix = "test";
  opt.limit = 2000;
  opt.samples_per_shard = 500;
  opt.shuffle = false;  // key i is source image i
  const ShardIndex idx = make_shards_from_fashion_mnist(dir, "test", opt);
  EXPECT_EQ(idx.total_samples, 2000);
  EXPECT_EQ(idx.shards.size(), 4u);
  EXPECT_EQ(idx.shards[0].name, "test-000000.tar");
  EXPECT_EQ(idx.classes.size(), 10u);
  EXPECT_EQ(idx.classes[0], "T-shirt/top");
  const auto images = gunzip(dir + "/t10k-images-idx3-ubyte.gz");
  const auto labels = gunzip(dir + "/t10k-labels-idx1-ubyte.gz");
  auto all = read_all(tmp, idx);
  ASSERT_EQ(all.size(), 2000u);
  std::vector<int> hist(10, 0);
  int64_t i = 0;
  for (auto& [key, m] : all) {
    ASSERT_EQ(key, std::string(9 - std::to_string(i).size(), '0') + std::to_string(i));
    Image im;
    std::string err;
    ASSERT_EQ(decode_image(m["png"].data(), m["png"].size(), ImageFormat::kPng, 1 << 20, {}, &im, &err),
              DecodeStatus::kOk);
    ASSERT_EQ(im.width, 28);
    ASSERT_EQ(im.height, 28);
    ASSERT_EQ(im.channels, 1);
    ASSERT_TRUE(std::equal(im.pixels.begin(), im.pixels.end(), images.begin() + 16 + i * 784)) << key;
    const int label = std::stoi(std::string(m["cls"].begin(), m["cls"].end()));
    ASSERT_EQ(label, labels[8 + i]) << key;
    hist[label]++;
    ++i;
  }
  for (int c = 0; c < 10; ++c) EXPECT_GT(hist[c], 100) << "class " << c;  // roughly balanced
  // The shuffled default draws a different subset, deterministically.
  opt.shuffle = true;
  opt.force = true;
  const ShardIndex a = make_shards_from_fashion_mnist(dir, "test", opt);
  opt.out_dir = (tmp / "again").string();
  const ShardIndex b = make_shards_from_fashion_mnist(dir, "test", opt);
  EXPECT_EQ(index_to_json(a), index_to_json(b));
  EXPECT_NE(a.shards[0].sha256, idx.shards[0].sha256);
  EXPECT_THROW(make_shards_from_fashion_mnist(dir, "val", opt), DataError);
  fs::remove_all(tmp);
}

TEST(ShardIndex, RejectsMalformedIndexesWithTheField) {
  const std::string sha(64, 'a');
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      parse_index(json, "idx.json");
      ADD_FAILURE() << "accepted: " << json;
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{", "not valid JSON");
  expect_error(R"({"version":2,"dataset":"x","total_samples":0,"shards":[]})", "version");
  expect_error(
      R"({"version":1,"dataset":"x","total_samples":5,"shards":[{"name":"a.tar","samples":4,"bytes":1,"sha256":")" +
          sha + R"("}]})",
      "total_samples");
  expect_error(
      R"({"version":1,"dataset":"x","total_samples":4,"shards":[{"name":"a.tar","samples":4,"bytes":1,"sha256":"xyz"}]})",
      "shards[0]: sha256");
  expect_error(
      R"({"version":1,"dataset":"x","total_samples":4,"shards":[{"name":"../a.tar","samples":4,"bytes":1,"sha256":")" +
          sha + R"("}]})",
      "bad shard name");
  expect_error(
      R"({"version":1,"dataset":"x","total_samples":4,"shards":[{"name":"a.tar","samples":-4,"bytes":1,"sha256":")" +
          sha + R"("}]})",
      "\"samples\"");
  expect_error(R"({"version":1,"total_samples":0,"shards":[]})", "\"dataset\"");
  const ShardIndex ok = parse_index(
      R"({"version":1,"dataset":"x","total_samples":4,"shards":[{"name":"a.tar","samples":4,"bytes":1,"sha256":")" +
          sha + R"("}]})",
      "idx.json");
  EXPECT_EQ(ok.shards[0].samples, 4);
  EXPECT_TRUE(ok.classes.empty());
  EXPECT_THROW(load_index("/nonexistent/index.json"), DataError);
}

TEST(TarIo, SplitsMemberNamesAtTheFirstDotOfTheBasename) {
  EXPECT_EQ(split_member_name("a/b.x.JPG"), (std::pair<std::string, std::string>{"a/b", "x.jpg"}));
  EXPECT_EQ(split_member_name("a.b/c"), (std::pair<std::string, std::string>{"a.b/c", ""}));
  EXPECT_EQ(split_member_name("000001.cls"), (std::pair<std::string, std::string>{"000001", "cls"}));
}

}  // namespace
}  // namespace cnx::data
