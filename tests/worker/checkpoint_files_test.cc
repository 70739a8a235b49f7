#include "worker/checkpoint_files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

class CheckpointFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() / ("cnx_ckpt_files_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Writes a checkpoint of `step` with two files and commits it locally.
  std::string make(int64_t step) {
    const std::string tmp = root_ + "/" + temp_checkpoint_name(step);
    fs::create_directories(tmp);
    Manifest m;
    m["model.pt"] = write_file_durable(tmp + "/model.pt", "weights of step " + std::to_string(step));
    m["rank-00000.json"] = write_file_durable(tmp + "/rank-00000.json", "{\"cursor\": 1}");
    return commit_local(root_, tmp, step, m);
  }
  std::string root_;
};

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(CheckpointNames, FormatAndParse) {
  EXPECT_EQ(checkpoint_name(120), "step-00000120");
  EXPECT_EQ(parse_checkpoint_name("step-00000120"), 120);
  EXPECT_FALSE(parse_checkpoint_name("step-"));
  EXPECT_FALSE(parse_checkpoint_name("step-12a"));
  EXPECT_FALSE(parse_checkpoint_name(".tmp-step-00000001"));
}

TEST_F(CheckpointFilesTest, CommitVerifyAndLatest) {
  EXPECT_FALSE(latest_checkpoint(root_).has_value());
  const std::string dir = make(10);
  EXPECT_EQ(dir, root_ + "/step-00000010");
  EXPECT_FALSE(fs::exists(root_ + "/" + temp_checkpoint_name(10)));
  ASSERT_EQ(latest_checkpoint(root_).value(), dir);
  int64_t step = -1;
  const Manifest m = verify_checkpoint(dir, {"model.pt"}, &step);
  EXPECT_EQ(step, 10);
  EXPECT_EQ(m.at("model.pt").sha256, sha256_hex("weights of step 10"));
  make(20);
  EXPECT_EQ(latest_checkpoint(root_).value(), root_ + "/step-00000020");
  // Immutable: the same step cannot be committed twice.
  EXPECT_THROW(make(20), CheckpointError);
}

TEST_F(CheckpointFilesTest, CorruptionIsDetectedAndNamed) {
  const std::string dir = make(5);
  {
    std::fstream f(dir + "/model.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.put('W');  // same size, other bytes
  }
  try {
    verify_checkpoint(dir, {"model.pt"}, nullptr);
    FAIL() << "accepted a flipped byte";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.pt' sha256"), std::string::npos) << e.what();
  }
  fs::remove(dir + "/rank-00000.json");
  try {
    verify_checkpoint(dir, {"model.pt", "optimizer.pt"}, nullptr);
    FAIL() << "accepted a missing file";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'rank-00000.json' is missing"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'optimizer.pt' is not listed"), std::string::npos) << msg;
  }
  fs::remove(dir + "/MANIFEST.json");
  EXPECT_THROW(verify_checkpoint(dir, {}, nullptr), CheckpointError);
  // A manifest that is not JSON, or lacks fields.
  EXPECT_THROW(manifest_from_json("{", "m", nullptr), CheckpointError);
  EXPECT_THROW(
      manifest_from_json(R"({"format":"cnx-checkpoint-v1","step":1,"files":{"../x":{"sha256":"a","bytes":1}}})", "m",
                         nullptr),
      CheckpointError);
}

TEST_F(CheckpointFilesTest, LatestPointingNowhereIsAClearError) {
  write_latest(root_, "step-00000099");
  EXPECT_THROW(latest_checkpoint(root_), CheckpointError);
  write_latest(root_, "garbage");
  EXPECT_THROW(latest_checkpoint(root_), CheckpointError);
}

TEST_F(CheckpointFilesTest, RetentionKeepsTheNewest) {
  for (int64_t s : {1, 2, 3, 4}) make(s);
  const auto deleted = apply_retention(root_, 2);
  EXPECT_EQ(deleted, (std::vector<std::string>{"step-00000001", "step-00000002"}));
  EXPECT_TRUE(fs::exists(root_ + "/step-00000003"));
  EXPECT_TRUE(fs::exists(root_ + "/step-00000004"));
}

}  // namespace
}  // namespace cnx::worker
