// The pipeline: exactly-once epochs over several shards and threads,
// determinism regardless of threading, exact resumption from a cursor, bad
// samples skipped and counted, tampered shards refused.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "data/epoch_order.h"
#include "data/make_shards.h"
#include "data/pipeline.h"
#include "tests/data/data_fixtures.h"

namespace fs = std::filesystem;

namespace cnx::data {
namespace {

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = testing::temp_dir("pipeline");
    testing::make_image_folder(dir_ / "src", 5, 12);
    MakeShardsOptions opt;
    opt.out_dir = (dir_ / "shards").string();
    opt.samples_per_shard = 13;
    index_ = make_shards_from_folder((dir_ / "src").string(), opt);
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static DataOptions options() {
    DataOptions o;
    o.index_path = (dir_ / "shards" / "index.json").string();
    o.input_size = 32;
    o.batch_size = 7;
    o.num_threads = 3;
    o.shuffle_buffer = 10;
    o.queue_mb = 1;
    o.seed = 42;
    o.drop_last = false;
    return o;
  }

  static std::vector<int64_t> all_shards() {
    std::vector<int64_t> ids(index_.shards.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
    return ids;
  }

  static std::vector<Batch> run_epoch(Pipeline& p, int64_t epoch, const std::vector<int64_t>& ids,
                                      const Cursor* resume = nullptr) {
    p.start_epoch(epoch, ids, resume);
    std::vector<Batch> out;
    while (auto b = p.next()) out.push_back(std::move(*b));
    return out;
  }

  // b continues a from batch a_from; b's stream starts `offset` samples later.
  static void expect_same(const std::vector<Batch>& a, size_t a_from, const std::vector<Batch>& b,
                          bool same_cursor = true, int64_t offset = 0) {
    ASSERT_EQ(a.size() - a_from, b.size());
    for (size_t i = 0; i < b.size(); ++i) {
      const Batch& x = a[a_from + i];
      EXPECT_EQ(x.keys, b[i].keys) << "batch " << a_from + i;
      EXPECT_TRUE(at::equal(x.labels, b[i].labels)) << "batch " << a_from + i;
      EXPECT_TRUE(at::equal(x.images, b[i].images)) << "batch " << a_from + i << ": pixels differ";
      if (same_cursor) {
        EXPECT_EQ(x.cursor, b[i].cursor) << "batch " << a_from + i;
      }
      EXPECT_EQ(x.cursor.consumed, b[i].cursor.consumed + offset);
    }
  }

  static fs::path dir_;
  static ShardIndex index_;
};
fs::path PipelineTest::dir_;
ShardIndex PipelineTest::index_;

TEST_F(PipelineTest, EveryEpochVisitsEverySampleExactlyOnce) {
  ASSERT_EQ(index_.shards.size(), 5u);
  ASSERT_EQ(index_.total_samples, 60);
  Pipeline p(options());
  std::vector<std::string> first_order;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto batches = run_epoch(p, epoch, all_shards());
    std::vector<std::string> keys;
    for (const auto& b : batches) {
      ASSERT_EQ(b.images.sizes(), (at::IntArrayRef{b.labels.size(0), 3, 32, 32}));
      ASSERT_EQ(b.images.scalar_type(), at::kFloat);
      ASSERT_TRUE(at::isfinite(b.images).all().item<bool>());
      for (int64_t i = 0; i < b.labels.size(0); ++i) {
        ASSERT_GE(b.labels[i].item<int64_t>(), 0);
        ASSERT_LT(b.labels[i].item<int64_t>(), 5);
      }
      keys.insert(keys.end(), b.keys.begin(), b.keys.end());
    }
    EXPECT_EQ(batches.size(), 9u);  // 60 = 8 * 7 + 4 (drop_last off)
    EXPECT_EQ(batches.back().labels.size(0), 4);
    EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), 60u);
    EXPECT_EQ(batches.back().cursor.consumed, 60);
    EXPECT_EQ(batches.back().cursor.next_shard_pos, -1);
    if (epoch == 0) {
      first_order = keys;
    } else {
      EXPECT_NE(keys, first_order) << "epochs must be shuffled differently";
    }
  }
  const DataCounters c = p.counters();
  EXPECT_EQ(c.samples_delivered, 120);
  EXPECT_EQ(c.skipped_total(), 0);
  EXPECT_EQ(c.shards_read, 10);

  // drop_last drops (and counts) the final partial batch.
  DataOptions o = options();
  o.drop_last = true;
  Pipeline d(o);
  EXPECT_EQ(run_epoch(d, 0, all_shards()).size(), 8u);
  EXPECT_EQ(d.counters().samples_dropped_last, 4);
}

