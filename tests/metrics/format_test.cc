// Text exposition format 0.0.4: golden text, escaping, histogram buckets,
// label sets, value formatting, registration errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "common/check.h"
#include "common/metrics.h"

namespace cnx::metrics {
namespace {

TEST(MetricsFormat, GoldenText) {
  Registry r;
  auto& requests =
      BuildCounter().Name("http_requests_total").Help("Requests served.").Labels({{"service", "api"}}).Register(r);
  requests.Add({{"code", "200"}, {"method", "get"}}).Increment(3);
  requests.Add({{"code", "500"}, {"method", "post"}}).Increment();
  auto& temp = BuildGauge().Name("room_temperature_celsius").Help("Temperature.").Register(r);
  temp.Add({}).Set(-1.5);
  auto& lat = BuildHistogram().Name("rpc_duration_seconds").Help("Latency.").Register(r);
  auto& h = lat.Add({{"method", "Heartbeat"}}, Histogram::BucketBoundaries{0.1, 0.5, 1});
  for (double v : {0.05, 0.1, 0.3, 0.7, 2.0}) h.Observe(v);

  const std::string expected =
      "# HELP http_requests_total Requests served.\n"
      "# TYPE http_requests_total counter\n"
      "http_requests_total{code=\"200\",method=\"get\",service=\"api\"} 3\n"
      "http_requests_total{code=\"500\",method=\"post\",service=\"api\"} 1\n"
      "# HELP room_temperature_celsius Temperature.\n"
      "# TYPE room_temperature_celsius gauge\n"
      "room_temperature_celsius -1.5\n"
      "# HELP rpc_duration_seconds Latency.\n"
      "# TYPE rpc_duration_seconds histogram\n"
      "rpc_duration_seconds_bucket{method=\"Heartbeat\",le=\"0.1\"} 2\n"
      "rpc_duration_seconds_bucket{method=\"Heartbeat\",le=\"0.5\"} 3\n"
      "rpc_duration_seconds_bucket{method=\"Heartbeat\",le=\"1\"} 4\n"
      "rpc_duration_seconds_bucket{method=\"Heartbeat\",le=\"+Inf\"} 5\n"
      "rpc_duration_seconds_sum{method=\"Heartbeat\"} 3.15\n"
      "rpc_duration_seconds_count{method=\"Heartbeat\"} 5\n";
  EXPECT_EQ(serialize_text(r.Collect()), expected);
  EXPECT_EQ(TextSerializer().Serialize(r.Collect()), expected);
}

TEST(MetricsFormat, LabelValueEscaping) {
  EXPECT_EQ(escape_label_value(R"(a\b"c)"
                               "\n"
                               "d"),
            R"(a\\b\"c\nd)");
  EXPECT_EQ(escape_label_value("plain ütf-8 {}=,"), "plain ütf-8 {}=,");
  Registry r;
  BuildGauge().Name("g").Help("h").Register(r).Add({{"path", "C:\\dir\n\"x\""}}).Set(1);
  EXPECT_EQ(serialize_text(r.Collect()), "# HELP g h\n# TYPE g gauge\ng{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n");
}

TEST(MetricsFormat, HelpEscaping) {
  // HELP escapes backslash and newline only; quotes stay as they are.
  EXPECT_EQ(escape_help("a\\b\n\"q\""), "a\\\\b\\n\"q\"");
  Registry r;
  BuildCounter().Name("c_total").Help("line1\nline2 \\ \"x\"").Register(r).Add({}).Increment();
  EXPECT_EQ(serialize_text(r.Collect()),
            "# HELP c_total line1\\nline2 \\\\ \"x\"\n# TYPE c_total counter\nc_total 1\n");
}

TEST(MetricsFormat, ValueFormatting) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(-0.0), "-0");
  EXPECT_EQ(format_value(42), "42");
  EXPECT_EQ(format_value(-7), "-7");
  EXPECT_EQ(format_value(1e15), "1000000000000000");
  EXPECT_EQ(format_value(0.1), "0.1");
  EXPECT_EQ(format_value(1.0 / 3.0), "0.3333333333333333");  // Python repr gives the same
  EXPECT_EQ(format_value(2.5e-7), "2.5e-07");
  EXPECT_EQ(format_value(1e300), "1e+300");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
  // Every finite value round-trips exactly.
  for (double v : {0.1, 1.0 / 3.0, 6.02214076e23, 1e-300, 123456.789, -2.2250738585072014e-308}) {
    EXPECT_EQ(std::strtod(format_value(v).c_str(), nullptr), v) << format_value(v);
  }
}

