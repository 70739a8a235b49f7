// cnx-make-shards as a program: progress bar, refusal to overwrite, --force,
// clear errors; and a Fashion-MNIST subset read through the pipeline.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <set>

#include "data/pipeline.h"
#include "data/shard_index.h"
#include "tests/data/data_fixtures.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

std::string g_tool;  // path of cnx-make-shards (first program argument)

using testing::run;

TEST(MakeShardsCli, FolderSourceProgressOverwriteAndErrors) {
  ASSERT_FALSE(g_tool.empty()) << "pass the cnx-make-shards path as the first argument";
  const fs::path tmp = testing::temp_dir("make_shards_cli");
  const int n = testing::make_image_folder(tmp / "src", 2, 5);
  const std::string base =
      g_tool + " --source imagefolder --input " + (tmp / "src").string() + " -o " + (tmp / "out").string();
  auto [rc, out] = run(base + " --samples-per-shard 3");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("samples/s"), std::string::npos) << out;
  EXPECT_NE(out.find("ETA"), std::string::npos) << out;
  EXPECT_NE(out.find(std::to_string(n) + "/" + std::to_string(n)), std::string::npos) << out;
  const ShardIndex idx = load_index((tmp / "out" / "index.json").string());
  EXPECT_EQ(idx.total_samples, n);
  EXPECT_EQ(idx.shards.size(), 4u);
  EXPECT_EQ(idx.dataset, "src");

  std::tie(rc, out) = run(base + " --samples-per-shard 3");
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("--force"), std::string::npos) << out;
  std::tie(rc, out) = run(base + " --force --quiet --samples-per-shard 100");
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find("ETA"), std::string::npos) << out;
  EXPECT_EQ(load_index((tmp / "out" / "index.json").string()).shards.size(), 1u);

  std::tie(rc, out) =
      run(g_tool + " --source imagefolder --input " + (tmp / "nope").string() + " -o " + (tmp / "o2").string());
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("is not a folder"), std::string::npos) << out;
  std::tie(rc, out) = run(g_tool + " --source tfrecord -o " + (tmp / "o3").string());
  EXPECT_NE(rc, 0);
  fs::remove_all(tmp);
}

// A flat folder with real corrupt files: packed without them, each named
// with its reason in the summary and in skipped.tsv; an image beside class
// folders stops --source imagefolder with a message that says what to do.
TEST(MakeShardsCli, ImagesSourceReportsCorruptFilesAndImageFolderRefusesStrays) {
  const fs::path tmp = testing::temp_dir("make_shards_cli_images");
  const int n = testing::make_image_folder(tmp / "src", 2, 3);  // src/class_*/img_*: 6 good images
  const std::vector<uint8_t> j = encode_jpeg(testing::synth_image(48, 40, 3, 3), 90);
  testing::write_bytes(tmp / "src" / "cut.jpg", std::vector<uint8_t>(j.begin(), j.begin() + j.size() / 3));
  testing::write_bytes(tmp / "src" / "class_1" / "zero.png", {});
  testing::write_bytes(tmp / "src" / "class_0" / "notes.md", {'#'});
  const std::string src = (tmp / "src").string();
  auto [rc, out] = run(g_tool + " --source images --input " + src + " -q -o " + (tmp / "flat").string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("checked " + std::to_string(n + 2) + " inputs: " + std::to_string(n) +
                     " packed, 2 skipped (bad), 1 ignored (not images)"),
            std::string::npos)
      << out;
  const size_t cut = out.find("skipped " + src + "/cut.jpg: ");
  ASSERT_NE(cut, std::string::npos) << out;
  const std::string why = out.substr(cut + src.size() + 18, 15);
  EXPECT_TRUE(why == "truncated_image" || why.rfind("corrupt_image", 0) == 0) << out;
  EXPECT_NE(out.find("skipped " + src + "/class_1/zero.png: empty_file"), std::string::npos) << out;
  EXPECT_NE(out.find("ignored " + src + "/class_0/notes.md: not an image"), std::string::npos) << out;
  EXPECT_NE(out.find("skipped.tsv lists all 3"), std::string::npos) << out;
  const ShardIndex idx = load_index((tmp / "flat" / "index.json").string());
  EXPECT_EQ(idx.total_samples, n);
  EXPECT_TRUE(idx.classes.empty());

  // The same tree as an ImageFolder: cut.jpg lies beside the class folders.
  std::tie(rc, out) = run(g_tool + " --source imagefolder --input " + src + " -q -o " + (tmp / "if").string());
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("cut.jpg"), std::string::npos) << out;
  EXPECT_NE(out.find("--source images"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp / "if" / "index.json"));
  fs::remove(tmp / "src" / "cut.jpg");
  std::tie(rc, out) = run(g_tool + " --source imagefolder --input " + src + " -q -o " + (tmp / "if").string());
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(load_index((tmp / "if" / "index.json").string()).classes.size(), 2u);

  // Its shards back in as WebDataset input: same samples and labels.
  std::tie(rc, out) =
      run(g_tool + " --source webdataset --input " + (tmp / "if").string() + " -q -o " + (tmp / "wds").string());
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(load_index((tmp / "wds" / "index.json").string()).total_samples, n);
  std::tie(rc, out) = run(g_tool + " --source webdataset -o " + (tmp / "wds2").string());
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("--input"), std::string::npos) << out;
  fs::remove_all(tmp);
}

TEST(MakeShardsCli, FashionMnistSubsetThroughThePipeline) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  const fs::path tmp = testing::temp_dir("make_shards_cli_fmnist");
  auto [rc, out] =
      run(g_tool + " --source fashion-mnist --split test --limit 2000 --samples-per-shard 400 -q -o " + tmp.string());
  ASSERT_EQ(rc, 0) << out;
  DataOptions o;
  o.index_path = (tmp / "index.json").string();
  o.input_size = 32;
  o.batch_size = 128;
  o.num_threads = 2;
  o.shuffle_buffer = 300;
  o.require_labels = true;
  o.drop_last = false;
  Pipeline p(o);
  ASSERT_EQ(p.index().shards.size(), 5u);
  EXPECT_EQ(p.index().shards[0].name, "test-000000.tar");
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    p.start_epoch(epoch, {3, 0, 4, 1, 2});
    std::set<std::string> keys;
    std::vector<int64_t> hist(10, 0);
    while (auto b = p.next()) {
      keys.insert(b->keys.begin(), b->keys.end());
      for (int64_t i = 0; i < b->labels.size(0); ++i) {
        const int64_t l = b->labels[i].item<int64_t>();
        ASSERT_TRUE(l >= 0 && l < 10) << l;
        hist[l]++;
      }
    }
    EXPECT_EQ(keys.size(), 2000u);
    for (int c = 0; c < 10; ++c) EXPECT_GT(hist[c], 120) << "class " << c;
  }
  EXPECT_EQ(p.counters().samples_delivered, 4000);
  EXPECT_EQ(p.counters().skipped_total(), 0);
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace cnx::data

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) cnx::data::g_tool = argv[1];
  return RUN_ALL_TESTS();
}
