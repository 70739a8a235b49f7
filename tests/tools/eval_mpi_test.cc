// cnx_eval under mpirun -np 2: gathered features equal a single process's;
// data-parallel fine-tuning keeps the ranks' parameters identical.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "tests/tools/tools_test_util.h"
#include "tools/eval/finetune.h"
#include "tools/eval/linear_probe.h"

namespace cnx::eval {
namespace {

struct SharedShards {
  std::unique_ptr<tools::testing::TempDir> dir;  // rank 0 owns it
  std::string train, test;
};

SharedShards make_shards(comm::Communicator& comm) {
  SharedShards s;
  std::string root;
  if (comm.rank() == 0) {
    s.dir = std::make_unique<tools::testing::TempDir>();
    root = s.dir->path();
    tools::testing::write_colour_shards(root + "/train", 67, 4, 28, 3, false, 1, /*corrupt_first=*/true);
    tools::testing::write_colour_shards(root + "/test", 21, 4, 28, 1, false, 2);
  }
  root = comm.allgather(root)[0];
  comm.barrier();
  s.train = root + "/train/index.json";
  s.test = root + "/test/index.json";
  return s;
}

model::ConvNeXtV2Options tiny(int64_t classes) {
  model::ConvNeXtV2Options o;
  o.depths = {1, 1, 1, 1};
  o.dims = {8, 16, 24, 32};
  o.num_classes = classes;
  return o;
}

// Fine-tuning the tiny net on the 28-px test shards at 32 px, batch 8 per rank.
FinetuneOptions tiny_finetune() {
  FinetuneOptions o;
  o.batch_size = 8;
  o.lr = 1e-3;
  o.train_transform.size = 32;
  o.eval_transform.size = 32;
  o.eval_transform.train = false;
  o.log_every = 0;
  return o;
}

LabelledSet read(const std::string& index, int rank, int world) {
  ReadOptions r;
  r.index_path = index;
  r.rank = rank;
  r.world = world;
  return read_labelled_shards(r);
}

TEST(EvalMpi, GatheredFeaturesEqualASingleProcessRun) {
  auto comm = comm::make_communicator({});
  SharedShards sh = make_shards(*comm);
  const LabelledSet mine = read(sh.train, comm->rank(), comm->size());
  const LabelledSet all = read(sh.train, 0, 1);
  EXPECT_EQ(mine.total, 67);
  EXPECT_EQ(static_cast<int64_t>(mine.samples.size()), comm->rank() == 0 ? 34 : 33);
  at::manual_seed(3);
  model::ConvNeXtV2 net(tiny(0));
  data::TransformOptions tf;
  tf.size = 32;
  tf.train = false;
  const Features g = extract_features(*net, mine, tf, 8, comm.get());
  const Features s = extract_features(*net, all, tf, 16, nullptr);
  EXPECT_EQ(g.failed, 1) << "rank " << comm->rank();
  ASSERT_EQ(g.x.sizes(), s.x.sizes()) << "rank " << comm->rank();
  EXPECT_TRUE(at::equal(g.labels, s.labels)) << "rank " << comm->rank();
  EXPECT_TRUE(at::allclose(g.x, s.x, 1e-5, 1e-5))
      << "rank " << comm->rank() << " max diff " << (g.x - s.x).abs().max().item<double>();
  comm->barrier();
}

TEST(EvalMpi, DataParallelFinetuneKeepsRanksIdentical) {
  auto comm = comm::make_communicator({});
  SharedShards sh = make_shards(*comm);
  const LabelledSet train = read(sh.train, comm->rank(), comm->size());
  const LabelledSet test = read(sh.test, comm->rank(), comm->size());
  at::manual_seed(100 + comm->rank());  // different inits: the broadcast must align them
  model::ConvNeXtV2 net(tiny(4));
  FinetuneOptions o = tiny_finetune();
  o.epochs = 1;
  const FinetuneResult r = finetune(*net, train, test, o, comm.get());
  EXPECT_EQ(r.steps, 4);  // floor(floor(67 / 2) / 8)
  EXPECT_EQ(r.n_train, 64);
  EXPECT_EQ(r.n_test, 21);
  double sum = 0;
  for (const auto& p : net->parameters()) sum += p.to(at::kDouble).sum().item<double>() * 1.0;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g/%.17g", sum, r.top1);
  const auto all = comm->allgather(buf);
  EXPECT_EQ(all[0], all[1]) << "ranks diverged";
  comm->barrier();
}

TEST(EvalMpi, HoldoutIsScoredAfterTheChosenEpochsWithoutChangingTraining) {
  auto comm = comm::make_communicator({});
  SharedShards sh = make_shards(*comm);
  const LabelledSet train = read(sh.train, comm->rank(), comm->size());
  const LabelledSet test = read(sh.test, comm->rank(), comm->size());
  const LabelledSet holdout = read(sh.test, comm->rank(), comm->size());
  auto run = [&](int64_t every, FinetuneResult* out) {
    at::manual_seed(7);
    model::ConvNeXtV2 net(tiny(4));
    FinetuneOptions o = tiny_finetune();
    o.epochs = 3;
    o.holdout_every = every;
    *out = finetune(*net, train, test, o, comm.get(), &holdout);
    std::vector<at::Tensor> params;
    for (const auto& p : net->parameters()) params.push_back(p.detach().clone());
    return params;
  };
  FinetuneResult each, last, second;
  const auto p_each = run(1, &each);
  const auto p_last = run(0, &last);
  const auto p_second = run(2, &second);
  EXPECT_EQ(each.holdout_epoch, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(last.holdout_epoch, (std::vector<int64_t>{3}));
  EXPECT_EQ(second.holdout_epoch, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(each.epoch_holdout.size(), 3u);
  ASSERT_EQ(last.epoch_holdout.size(), 1u);
  ASSERT_EQ(second.epoch_holdout.size(), 2u);
  EXPECT_EQ(each.n_holdout, 21);
  // Scoring the held-out set between epochs must not change what is trained.
  ASSERT_EQ(p_each.size(), p_last.size());
  for (size_t i = 0; i < p_each.size(); ++i) {
    EXPECT_TRUE(at::equal(p_each[i], p_last[i])) << "parameter " << i;
    EXPECT_TRUE(at::equal(p_each[i], p_second[i])) << "parameter " << i;
  }
  EXPECT_EQ(each.epoch_holdout.back(), last.epoch_holdout.back());
  EXPECT_EQ(each.epoch_holdout[1], second.epoch_holdout[0]);
  EXPECT_EQ(each.top1, last.top1);
  comm->barrier();
}

}  // namespace
}  // namespace cnx::eval