TEST(MetricsFormat, HistogramBucketsAreCumulativeWithBoundaryInclusive) {
  Histogram h({1, 2, 4});
  // le is inclusive: 1 -> first bucket, 2 -> second, 4.0000001 -> +Inf.
  for (double v : {0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 4.0000001, 100.0}) h.Observe(v);
  const ClientMetric m = h.Collect();
  ASSERT_EQ(m.bucket.size(), 4u);
  EXPECT_EQ(m.bucket[0].cumulative_count, 2u);
  EXPECT_EQ(m.bucket[1].cumulative_count, 4u);
  EXPECT_EQ(m.bucket[2].cumulative_count, 6u);
  EXPECT_EQ(m.bucket[3].cumulative_count, 8u);
  EXPECT_TRUE(std::isinf(m.bucket[3].upper_bound));
  EXPECT_EQ(m.sample_count, 8u);
  EXPECT_DOUBLE_EQ(m.sample_sum, 0 + 1 + 1.5 + 2 + 3 + 4 + 4.0000001 + 100);
}

TEST(MetricsFormat, HistogramNegativeInfAndNaNObservations) {
  Histogram h({0});
  h.Observe(-std::numeric_limits<double>::infinity());
  h.Observe(std::nan(""));
  const ClientMetric m = h.Collect();
  EXPECT_EQ(m.bucket[0].cumulative_count, 1u);  // -Inf <= 0
  EXPECT_EQ(m.bucket[1].cumulative_count, 2u);  // NaN only in +Inf
  EXPECT_TRUE(std::isnan(m.sample_sum));
}

TEST(MetricsFormat, HistogramObserveMultipleAndBucketHelpers) {
  Histogram h({1, 2});
  h.ObserveMultiple({1, 0, 2}, 7.5);
  const ClientMetric m = h.Collect();
  EXPECT_EQ(m.bucket[0].cumulative_count, 1u);
  EXPECT_EQ(m.bucket[1].cumulative_count, 1u);
  EXPECT_EQ(m.bucket[2].cumulative_count, 3u);
  EXPECT_EQ(m.sample_sum, 7.5);
  EXPECT_THROW(h.ObserveMultiple({1, 2}, 0), CheckError);
  EXPECT_THROW(h.ObserveMultiple({1, -1, 0}, 0), CheckError);

  EXPECT_EQ(ExponentialBuckets(0.5, 2, 4), (Histogram::BucketBoundaries{0.5, 1, 2, 4}));
  EXPECT_EQ(LinearBuckets(-1, 0.5, 3), (Histogram::BucketBoundaries{-1, -0.5, 0}));
  EXPECT_THROW(ExponentialBuckets(0, 2, 3), CheckError);
  EXPECT_THROW(LinearBuckets(0, 0, 3), CheckError);
}

