// Checkpoint contents (worker/checkpoint.h) and the step's control slots
// (worker/step_control.h), single process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>
#include <cmath>

#include <filesystem>

#include "worker/checkpoint.h"
#include "worker/checkpoint_files.h"
#include "worker/step_control.h"

namespace fs = std::filesystem;

namespace cnx::worker {
namespace {

std::string fresh_dir(const std::string& tag) {
  const std::string d = (fs::temp_directory_path() / ("cnx_ckpt_" + tag + "_" + std::to_string(::getpid()))).string();
  fs::remove_all(d);
  return d;
}

CheckpointTensors sample_model() {
  torch::manual_seed(3);
  return {{"a.weight", torch::randn({4, 3})}, {"a.bias", torch::randn({4})}, {"n.buf", torch::arange(5)}};
}

TrainerRecord sample_record(int64_t step) {
  TrainerRecord t;
  t.step = step;
  t.epoch = 2;
  t.world_size = 1;
  t.global_batch = 8;
  t.peak_lr = 1.5e-4;
  t.steps_per_epoch = 10;
  t.skipped_total = 1;
  return t;
}

TEST(CheckpointSnapshot, DeepCopyIsIndependentOfLaterUpdates) {
  CheckpointTensors model = sample_model();
  const at::Tensor before = model[0].second.clone();
  const CheckpointSnapshot deep = take_snapshot(0, true, model, {}, sample_record(5), "c", /*deep=*/true);
  const CheckpointSnapshot ref = take_snapshot(0, true, model, {}, sample_record(5), "c", /*deep=*/false);
  model[0].second.add_(1.0);  // what the next optimizer step does
  EXPECT_TRUE(torch::equal(deep.model[0].second, before));
  EXPECT_TRUE(torch::equal(ref.model[0].second, model[0].second));
  EXPECT_EQ(deep.bytes(), (12 + 4) * 4 + 5 * 8 + deep.rank_state.cpu_rng.nbytes());
  // A rank other than 0 holds no model or optimizer.
  const CheckpointSnapshot other = take_snapshot(1, false, model, model, sample_record(5), "c", true);
  EXPECT_TRUE(other.model.empty());
  EXPECT_EQ(other.bytes(), other.rank_state.cpu_rng.nbytes());
}

TEST(CheckpointSnapshot, WriteCommitReadRoundTripsEveryField) {
  const std::string root = fresh_dir("roundtrip");
  const CheckpointTensors model = sample_model();
  const CheckpointTensors opt = {{"exp_avg/a.weight", torch::ones({4, 3})}, {"step/a.weight", torch::scalar_tensor(7)}};
  seed_cpu_rng(11);
  const at::Tensor rng = cpu_rng_state();
  const CheckpointSnapshot s = take_snapshot(0, true, model, opt, sample_record(20), "cursor-text", true);
  torch::rand({100});  // the generator moves on; the snapshot keeps its state
  const std::string tmp = root + "/" + temp_checkpoint_name(20);
  const Manifest files = write_snapshot(tmp, s);
  EXPECT_EQ(files.size(), 4u);  // model, optimizer, trainer.json, rank-00000.json
  const std::string dir = commit_local(root, tmp, 20, files);

  const LoadedCheckpoint c = read_checkpoint(dir, 0);
  EXPECT_EQ(c.trainer.step, 20);
  EXPECT_EQ(c.trainer.epoch, 2);
  EXPECT_EQ(c.trainer.global_batch, 8);
  EXPECT_EQ(c.trainer.skipped_total, 1);
  EXPECT_DOUBLE_EQ(c.trainer.peak_lr, 1.5e-4);
  ASSERT_EQ(c.model.size(), model.size());
  for (size_t i = 0; i < model.size(); ++i) {
    EXPECT_EQ(c.model[i].first, model[i].first);
    EXPECT_TRUE(torch::equal(c.model[i].second, model[i].second)) << model[i].first;
  }
  ASSERT_EQ(c.optimizer.size(), 2u);
  ASSERT_TRUE(c.rank_state.has_value());
  EXPECT_EQ(c.rank_state->cursor, "cursor-text");
  EXPECT_TRUE(torch::equal(c.rank_state->cpu_rng, rng));
  // No file for rank 1 in a 1-rank checkpoint.
  EXPECT_FALSE(read_checkpoint(dir, 1).rank_state.has_value());
  EXPECT_EQ(verified_model_file(dir), dir + "/" + kModelFile);
  fs::remove_all(root);
}

TEST(CheckpointSnapshot, AnUncommittedFolderIsRefused) {
  const std::string root = fresh_dir("uncommitted");
  const CheckpointSnapshot s = take_snapshot(0, true, sample_model(), {}, sample_record(3), "", true);
  const std::string tmp = root + "/" + temp_checkpoint_name(3);
  write_snapshot(tmp, s);  // written, no MANIFEST.json: what a kill during the write leaves
  try {
    read_checkpoint(tmp, 0);
    ADD_FAILURE() << "a folder without MANIFEST.json was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("MANIFEST.json"), std::string::npos) << e.what();
  }
  fs::remove_all(root);
}

// Found by fuzz/checkpoint_fuzz.cc (fuzz/corpus/checkpoint/bad_rng_short,
// bad_rng_odd): a rank file whose "cpu_rng" is valid hex but not a generator
// state was accepted, and the trainer then died in LibTorch's set_state
// with a message naming no file. It is now refused when read.
TEST(CheckpointSnapshot, ARankFileWithABadGeneratorStateIsRefusedByName) {
  const std::string root = fresh_dir("badrng");
  const CheckpointSnapshot s = take_snapshot(0, true, sample_model(), {}, sample_record(5), "c", true);
  const std::string tmp = root + "/" + temp_checkpoint_name(5);
  Manifest files = write_snapshot(tmp, s);
  for (const std::string& rng : std::vector<std::string>{"00ff", "", std::string(5056 * 2, 'f')}) {
    const std::string rank_file = tmp + "/" + rank_file_name(0);
    files[rank_file_name(0)] =
        write_file_durable(rank_file, "{\"rank\": 0, \"cursor\": \"c\", \"cpu_rng\": \"" + rng + "\"}\n");
    write_file_durable(tmp + "/MANIFEST.json", manifest_to_json(5, files));
    try {
      read_checkpoint(tmp, 0);
      ADD_FAILURE() << "cpu_rng of " << rng.size() / 2 << " bytes was accepted";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(rank_file_name(0)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cpu_rng"), std::string::npos) << e.what();
    }
  }
  fs::remove_all(root);
}

std::vector<double> sum(const std::vector<std::vector<double>>& ranks) {
  std::vector<double> out(ranks[0].size(), 0.0);
  for (const auto& r : ranks)
    for (size_t i = 0; i < r.size(); ++i) out[i] += r[i];
  return out;
}

TEST(StepControl, PlansRunOnlyWhenEveryRankKnowsTheSameOne) {
  StepSignals a, b;
  a.plan = 4;
  b.plan = 4;
  EXPECT_EQ(decide(sum({encode_signals(a), encode_signals(b)}), 2).plan, 4);
  b.plan = 0;  // rank 1 has not heard of it yet
  EXPECT_EQ(decide(sum({encode_signals(a), encode_signals(b)}), 2).plan, 0);
  a.plan = 3;
  b.plan = 5;  // different plans with a whole mean (4) are not a plan
  EXPECT_EQ(decide(sum({encode_signals(a), encode_signals(b)}), 2).plan, 0);
}

TEST(StepControl, LossFlagsAndWrittenAgreement) {
  StepSignals a, b;
  a.loss = 1.0;
  b.loss = 3.0;
  a.checkpoint_written = true;
  b.preempted = true;
  StepDecision d = decide(sum({encode_signals(a), encode_signals(b)}), 2);
  EXPECT_DOUBLE_EQ(d.mean_loss, 2.0);
  EXPECT_TRUE(d.preempted);
  EXPECT_FALSE(d.checkpoint_written);  // only when every rank's write finished
  EXPECT_FALSE(d.abort || d.drain || d.checkpoint_now);
  b.checkpoint_written = true;
  b.nonfinite = true;
  b.loss = NAN;
  d = decide(sum({encode_signals(a), encode_signals(b)}), 2);
  EXPECT_TRUE(d.checkpoint_written);
  EXPECT_EQ(d.nonfinite_ranks, 1);
  EXPECT_TRUE(std::isnan(d.mean_loss));
  EXPECT_EQ(static_cast<int>(encode_signals(a).size()), control_slot_count());
}

}  // namespace
}  // namespace cnx::worker
