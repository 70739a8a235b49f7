// Concurrent updates from many threads give exact totals, and scrapes taken
// while they run are internally consistent.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "common/metrics.h"

namespace cnx::metrics {
namespace {

constexpr int kThreads = 8;
constexpr int kPerThread = 50000;

TEST(MetricsConcurrency, CounterIncrementsAreExact) {
  Registry r;
  Counter& c = BuildCounter().Name("c_total").Help("h").Register(r).Add({});
  Counter& half = BuildCounter().Name("half_total").Help("h").Register(r).Add({});
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Increment();
        half.Increment(0.5);  // exactly representable: the sum is exact too
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), double(kThreads) * kPerThread);
  EXPECT_EQ(half.Value(), 0.5 * kThreads * kPerThread);
}

TEST(MetricsConcurrency, GaugeIncrementDecrementBalance) {
  Gauge g(7);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (t % 2 == 0) {
          g.Increment(2);
        } else {
          g.Decrement(2);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(g.Value(), 7);
}

TEST(MetricsConcurrency, HistogramCountsAndSumAreExactAndScrapesConsistent) {
  Registry r;
  auto& family = BuildHistogram().Name("h_seconds").Help("h").Register(r);
  Histogram& h = family.Add({}, Histogram::BucketBoundaries{1, 2, 3});
  std::atomic<bool> done{false};
  std::atomic<int> bad_scrapes{0};
  std::thread scraper([&] {
    while (!done.load()) {
      for (const auto& f : r.Collect()) {
        for (const auto& m : f.metric) {
          uint64_t prev = 0;
          for (const auto& b : m.bucket) {
            if (b.cumulative_count < prev) bad_scrapes++;
            prev = b.cumulative_count;
          }
          if (m.bucket.back().cumulative_count != m.sample_count) bad_scrapes++;
        }
      }
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Thread t observes the value (t % 4) + 0.5: buckets le=1,2,3,+Inf.
      for (int i = 0; i < kPerThread; ++i) h.Observe((t % 4) + 0.5);
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  scraper.join();
  EXPECT_EQ(bad_scrapes.load(), 0);
  const ClientMetric m = h.Collect();
  const uint64_t per_bucket = uint64_t(kThreads / 4) * kPerThread;
  ASSERT_EQ(m.bucket.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(m.bucket[i].cumulative_count, per_bucket * (i + 1)) << "bucket " << i;
  EXPECT_EQ(m.sample_count, uint64_t(kThreads) * kPerThread);
  EXPECT_EQ(m.sample_sum, double(per_bucket) * (0.5 + 1.5 + 2.5 + 3.5));
}

TEST(MetricsConcurrency, ConcurrentAddReturnsOneSeriesPerLabelSet) {
  Registry r;
  auto& family = BuildCounter().Name("per_label_total").Help("h").Register(r);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) family.Add({{"k", std::to_string(i % 10)}}).Increment();
    });
  }
  for (auto& t : threads) t.join();
  const auto families = r.Collect();
  ASSERT_EQ(families.size(), 1u);
  ASSERT_EQ(families[0].metric.size(), 10u);
  for (const auto& m : families[0].metric) EXPECT_EQ(m.value, kThreads * 200.0);
}

}  // namespace
}  // namespace cnx::metrics