TEST(MetricsFormat, HistogramBoundariesValidated) {
  EXPECT_THROW(Histogram({1, 1}), CheckError);
  EXPECT_THROW(Histogram({2, 1}), CheckError);
  EXPECT_THROW(Histogram({std::nan("")}), CheckError);
  EXPECT_THROW(Histogram({-std::numeric_limits<double>::infinity(), 1}), CheckError);
  Histogram with_inf({1, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(with_inf.boundaries().size(), 1u);  // trailing +Inf dropped, not duplicated
  EXPECT_EQ(with_inf.Collect().bucket.size(), 2u);
  Histogram none({});
  none.Observe(3);
  EXPECT_EQ(none.Collect().bucket.size(), 1u);
}

TEST(MetricsFormat, LabelSetsIdentifySeries) {
  Registry r;
  auto& f = BuildGauge().Name("g").Help("h").Register(r);
  Gauge& a = f.Add({{"x", "1"}, {"y", "2"}});
  Gauge& b = f.Add({{"y", "2"}, {"x", "1"}});  // same set, other order
  Gauge& c = f.Add({{"x", "1"}});
  Gauge& d = f.Add({});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  EXPECT_NE(&c, &d);
  EXPECT_TRUE(f.Has({{"x", "1"}}));
  EXPECT_FALSE(f.Has({{"x", "2"}}));
  a.Set(1);
  c.Set(2);
  d.Set(3);
  EXPECT_EQ(serialize_text(r.Collect()), "# HELP g h\n# TYPE g gauge\ng 3\ng{x=\"1\"} 2\ng{x=\"1\",y=\"2\"} 1\n");
  f.Remove(&c);
  EXPECT_FALSE(f.Has({{"x", "1"}}));
  EXPECT_EQ(serialize_text(r.Collect()), "# HELP g h\n# TYPE g gauge\ng 3\ng{x=\"1\",y=\"2\"} 1\n");
}

TEST(MetricsFormat, EmptyFamiliesAreNotWritten) {
  Registry r;
  BuildCounter().Name("never_total").Help("h").Register(r);
  EXPECT_EQ(serialize_text(r.Collect()), "");
}

TEST(MetricsFormat, CounterGaugeSemantics) {
  Counter c;
  c.Increment();
  c.Increment(2.5);
  EXPECT_EQ(c.Value(), 3.5);
  EXPECT_THROW(c.Increment(-1), CheckError);
  EXPECT_THROW(c.Increment(std::nan("")), CheckError);
  EXPECT_EQ(c.Value(), 3.5);
  Gauge g;
  g.Set(10);
  g.Increment(2);
  g.Decrement(5);
  g.Decrement();
  EXPECT_EQ(g.Value(), 6);
  g.SetToCurrentTime();
  EXPECT_GT(g.Value(), 1.7e9);  // after 2023-11
}

TEST(MetricsFormat, InvalidNamesAreRejectedWithTheName) {
  Registry r;
  try {
    BuildCounter().Name("1bad").Help("h").Register(r);
    FAIL() << "expected CheckError";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("'1bad'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(BuildGauge().Name("a-b").Help("h").Register(r), CheckError);
  EXPECT_THROW(BuildGauge().Name("").Help("h").Register(r), CheckError);
  EXPECT_THROW(BuildGauge().Name("g1").Help("h").Labels({{"__name", "x"}}).Register(r), CheckError);
  auto& g = BuildGauge().Name("g2").Help("h").Labels({{"job", "x"}}).Register(r);
  EXPECT_THROW(g.Add({{"bad-label", "v"}}), CheckError);
  EXPECT_THROW(g.Add({{"job", "y"}}), CheckError);  // repeats a constant label
  auto& h = BuildHistogram().Name("h1").Help("h").Register(r);
  EXPECT_THROW(h.Add({{"le", "1"}}, Histogram::BucketBoundaries{1}), CheckError);
  EXPECT_TRUE(is_valid_metric_name("ns:sub_name_total"));
  EXPECT_FALSE(is_valid_label_name("a:b"));
}

TEST(MetricsFormat, ConflictingRegistrationsThrowIdenticalOnesMerge) {
  Registry r;
  auto& a = BuildCounter().Name("x_total").Help("h").Register(r);
  auto& b = BuildCounter().Name("x_total").Help("h").Register(r);
  EXPECT_EQ(&a, &b);
  EXPECT_THROW(BuildGauge().Name("x_total").Help("h").Register(r), CheckError);
  EXPECT_THROW(BuildCounter().Name("x_total").Help("other").Register(r), CheckError);
  BuildHistogram().Name("lat").Help("h").Register(r);
  EXPECT_THROW(BuildGauge().Name("lat_count").Help("h").Register(r), CheckError);
  BuildGauge().Name("q_sum").Help("h").Register(r);
  EXPECT_THROW(BuildHistogram().Name("q").Help("h").Register(r), CheckError);
  EXPECT_TRUE(r.Remove(a));
  EXPECT_FALSE(r.Remove(a));
  BuildGauge().Name("x_total").Help("now a gauge").Register(r);  // the name is free again
}

}  // namespace
}  // namespace cnx::metrics
