// Linear probe: separable data is learned, random labels are not; the whole
// cnx-eval job on synthetic labelled shards.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tests/tools/tools_test_util.h"
#include "tools/eval/eval_job.h"
#include "tools/eval/linear_probe.h"

namespace cnx::eval {
namespace {

using tools::testing::TempDir;

// n points of k Gaussian classes in c dims; class means 6 * e_class, unit
// noise: the Bayes error is ~1e-5 (pairwise distance 8.5 sigma).
void blobs(int64_t n, int64_t k, int64_t c, uint64_t seed, at::Tensor* x, at::Tensor* y) {
  auto gen = at::detail::createCPUGenerator(seed);
  *y = at::arange(n, at::kLong).remainder(k);
  at::Tensor means = at::zeros({k, c});
  for (int64_t i = 0; i < k; ++i) means[i][i] = 6.0;
  *x = means.index_select(0, *y) + at::randn({n, c}, gen) + 5.0;  // offset: standardisation must cope
}

TEST(LinearProbe, SeparableDataReachesHighAccuracy) {
  at::Tensor xtr, ytr, xte, yte;
  blobs(400, 4, 16, 1, &xtr, &ytr);
  blobs(200, 4, 16, 2, &xte, &yte);
  ProbeOptions o;
  o.epochs = 30;
  o.batch_size = 64;
  o.lr = 1e-2;
  const LinearProbe p = train_linear_probe(xtr, ytr, 4, o);
  const double acc = top1_accuracy(p.logits(xte), yte);
  EXPECT_GT(acc, 0.98);
  // Deterministic for the same seed.
  const LinearProbe q = train_linear_probe(xtr, ytr, 4, o);
  EXPECT_TRUE(at::equal(p.weight, q.weight));
}

TEST(LinearProbe, RandomLabelsStayNearChance) {
  at::Tensor xtr, ytr, xte, yte;
  blobs(400, 4, 16, 3, &xtr, &ytr);
  blobs(400, 4, 16, 4, &xte, &yte);
  auto gen = at::detail::createCPUGenerator(9);
  ytr = at::randint(0, 4, {400}, gen, at::kLong);
  yte = at::randint(0, 4, {400}, gen, at::kLong);
  ProbeOptions o;
  o.epochs = 30;
  o.batch_size = 64;
  o.lr = 1e-2;
  const LinearProbe p = train_linear_probe(xtr, ytr, 4, o);
  EXPECT_LT(top1_accuracy(p.logits(xte), yte), 0.40);  // chance 0.25
}

TEST(LinearProbe, RejectsBadInput) {
  ProbeOptions o;
  EXPECT_THROW(train_linear_probe(at::zeros({4, 3}), at::zeros({5}, at::kLong), 2, o), std::exception);
  EXPECT_THROW(train_linear_probe(at::zeros({4, 3}), at::full({4}, 7, at::kLong), 2, o), std::exception);
  EXPECT_THROW(train_linear_probe(at::zeros({0, 3}), at::zeros({0}, at::kLong), 2, o), std::exception);
}

EvalJobOptions job(const std::string& train, const std::string& test) {
  EvalJobOptions o;
  o.mode = EvalMode::kLinearProbe;
  o.random_init = true;
  o.model = "atto";
  o.train_index = train;
  o.test_index = test;
  o.input_size = 32;
  o.batch_size = 64;
  o.probe.epochs = 40;
  o.probe.batch_size = 32;
  o.probe.lr = 1e-2;
  return o;
}

TEST(LinearProbeJob, ColourClassesFromShardsAreLearnedAndCorruptSamplesSkipped) {
  TempDir dir;
  const std::string train =
      tools::testing::write_colour_shards(dir.file("train"), 160, 4, 28, 3, false, 1, /*corrupt_first=*/true);
  const std::string test = tools::testing::write_colour_shards(dir.file("test"), 80, 4, 28, 2, false, 2);
  EvalJobOptions o = job(train, test);
  o.init = "fcmae";
  o.max_train = 150;
  const EvalSummary s = run_eval_job(o, nullptr);
  EXPECT_EQ(s.mode, "linear_probe");
  EXPECT_EQ(s.failed, 1);     // the truncated PNG
  EXPECT_EQ(s.n_train, 149);  // first 150 positions minus the corrupt one
  EXPECT_EQ(s.n_test, 80);
  EXPECT_EQ(s.num_classes, 4);
  EXPECT_GT(s.top1, 0.9) << summary_line(s);
  EXPECT_NE(summary_json(s).find("\"top1\""), std::string::npos);
}

// The "fcmae" random init follows the pretraining's model.init (the config's),
// so the floor is the start the encoder was pretrained from.
TEST(LinearProbeJob, FcmaeRandomInitFollowsThePretrainingInit) {
  TempDir dir;
  const std::string train = tools::testing::write_colour_shards(dir.file("train"), 96, 4, 28, 1, false, 5);
  const std::string test = tools::testing::write_colour_shards(dir.file("test"), 48, 4, 28, 1, false, 6);
  EvalJobOptions o = job(train, test);
  o.init = "fcmae";
  o.fcmae_init = "std02";
  const EvalSummary s = run_eval_job(o, nullptr);
  EXPECT_NE(s.encoder.find("fcmae std02"), std::string::npos) << s.encoder;
  EXPECT_GT(s.top1, 0.9) << summary_line(s);
  o.fcmae_init = "reference";
  EXPECT_EQ(run_eval_job(o, nullptr).encoder.find("std02"), std::string::npos);
  o.fcmae_init = "bogus";
  EXPECT_THROW(run_eval_job(o, nullptr), std::exception);
}

TEST(LinearProbeJob, RandomLabelsGiveChanceAccuracy) {
  TempDir dir;
  const std::string train = tools::testing::write_colour_shards(dir.file("train"), 160, 4, 28, 2, true, 3);
  const std::string test = tools::testing::write_colour_shards(dir.file("test"), 120, 4, 28, 1, true, 4);
  EvalJobOptions o = job(train, test);
  o.init = "dense";
  const EvalSummary s = run_eval_job(o, nullptr);
  EXPECT_LT(s.top1, 0.45) << summary_line(s);
}

TEST(LinearProbeJob, BadInputsGiveClearErrors) {
  TempDir dir;
  const std::string test = tools::testing::write_colour_shards(dir.file("test"), 8, 2, 28, 1, false, 4);
  EvalJobOptions o = job(dir.file("missing/index.json"), test);
  EXPECT_THROW(run_eval_job(o, nullptr), std::exception);
  o = job(test, test);
  o.input_size = 40;  // not a multiple of 32
  EXPECT_THROW(run_eval_job(o, nullptr), std::exception);
  o = job(test, test);
  o.random_init = false;  // and no encoder
  EXPECT_THROW(run_eval_job(o, nullptr), std::exception);
}

}  // namespace
}  // namespace cnx::eval