TEST_F(PipelineTest, OutputDoesNotDependOnThreadsOrQueueBound) {
  DataOptions a = options();
  a.num_threads = 1;
  a.queue_mb = 64;
  Pipeline pa(a), pb(options());
  expect_same(run_epoch(pa, 3, {4, 1, 2}), 0, run_epoch(pb, 3, {4, 1, 2}));
}

TEST_F(PipelineTest, CursorResumesWithIdenticalBatches) {
  const std::vector<int64_t> ids = {2, 0, 4, 3};
  Pipeline p(options());
  const auto full = run_epoch(p, 7, ids);
  ASSERT_GE(full.size(), 6u);
  for (size_t k : {size_t{0}, size_t{2}, size_t{5}, full.size() - 1}) {
    const Cursor c = Cursor::from_string(full[k].cursor.to_string());  // as a checkpoint stores it
    EXPECT_EQ(c, full[k].cursor);
    EXPECT_EQ(c.batches, static_cast<int64_t>(k + 1));
    Pipeline q(options());
    expect_same(full, k + 1, run_epoch(q, 7, ids, &c));
  }
  // A cursor from another plan or seed is refused with a clear message.
  Pipeline q(options());
  const Cursor c = full[1].cursor;
  EXPECT_THROW(q.start_epoch(8, ids, &c), DataError);
  EXPECT_THROW(q.start_epoch(7, {2, 0, 4}, &c), DataError);
  DataOptions other = options();
  other.seed = 1;
  Pipeline r(other);
  EXPECT_THROW(r.start_epoch(7, ids, &c), DataError);
  EXPECT_THROW(Cursor::from_string("{\"epoch\":1}"), DataError);
  EXPECT_THROW(r.start_epoch(0, {0, 99}), DataError);
}

// Leased pieces (coordinator mode): a piece reads positions [start, end) of
// its shard's permutation; the unused tail of a piece, handed out again as a
// new piece, continues the stream with identical batches (what makes a
// resumed attempt bit-exact), and pieces of one shard never overlap.
TEST_F(PipelineTest, PiecesFollowTheShardPermutationAndTailsContinueExactly) {
  DataOptions o = options();
  o.batch_size = 4;
  const int64_t n1 = index_.shards[1].samples, n3 = index_.shards[3].samples;
  const std::vector<ShardPiece> pieces = {{3, 0, n3}, {1, 2, n1}};
  Pipeline p(o);
  p.start_pieces(5, pieces);
  EXPECT_EQ(p.epoch_samples(), n3 + n1 - 2);
  std::vector<Batch> full;
  std::vector<std::string> keys;
  while (auto b = p.next()) {
    keys.insert(keys.end(), b->keys.begin(), b->keys.end());
    full.push_back(std::move(*b));
  }
  // The oracle: the shards' members in tar order (shuffle_buffer 1, eval
  // mode off is irrelevant to keys), permuted by shard_permutation.
  DataOptions seq = o;
  seq.shuffle_buffer = 1;
  seq.drop_last = false;
  Pipeline s(seq);
  auto shard_keys = [&](int64_t id) {
    s.start_epoch(0, {id});
    std::vector<std::string> k;
    while (auto b = s.next()) k.insert(k.end(), b->keys.begin(), b->keys.end());
    return k;
  };
  const auto k3 = shard_keys(3), k1 = shard_keys(1);
  const auto perm3 = shard_permutation(o.seed, 5, 3, n3), perm1 = shard_permutation(o.seed, 5, 1, n1);
  std::vector<std::string> want;
  for (int64_t i = 0; i < n3; ++i) want.push_back(k3[perm3[i]]);
  for (int64_t i = 2; i < n1; ++i) want.push_back(k1[perm1[i]]);
  EXPECT_EQ(keys, want);
  EXPECT_NE(std::vector<std::string>(want.begin(), want.begin() + n3), k3) << "samples must be shuffled in a shard";
  EXPECT_EQ(std::set<std::string>(keys.begin(), keys.end()).size(), keys.size());

  // Stop after 3 batches (12 samples, inside the first piece); the tail as a
  // new piece list gives exactly the remaining batches of the full run.
  ASSERT_GE(full.size(), 5u);
  const int64_t used = full[2].cursor.consumed;
  ASSERT_EQ(used, 12);
  ASSERT_LT(used, n3);
  Pipeline q(o);
  q.start_pieces(5, {{3, used, n3}, {1, 2, n1}});
  std::vector<Batch> rest;
  while (auto b = q.next()) rest.push_back(std::move(*b));
  expect_same(full, 3, rest, /*same_cursor=*/false, /*offset=*/used);

  // A piece outside its shard is refused with the shard named.
  Pipeline r(o);
  try {
    r.start_pieces(5, {{1, 0, n1 + 1}});
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(index_.shards[1].name), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.start_pieces(5, {{99, 0, 1}}), DataError);
  EXPECT_THROW(r.start_pieces(5, {{1, 3, 2}}), DataError);
}

