// The command-line tools end to end on a tiny FCMAE checkpoint and synthetic
// shards: cnx-export, cnx-visualize, cnx-eval, cnx-finetune (exit codes,
// outputs, error handling).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "data/image_codec.h"
#include "model/weights.h"
#include "tests/tools/tools_test_util.h"
#include "tools/export/fcmae_state.h"
#include "worker/checkpoint_files.h"

namespace cnx::tools {
namespace {

using testing::TempDir;

std::string tool(const std::string& rel) {
  const char* b = std::getenv("CNX_BINARY_DIR");
  return std::string(b ? b : ".") + "/tools/" + rel;
}

int run(const std::string& cmd) {
  const int rc = std::system((cmd + " > /dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    at::manual_seed(5);
    model::Fcmae f(testing::tiny_fcmae_options());
    const std::string tmp = dir_.file("ckpt/.tmp-step-00000007");
    std::filesystem::create_directories(tmp);
    model::save_pt(tmp + "/model.pt", testing::module_state(*f));
    worker::Manifest m;
    m["model.pt"] = worker::digest_file(tmp + "/model.pt");
    worker::commit_local(dir_.file("ckpt"), tmp, 7, m);
    train_ = testing::write_colour_shards(dir_.file("train"), 48, 3, 28, 2, false, 1);
    test_ = testing::write_colour_shards(dir_.file("test"), 24, 3, 28, 1, false, 2);
  }
  TempDir dir_;
  std::string train_, test_;
};

TEST_F(Cli, ExportVisualizeEvalFinetune) {
  ASSERT_EQ(
      run(tool("export/cnx-export") + " --input " + dir_.file("ckpt") + " --output " + dir_.file("enc.safetensors")),
      0);
  model::ConvNeXtV2Options o = testing::tiny_fcmae_options().encoder;
  model::ConvNeXtV2 dense(o);
  model::LoadOptions lo;
  lo.allow_missing_head = true;
  EXPECT_EQ(model::load_weights(*dense, dir_.file("enc.safetensors"), lo).left_at_init.size(), 2u);
  ASSERT_EQ(run(tool("export/cnx-export") + " --naming timm --input " + dir_.file("ckpt") + " --output " +
                dir_.file("enc.pt")),
            0);
  EXPECT_FALSE(model::read_pt(dir_.file("enc.pt")).empty());

  ASSERT_EQ(run(tool("visualize/cnx-visualize") + " --checkpoint " + dir_.file("ckpt") + " --index " + train_ +
                " --count 2 --input-size 64 --gap 4 --mask-seed 3 --no-labels --out-dir " + dir_.file("viz")),
            0);
  std::ifstream in(dir_.file("viz/grid.png"), std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  data::Image grid;
  std::string err;
  ASSERT_EQ(data::decode_image(bytes.data(), bytes.size(), data::ImageFormat::kPng, int64_t{1} << 24, {}, &grid, &err),
            data::DecodeStatus::kOk);
  EXPECT_EQ(grid.width, 4 * 64 + 3 * 4);
  EXPECT_EQ(grid.height, 2 * 64 + 4);
  EXPECT_TRUE(std::filesystem::exists(dir_.file("viz/recon-001.png")));

  ASSERT_EQ(run(tool("eval/cnx-eval") + " --encoder " + dir_.file("enc.safetensors") + " --train-index " + train_ +
                " --test-index " + test_ + " --input-size 32 --epochs 5 --threads 1 --json " + dir_.file("probe.json")),
            0);
  const nlohmann::json p = read_json(dir_.file("probe.json"));
  EXPECT_EQ(p["mode"], "linear_probe");
  EXPECT_EQ(p["n_train"], 48);
  EXPECT_EQ(p["n_test"], 24);
  EXPECT_EQ(p["num_classes"], 3);
  EXPECT_GE(p["top1"].get<double>(), 0.0);
  EXPECT_LE(p["top1"].get<double>(), 1.0);

  ASSERT_EQ(run(tool("eval/cnx-finetune") + " --encoder " + dir_.file("ckpt") + " --train-index " + train_ +
                " --test-index " + test_ + " --input-size 32 --epochs 1 --batch-size 8 --threads 1 --json " +
                dir_.file("ft.json")),
            0);
  const nlohmann::json f = read_json(dir_.file("ft.json"));
  EXPECT_EQ(f["mode"], "finetune");
  EXPECT_EQ(f["n_train"], 48);
  EXPECT_EQ(f["n_test"], 24);
}

TEST_F(Cli, BadInputsExitNonZero) {
  EXPECT_EQ(
      run(tool("export/cnx-export") + " --input " + dir_.file("nothing") + " --output " + dir_.file("x.safetensors")),
      1);
  // Usage mistakes exit 2 (docs/operations.md), runtime errors 1.
  EXPECT_EQ(run(tool("eval/cnx-eval") + " --train-index " + train_ + " --test-index " + test_), 2);  // no encoder
  EXPECT_EQ(run(tool("eval/cnx-eval") + " --random-init --train-index " + train_ + " --test-index " + test_ +
                " --input-size 33"),
            2);
  EXPECT_EQ(
      run(tool("visualize/cnx-visualize") + " --checkpoint " + dir_.file("ckpt") + " --out-dir " + dir_.file("v")), 2);
  EXPECT_EQ(run(tool("eval/cnx-eval") + " --no-such-flag"), 2);
}

// The run's config saved with a checkpoint (config.yaml) and carried by
// cnx-export into the weights' metadata: the tools take input size, mean and
// std from it, and refuse a --config of another model.
TEST_F(Cli, SavedRunConfigDrivesTheTools) {
  at::manual_seed(6);
  model::Fcmae f(testing::tiny_fcmae_options());
  const std::string tmp = dir_.file("saved/.tmp-step-00000005");
  std::filesystem::create_directories(tmp);
  model::save_pt(tmp + "/model.pt", testing::module_state(*f));
  const std::string yaml =
      "model: {name: custom, depths: [1, 1, 2, 1], dims: [8, 16, 24, 32], decoder_dim: 16}\n"
      "data: {input_size: 64, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], eval_crop_pct: 1.0}\n";
  std::ofstream(tmp + "/config.yaml") << yaml;
  worker::Manifest m;
  m["model.pt"] = worker::digest_file(tmp + "/model.pt");
  m["config.yaml"] = worker::digest_file(tmp + "/config.yaml");
  worker::commit_local(dir_.file("saved"), tmp, 5, m);

  // cnx-visualize: 64 px from the checkpoint's config, no flag.
  ASSERT_EQ(run(tool("visualize/cnx-visualize") + " -c " + dir_.file("saved") + " --index " + train_ +
                " --count 1 --gap 2 --no-labels -o " + dir_.file("viz64")),
            0);
  std::ifstream in(dir_.file("viz64/grid.png"), std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  data::Image grid;
  std::string err;
  ASSERT_EQ(data::decode_image(bytes.data(), bytes.size(), data::ImageFormat::kPng, int64_t{1} << 24, {}, &grid, &err),
            data::DecodeStatus::kOk);
  EXPECT_EQ(grid.width, 4 * 64 + 3 * 2);
  EXPECT_EQ(grid.height, 64);

  // cnx-export copies it into the metadata; cnx-eval reads input size and
  // normalisation from there.
  ASSERT_EQ(run(tool("export/cnx-export") + " -c " + dir_.file("saved") + " -o " + dir_.file("enc64.safetensors")), 0);
  ASSERT_EQ(run(tool("eval/cnx-eval") + " -c " + dir_.file("enc64.safetensors") + " --train-index " + train_ +
                " --test-index " + test_ + " --epochs 2 --threads 1 -o " + dir_.file("probe64.json")),
            0);
  const nlohmann::json p = read_json(dir_.file("probe64.json"));
  EXPECT_EQ(p["input_size"], 64);
  EXPECT_DOUBLE_EQ(p["mean"][0].get<double>(), 0.5);
  // A flag still wins.
  ASSERT_EQ(run(tool("eval/cnx-eval") + " -c " + dir_.file("saved") + " --train-index " + train_ + " --test-index " +
                test_ + " --input-size 32 --epochs 1 --threads 1 -o " + dir_.file("probe32.json")),
            0);
  EXPECT_EQ(read_json(dir_.file("probe32.json"))["input_size"], 32);

  // A --config of another model is refused (exit 2) naming what differs.
  std::ofstream(dir_.file("other.yaml")) << "model: {name: atto}\n";
  EXPECT_EQ(run(tool("visualize/cnx-visualize") + " --config " + dir_.file("other.yaml") + " -c " + dir_.file("saved") +
                " --index " + train_ + " -o " + dir_.file("vx")),
            2);
  EXPECT_EQ(run(tool("export/cnx-export") + " --config " + dir_.file("other.yaml") + " -c " + dir_.file("saved") +
                " -o " + dir_.file("x.safetensors")),
            2);
}

// The coordinator's layout <root>/<job>/ckpt-<id>-step-<S>: the newest
// complete checkpoint is read; an empty folder's error points at cnx-ctl.
TEST_F(Cli, CoordinatorLayoutIsAccepted) {
  at::manual_seed(7);
  model::Fcmae f(testing::tiny_fcmae_options());
  auto write_ckpt = [&](const std::string& dir, bool complete) {
    std::filesystem::create_directories(dir);
    model::save_pt(dir + "/model.pt", testing::module_state(*f));
    if (!complete) return;
    worker::Manifest m;
    m["model.pt"] = worker::digest_file(dir + "/model.pt");
    worker::write_file_durable(dir + "/MANIFEST.json", worker::manifest_to_json(0, m));
  };
  write_ckpt(dir_.file("croot/job-a/ckpt-000001-step-000000010"), true);
  write_ckpt(dir_.file("croot/job-a/ckpt-000002-step-000000020"), true);
  write_ckpt(dir_.file("croot/job-a/ckpt-000003-step-000000030"), false);  // being written: skipped
  for (const std::string where : {"croot/job-a", "croot"}) {
    EXPECT_EQ(resolve_state_file(dir_.file(where)), dir_.file("croot/job-a/ckpt-000002-step-000000020/model.pt"))
        << where;
  }
  EXPECT_EQ(run(tool("export/cnx-export") + " -c " + dir_.file("croot") + " -o " + dir_.file("c.safetensors")), 0);
  write_ckpt(dir_.file("croot/job-b/ckpt-000001-step-000000005"), true);
  try {
    resolve_state_file(dir_.file("croot"));
    FAIL() << "two jobs: ambiguous";
  } catch (const model::WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("several jobs"), std::string::npos) << e.what();
  }
  EXPECT_EQ(resolve_state_file(dir_.file("croot"), "job-b"),
            dir_.file("croot/job-b/ckpt-000001-step-000000005/model.pt"));
  std::filesystem::create_directories(dir_.file("empty"));
  try {
    resolve_state_file(dir_.file("empty"));
    FAIL();
  } catch (const model::WeightsError& e) {
    EXPECT_NE(std::string(e.what()).find("cnx-ctl --config JOB.yaml latest"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cnx::tools
