// A real Prometheus server (the Debian package) scrapes this process's
// MetricsServer on loopback; the series must show up in its query API.
#include <gtest/gtest.h>

#include <memory>

#include "common/metrics.h"
#include "common/metrics_catalogue.h"
#include "common/metrics_process.h"
#include "common/metrics_server.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::metrics {
namespace {

TEST(PrometheusIntegration, ScrapedSeriesAreQueryable) {
  auto registry = std::make_shared<Registry>();
  WorkerMetrics rank0(*registry, "itest", 0, 2);
  WorkerMetrics rank1(*registry, "itest", 1, 2);
  CoordinatorMetrics coord(*registry, "itest");
  auto process = std::make_shared<ProcessCollector>(rank0.labels());
  rank0.loss.Set(1.25);
  rank1.loss.Set(0.625);
  for (int i = 0; i < 10; ++i) rank0.phase(StepPhase::kBackward).Observe(0.01 * (i + 1));
  coord.workers_alive.Set(2);
  MetricsServer server("127.0.0.1", 0);
  server.RegisterCollectable(registry);
  server.RegisterCollectable(process);

  cnx::testing::PrometheusServer prom({{"cnx", {server.address()}}});
  // Our job id is cnx_job; Prometheus's job label stays the scrape job's ("cnx").
  const auto loss = prom.wait_for("cnx_worker_loss{cnx_job=\"itest\",job=\"cnx\"}", 2, 30.0);
  ASSERT_EQ(loss.size(), 2u);
  std::map<std::string, std::string> by_rank;
  for (const auto& s : loss) by_rank[s["metric"]["rank"].get<std::string>()] = s["value"][1].get<std::string>();
  EXPECT_EQ(by_rank["0"], "1.25");
  EXPECT_EQ(by_rank["1"], "0.625");

  const auto alive = prom.query("cnx_coordinator_workers_alive{cnx_job=\"itest\"}");
  ASSERT_EQ(alive.size(), 1u);
  EXPECT_EQ(alive[0]["value"][1].get<std::string>(), "2");

  const auto count = prom.query("cnx_worker_step_phase_seconds_count{phase=\"backward\",rank=\"0\"}");
  ASSERT_EQ(count.size(), 1u);
  EXPECT_EQ(count[0]["value"][1].get<std::string>(), "10");
  // PromQL over our buckets: the median of 0.01..0.1 lies in the (0.032, 0.064] bucket.
  const auto median =
      prom.query("histogram_quantile(0.5, sum by (le) (cnx_worker_step_phase_seconds_bucket{phase=\"backward\"}))");
  ASSERT_EQ(median.size(), 1u);
  const double q = std::stod(median[0]["value"][1].get<std::string>());
  EXPECT_GT(q, 0.032);
  EXPECT_LE(q, 0.064);

  const auto rss = prom.wait_for("process_resident_memory_bytes{cnx_job=\"itest\",rank=\"0\"}", 1, 10.0);
  EXPECT_GT(std::stod(rss[0]["value"][1].get<std::string>()), 1e6);
  // `up` carries the scrape job's label; our series carry ours.
  const auto up = prom.query("up{job=\"cnx\"}");
  ASSERT_EQ(up.size(), 1u);
  EXPECT_EQ(up[0]["value"][1].get<std::string>(), "1");
  EXPECT_EQ(prom.query("cnx_worker_loss{job=\"itest\"}").size(), 0u);
  EXPECT_EQ(prom.query("{exported_job!=\"\"}").size(), 0u);
}

}  // namespace
}  // namespace cnx::metrics