TEST(ShardPermutation, IsASeededPermutationPerEpochAndShard) {
  const auto a = shard_permutation(7, 0, 2, 50);
  std::vector<int32_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < 50; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(a, shard_permutation(7, 0, 2, 50));
  EXPECT_NE(a, shard_permutation(7, 1, 2, 50));
  EXPECT_NE(a, shard_permutation(7, 0, 3, 50));
  EXPECT_NE(a, shard_permutation(8, 0, 2, 50));
  EXPECT_TRUE(shard_permutation(7, 0, 2, 0).empty());
}

TEST_F(PipelineTest, EvalModeIsIndependentOfEpochAndSeed) {
  DataOptions o = options();
  o.train = false;
  o.shuffle_buffer = 1;  // reading order = shard order
  Pipeline a(o);
  o.seed = 9;
  Pipeline b(o);
  const auto x = run_epoch(a, 0, {1});
  const auto y = run_epoch(b, 5, {1});
  expect_same(x, 0, y, /*same_cursor=*/false);  // cursors differ in epoch and seed
  ASSERT_FALSE(x.empty());
  EXPECT_EQ(x[0].keys[0], index_.shards[1].name + "/000000013");
}

TEST(EpochOrder, IsAPermutationAndBufferOneKeepsStreamOrder) {
  const std::vector<int64_t> counts = {5, 0, 7, 3};
  const auto o = epoch_order(counts, 1, 2, {3, 1, 0, 2}, 4);
  std::set<std::pair<int, int>> seen;
  for (const auto& r : o) seen.insert({r.list_pos, r.idx});
  EXPECT_EQ(o.size(), 15u);
  EXPECT_EQ(seen.size(), 15u);
  const auto id = epoch_order(counts, 1, 2, {3, 1, 0, 2}, 1);
  for (size_t t = 0; t + 1 < id.size(); ++t) {
    EXPECT_TRUE(std::make_pair(id[t].list_pos, id[t].idx) < std::make_pair(id[t + 1].list_pos, id[t + 1].idx));
  }
  // The buffer never emits a sample before it was read: position t only
  // draws from the first t + B samples of the stream.
  const auto w = epoch_order({100}, 3, 0, {0}, 8);
  for (size_t t = 0; t < w.size(); ++t) EXPECT_LT(w[t].idx, static_cast<int32_t>(t + 8));
}

TEST(StaticShardSplit, PartitionsShardsPerEpoch) {
  for (int world : {1, 3, 4}) {
    std::vector<int> owner(10, -1);
    size_t lo = 100, hi = 0;
    for (int r = 0; r < world; ++r) {
      const auto mine = static_shard_split(10, 5, 7, r, world);
      lo = std::min(lo, mine.size());
      hi = std::max(hi, mine.size());
      for (int64_t s : mine) {
        ASSERT_EQ(owner[s], -1) << "shard " << s << " given twice";
        owner[s] = r;
      }
    }
    EXPECT_EQ(std::count(owner.begin(), owner.end(), -1), 0);
    EXPECT_LE(hi - lo, 1u);
  }
  EXPECT_NE(static_shard_split(10, 0, 7, 0, 1), static_shard_split(10, 1, 7, 0, 1));
  EXPECT_EQ(static_shard_split(10, 1, 7, 0, 2), static_shard_split(10, 1, 7, 0, 2));
}

class BadDataTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::temp_dir("bad_data"); }
  void TearDown() override { fs::remove_all(dir_); }

  // Shard 0: 4 good samples and one of each kind of bad sample; shard 1: 3 good.
  void make_shards() {
    auto jpg = encode_jpeg(testing::synth_image(40, 30, 3, 1), 90);
    auto png = encode_png(testing::synth_image(21, 35, 1, 2));
    std::vector<uint8_t> cls = {'3'};
    std::vector<uint8_t> trunc(jpg.begin(), jpg.begin() + jpg.size() / 2);
    std::vector<uint8_t> garbage(300, 0x5a);
    Image big;
    big.width = big.height = 300;
    big.channels = 1;
    big.pixels.assign(300 * 300, 9);
    using M = std::vector<std::pair<std::string, std::vector<uint8_t>>>;
    M s0 = {{"a0.cls", cls},   {"a0.jpg", jpg},
            {"a1.cls", cls},   {"a1.png", png},
            {"b0.cls", cls},   {"b0.jpg", {}},               // zero-byte
            {"b1.cls", cls},   {"b1.jpg", trunc},            // truncated
            {"b2.cls", cls},   {"b2.png", garbage},          // corrupt
            {"b3.cls", cls},   {"b3.gif", jpg},              // unknown extension
            {"b4.jpg", jpg},                                 // missing label
            {"b5.cls", {'x'}}, {"b5.jpg", jpg},              // bad label
            {"b6.cls", cls},   {"b6.png", encode_png(big)},  // over max_pixels
            {"c0.cls", cls},   {"c0.jpg", jpg},
            {"c1.cls", cls},   {"c1.png", png}};
    M s1 = {{"d0.cls", cls}, {"d0.jpg", jpg}, {"d1.cls", cls}, {"d1.png", png}, {"d2.cls", cls}, {"d2.jpg", jpg}};
    ShardIndex idx;
    idx.dataset = "bad";
    idx.shards.push_back(testing::write_shard(dir_, "s0.tar", s0, 11));
    idx.shards.push_back(testing::write_shard(dir_, "s1.tar", s1, 3));
    idx.shards.push_back(testing::write_shard(dir_, "s2.tar", {}, 0));  // an empty shard is legal
    idx.total_samples = 14;
    save_index(idx, (dir_ / "index.json").string());
  }

  DataOptions options() const {
    DataOptions o;
    o.index_path = (dir_ / "index.json").string();
    o.input_size = 16;
    o.batch_size = 2;
    o.num_threads = 2;
    o.shuffle_buffer = 3;
    o.drop_last = false;
    o.require_labels = true;
    o.max_pixels = 200 * 200;
    return o;
  }

  fs::path dir_;
};

TEST_F(BadDataTest, BadSamplesAreSkippedAndCountedByReason) {
  make_shards();
  Pipeline p(options());
  p.start_epoch(0, {2, 0, 2, 1, 2});
  std::set<std::string> keys;
  while (auto b = p.next()) keys.insert(b->keys.begin(), b->keys.end());
  EXPECT_EQ(keys, (std::set<std::string>{"s0.tar/a0", "s0.tar/a1", "s0.tar/c0", "s0.tar/c1", "s1.tar/d0", "s1.tar/d1",
                                         "s1.tar/d2"}));
  const DataCounters c = p.counters();
  const std::map<std::string, int64_t> expected = {
      {"empty_file", 1},    {"truncated_image", 1}, {"corrupt_image", 1},  {"unknown_extension", 1},
      {"missing_label", 1}, {"bad_label", 1},       {"image_too_large", 1}};
  EXPECT_EQ(c.skipped, expected);
  EXPECT_EQ(c.samples_delivered, 7);

  // Without require_labels, unlabeled samples are delivered with label -1.
  DataOptions o = options();
  o.require_labels = false;
  Pipeline q(o);
  q.start_epoch(0, {0});
  int64_t unlabeled = 0, n = 0;
  while (auto b = q.next()) {
    n += b->labels.size(0);
    unlabeled += (b->labels == -1).sum().item<int64_t>();
  }
  EXPECT_EQ(n, 6);
  EXPECT_EQ(unlabeled, 2);
}

TEST_F(BadDataTest, TamperedOrMissingShardIsRefusedOrSkipped) {
  make_shards();
  {
    std::fstream f((dir_ / "s1.tar").string(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(700);  // inside d0.jpg's data
    f.put('\x42');
  }
  Pipeline p(options());
  p.start_epoch(0, {0, 1});
  try {
    while (p.next()) {
    }
    FAIL() << "a tampered shard was read";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("s1.tar"), std::string::npos) << msg;
    EXPECT_NE(msg.find("sha256 mismatch"), std::string::npos) << msg;
  }
  DataOptions o = options();
  o.bad_shard = BadShardPolicy::kSkip;
  Pipeline q(o);
  q.start_epoch(0, {1, 0});
  int64_t n = 0;
  while (auto b = q.next()) n += b->labels.size(0);
  EXPECT_EQ(n, 4);
  EXPECT_EQ(q.counters().skipped.at("bad_shard"), 3);

  // A damaged block inside an unverified shard: never fatal with skip, every
  // planned sample is either delivered or counted.
  make_shards();
  {
    std::fstream f((dir_ / "s0.tar").string(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(512 * 9);
    const std::string junk(512, '\xff');
    f.write(junk.data(), 512);
  }
  DataOptions u = options();
  u.verify_sha256 = false;
  u.bad_shard = BadShardPolicy::kSkip;
  Pipeline w(u);
  w.start_epoch(0, {0, 1});
  int64_t got = 0;
  while (auto b = w.next()) got += b->labels.size(0);
  EXPECT_GE(got, 3);
  EXPECT_EQ(got + w.counters().skipped_total(), 14);

  fs::remove(dir_ / "s0.tar");
  Pipeline r(options());
  r.start_epoch(0, {0});
  try {
    r.next();
    FAIL() << "a missing shard was not reported";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cnx::data
