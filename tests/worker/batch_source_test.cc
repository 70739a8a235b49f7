// Data sources, masks and the progress line (no MPI).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/check.h"
#include "worker/batch_source.h"
#include "worker/progress.h"

namespace cnx::worker {
namespace {

TEST(Masks, PureFunctionOfSeedEpochAndKeyWithExactCounts) {
  const std::vector<std::string> keys = {"a/1", "a/2", "b/7", "c/0"};
  const at::Tensor m = make_masks(keys, 3, 11, 7, 7, 0.6);
  ASSERT_EQ(m.sizes(), (at::IntArrayRef{4, 49}));
  // int(49 * 0.4) = 19 visible per image, the rest masked.
  for (int64_t n = 0; n < 4; ++n) EXPECT_EQ(m[n].sum().item<float>(), 49 - 19) << keys[n];
  // A sample's mask does not depend on its batch neighbours or position.
  const at::Tensor alone = make_masks({"b/7"}, 3, 11, 7, 7, 0.6);
  EXPECT_TRUE(torch::equal(alone[0], m[2]));
  const at::Tensor reordered = make_masks({"c/0", "a/1"}, 3, 11, 7, 7, 0.6);
  EXPECT_TRUE(torch::equal(reordered[0], m[3]));
  EXPECT_TRUE(torch::equal(reordered[1], m[0]));
  // Other epoch or seed: other masks (for at least one of the samples).
  EXPECT_FALSE(torch::equal(make_masks(keys, 4, 11, 7, 7, 0.6), m));
  EXPECT_FALSE(torch::equal(make_masks(keys, 3, 12, 7, 7, 0.6), m));
  EXPECT_THROW(make_masks(keys, 3, 11, 7, 7, 1.5), CheckError);
}

TEST(SyntheticSource, RanksSplitTheSamplesOfOneLargerBatch) {
  SyntheticOptions one;
  one.samples = 32;
  one.image_size = 32;
  one.batch_size = 4;
  SyntheticSource single(one);
  single.start_epoch(0);
  const TrainBatch big = *single.next();

  std::vector<std::string> keys;
  std::vector<at::Tensor> images;
  for (int r = 0; r < 2; ++r) {
    SyntheticOptions o = one;
    o.batch_size = 2;
    o.rank = r;
    o.world = 2;
    SyntheticSource s(o);
    s.start_epoch(0);
    const TrainBatch b = *s.next();
    keys.insert(keys.end(), b.keys.begin(), b.keys.end());
    images.push_back(b.images);
  }
  EXPECT_EQ(keys, big.keys);
  EXPECT_TRUE(torch::equal(torch::cat(images), big.images));
}

TEST(SyntheticSource, CursorRestoresTheExactContinuation) {
  SyntheticOptions o;
  o.samples = 16;
  o.image_size = 32;
  o.batch_size = 2;
  SyntheticSource a(o);
  a.start_epoch(1);
  a.next();
  a.next();
  const std::string cursor = a.cursor();
  const TrainBatch third = *a.next();
  SyntheticSource b(o);
  b.restore(cursor);
  const TrainBatch again = *b.next();
  EXPECT_EQ(again.keys, third.keys);
  EXPECT_EQ(again.epoch, 1);
  EXPECT_TRUE(torch::equal(again.images, third.images));
  // The epoch ends after samples / batch batches.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.next().has_value());  // batches 4..8 of 16 / 2
  EXPECT_FALSE(b.next().has_value());
  EXPECT_THROW(b.restore("{\"kind\":\"shards\"}"), CheckError);
  EXPECT_THROW(b.restore("not json"), CheckError);
}

TEST(Progress, LineHasEveryField) {
  ProgressMeter m;
  StepTimes t;
  t.data_wait = 0.1;
  t.forward = 0.3;
  t.backward = 0.4;
  t.comm_wait = 0.1;
  t.optimizer = 0.1;
  m.add(t);
  m.add(t);
  ProgressPoint p;
  p.step = 20;
  p.total_steps = 100;
  p.epoch = 0.5;
  p.loss = 0.8123;
  p.lr = 3e-4;
  p.images_per_step = 64;
  const std::string line = m.line(p);
  EXPECT_NE(line.find("step 20/100 (20.0%)"), std::string::npos) << line;
  EXPECT_NE(line.find("epoch 0.50"), std::string::npos) << line;
  EXPECT_NE(line.find("loss 0.8123"), std::string::npos) << line;
  EXPECT_NE(line.find("lr 3.00e-04"), std::string::npos) << line;
  EXPECT_NE(line.find("64.0 img/s"), std::string::npos) << line;  // 128 images in 2 s
  EXPECT_NE(line.find("data 10% fwd 30% bwd 40% comm 10% opt 10%"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 1m20s"), std::string::npos) << line;  // 80 steps x 1 s
  EXPECT_DOUBLE_EQ(m.last_images_per_second(), 64.0);
  EXPECT_EQ(format_duration(3 * 3600 + 125), "3h02m");
  EXPECT_EQ(format_duration(9), "9s");
}

}  // namespace
}  // namespace cnx::worker
