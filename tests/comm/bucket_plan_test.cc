// Unit tests of the bucket assignment (no MPI, no torch).
#include "comm/bucket_plan.h"

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>

namespace cnx::comm {
namespace {

std::vector<BucketParam> floats(const std::vector<int64_t>& numels, int group = 0) {
  std::vector<BucketParam> out;
  for (int64_t n : numels) out.push_back(BucketParam{n, 4, group});
  return out;
}

// Every parameter appears exactly once, offsets are contiguous, sizes add up.
void expect_consistent(const std::vector<BucketParam>& params, const std::vector<Bucket>& buckets) {
  std::set<size_t> seen;
  for (const Bucket& b : buckets) {
    ASSERT_EQ(b.params.size(), b.offsets.size());
    ASSERT_FALSE(b.params.empty());
    int64_t off = 0;
    int64_t bytes = 0;
    for (size_t j = 0; j < b.params.size(); ++j) {
      EXPECT_TRUE(seen.insert(b.params[j]).second) << "parameter " << b.params[j] << " twice";
      EXPECT_EQ(b.offsets[j], off);
      EXPECT_EQ(params[b.params[j]].group, b.group);
      off += params[b.params[j]].numel;
      bytes += params[b.params[j]].numel * params[b.params[j]].element_size;
    }
    EXPECT_EQ(b.numel, off);
    EXPECT_EQ(b.bytes, bytes);
  }
  EXPECT_EQ(seen.size(), params.size());
}

TEST(BucketPlan, ReverseOrderSmallFirstBucketThenCap) {
  // 10 params of 100 floats (400 B). First bucket 1000 B -> 3 params
  // (1200 B >= 1000), then cap 2000 B -> 5 params per bucket, rest 2.
  auto params = floats(std::vector<int64_t>(10, 100));
  auto buckets = plan_buckets(params, 1000, 2000);
  expect_consistent(params, buckets);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].params, (std::vector<size_t>{9, 8, 7}));
  EXPECT_EQ(buckets[1].params, (std::vector<size_t>{6, 5, 4, 3, 2}));
  EXPECT_EQ(buckets[2].params, (std::vector<size_t>{1, 0}));
  EXPECT_EQ(buckets[1].offsets, (std::vector<int64_t>{0, 100, 200, 300, 400}));
  EXPECT_EQ(buckets[1].bytes, 2000);
}

TEST(BucketPlan, OversizedParameterGetsItsOwnBucket) {
  auto params = floats({10, 1000000, 10, 10});
  auto buckets = plan_buckets(params, 100, 1000);
  expect_consistent(params, buckets);
  // reverse: 3,2 (80 B) + 1 (4 MB) closes at >= 100 B -> {3,2,1}; then {0}.
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets[0].params, (std::vector<size_t>{3, 2, 1}));
  EXPECT_EQ(buckets[1].params, (std::vector<size_t>{0}));
  auto big_first = plan_buckets(floats({10, 10, 1000000}), 100, 1000);
  ASSERT_EQ(big_first.size(), 2u);
  EXPECT_EQ(big_first[0].params, (std::vector<size_t>{2}));
}

TEST(BucketPlan, GroupChangeClosesBucket) {
  std::vector<BucketParam> params = {{10, 4, 0}, {10, 4, 0}, {10, 8, 1}, {10, 4, 0}};
  auto buckets = plan_buckets(params, 1 << 20, 1 << 20);
  expect_consistent(params, buckets);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].params, (std::vector<size_t>{3}));
  EXPECT_EQ(buckets[1].params, (std::vector<size_t>{2}));
  EXPECT_EQ(buckets[1].group, 1);
  EXPECT_EQ(buckets[1].bytes, 80);
  EXPECT_EQ(buckets[2].params, (std::vector<size_t>{1, 0}));
}

TEST(BucketPlan, LargeCapGivesOneBucketAfterFirst) {
  auto params = floats({5, 0, 7, 3, 11});
  auto buckets = plan_buckets(params, 4, 1 << 30);
  expect_consistent(params, buckets);
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets[0].params, (std::vector<size_t>{4}));
  EXPECT_EQ(buckets[1].numel, 15);
}

TEST(BucketPlan, EmptyListGivesNoBuckets) {
  EXPECT_TRUE(plan_buckets({}, 100, 100).empty());
}

TEST(BucketPlan, RealisticModelSizes) {
  // atto-like: 3.7M floats in many tensors; 1 MiB first bucket, 25 MiB cap.
  std::vector<int64_t> numels;
  for (int i = 0; i < 200; ++i) numels.push_back(i % 3 == 0 ? 51200 : (i % 3 == 1 ? 320 : 12));
  auto params = floats(numels);
  auto buckets = plan_buckets(params, mib_to_bytes(0.1, "first"), mib_to_bytes(0.5, "cap"));
  expect_consistent(params, buckets);
  ASSERT_GT(buckets.size(), 2u);
  EXPECT_GE(buckets[0].bytes, mib_to_bytes(0.1, "first"));
  EXPECT_LT(buckets[0].bytes, mib_to_bytes(0.1, "first") + 51200 * 4);
  for (size_t b = 1; b + 1 < buckets.size(); ++b) {
    EXPECT_GE(buckets[b].bytes, mib_to_bytes(0.5, "cap"));
    EXPECT_LT(buckets[b].bytes, mib_to_bytes(0.5, "cap") + 51200 * 4);
  }
}

TEST(BucketPlan, RejectsBadInput) {
  EXPECT_THROW(plan_buckets(floats({1}), 0, 100), std::invalid_argument);
  EXPECT_THROW(plan_buckets(floats({1}), 100, -1), std::invalid_argument);
  EXPECT_THROW(plan_buckets({{-1, 4, 0}}, 100, 100), std::invalid_argument);
  EXPECT_THROW(plan_buckets({{1, 0, 0}}, 100, 100), std::invalid_argument);
  try {
    mib_to_bytes(-2.0, "GradSyncOptions.bucket_cap_mb");
    FAIL() << "expected invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("GradSyncOptions.bucket_cap_mb"), std::string::npos) << e.what();
  }
  EXPECT_EQ(mib_to_bytes(25.0, "cap"), 25 * 1024 * 1024);
}

}  // namespace
}  // namespace cnx::comm
