// With a real Prometheus (Debian package) on loopback scraping exporters that
// register the full worker and coordinator catalogues, deploy/local/
// scrape_local.sh finds the series (and fails when one is missing). The
// dashboard's queries run against a real job in tests/e2e/dashboard_e2e_test.sh.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include "common/metrics.h"
#include "common/metrics_catalogue.h"
#include "common/metrics_process.h"
#include "common/metrics_server.h"
#include "tests/deploy/deploy_files.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::testing {
namespace {

using namespace cnx::metrics;

// Two ranks and a coordinator whose metrics keep moving (so rate() and
// histogram_quantile() over them have data), served on one port.
class LiveExporters {
 public:
  explicit LiveExporters(const std::string& job)
      : registry_(std::make_shared<Registry>()),
        rank0_(*registry_, job, 0, 1),
        rank1_(*registry_, job, 1, 1),
        coord_(*registry_, job),
        process_(std::make_shared<ProcessCollector>(rank0_.labels())),
        server_("127.0.0.1", 0) {
    server_.RegisterCollectable(registry_);
    server_.RegisterCollectable(process_);
    server_.add_scrape_hook([this] { coord_.refresh_commit_age(); });
    coord_.workers_registered.Set(2);
    coord_.workers_alive.Set(2);
    coord_.attempt.Set(1);
    coord_.set_job_state("running");
    coord_.shards_pending.Set(10);
    thread_ = std::thread([this] { run(); });
  }
  ~LiveExporters() {
    stop_ = true;
    thread_.join();
  }
  std::string address() const { return server_.address(); }

 private:
  void run() {
    for (int step = 1; !stop_; ++step) {
      for (WorkerMetrics* w : {&rank0_, &rank1_}) {
        w->loss.Set(1.0 / step);
        w->lr.Set(1e-4);
        w->step.Set(step);
        w->epoch.Set(step / 100.0);
        w->samples.Increment(32);
        w->images_per_second.Set(320);
        w->grad_norm.Set(0.5);
        w->allreduce_bytes.Increment(4e6);
        w->allreduce_seconds.Increment(0.01);
        for (int p = 0; p < kNumStepPhases; ++p) w->phase(static_cast<StepPhase>(p)).Observe(0.001 * (p + 1));
        if (step % 5 == 0) w->corrupt_samples("decode").Increment();
        if (step % 7 == 0) w->nonfinite_steps.Increment();
        if (step % 10 == 0) w->checkpoint_write_seconds.Observe(1.5);
      }
      coord_.epoch.Set(step / 100);
      coord_.samples_per_second.Set(640);
      if (step % 10 == 0) coord_.record_commit();
      coord_.rpc_seconds("Heartbeat", "OK").Observe(0.0003);
      if (step % 3 == 0) coord_.rpc_seconds("Register", "UNAVAILABLE").Observe(0.002);
      if (step % 9 == 0) coord_.auth_failures.Increment();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::shared_ptr<Registry> registry_;
  WorkerMetrics rank0_, rank1_;
  CoordinatorMetrics coord_;
  std::shared_ptr<ProcessCollector> process_;
  MetricsServer server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(DeployPrometheus, ScrapeLocalScriptFindsSeriesAndReportsMissingOnes) {
  LiveExporters live("dtest");
  const std::string script = source_dir() + "/deploy/local/scrape_local.sh";
  const auto ok =
      run_command({"/bin/bash", script, "--targets", live.address(), "--port", "0", "--interval", "1", "--query",
                   "cnx_worker_loss{cnx_job=\"dtest\"}", "--min", "2", "--query",
                   "cnx_coordinator_workers_alive{cnx_job=\"dtest\"} == 2", "--min", "1", "--timeout", "30"});
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("\"rank\":\"0\""), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("\"rank\":\"1\""), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("cnx_coordinator_workers_alive"), std::string::npos) << ok.output;

  const auto missing = run_command({"/bin/bash", script, "--targets", live.address(), "--port", "0", "--query",
                                    "cnx_worker_loss{cnx_job=\"no-such-job\"}", "--timeout", "3"});
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("returned 0 series"), std::string::npos) << missing.output;
  const auto bad = run_command({"/bin/bash", script, "--targets", "not-a-target"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("not-a-target"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace cnx::testing
