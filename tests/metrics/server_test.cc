// MetricsServer over loopback: /metrics content and headers, /healthz, 404,
// port 0, bind errors; process collector values; promtool accepts the scrape
// of the full worker and coordinator catalogues.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <set>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "common/metric_names.h"
#include "common/metrics.h"
#include "common/metrics_catalogue.h"
#include "common/metrics_process.h"
#include "common/metrics_server.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::metrics {
namespace {

using cnx::testing::http_get;
using cnx::testing::promtool_check_metrics;

TEST(MetricsServer, ServesMetricsWithContentType) {
  auto registry = std::make_shared<Registry>();
  auto& c =
      BuildCounter().Name("cnx_test_requests_total").Help("Test counter.").Register(*registry).Add({{"rank", "0"}});
  c.Increment(5);
  MetricsServer server("127.0.0.1", 0);
  ASSERT_GT(server.port(), 0);
  EXPECT_EQ(server.address(), "127.0.0.1:" + std::to_string(server.port()));
  server.RegisterCollectable(registry);

  const auto r = http_get("127.0.0.1", server.port(), "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.at("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body,
            "# HELP cnx_test_requests_total Test counter.\n# TYPE cnx_test_requests_total counter\n"
            "cnx_test_requests_total{rank=\"0\"} 5\n");
  c.Increment();
  EXPECT_NE(http_get("127.0.0.1", server.port(), "/metrics").body.find("} 6\n"), std::string::npos);

  const auto head = http_get("127.0.0.1", server.port(), "/metrics", 5.0, "HEAD");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  EXPECT_EQ(http_get("127.0.0.1", server.port(), "/nothing").status, 404);
}

TEST(MetricsServer, DestroyedCollectablesAreSkippedAndRemovable) {
  auto a = std::make_shared<Registry>();
  auto b = std::make_shared<Registry>();
  BuildGauge().Name("a_value").Help("a").Register(*a).Add({}).Set(1);
  BuildGauge().Name("b_value").Help("b").Register(*b).Add({}).Set(2);
  MetricsServer server("127.0.0.1", 0);
  server.RegisterCollectable(a);
  server.RegisterCollectable(b);
  EXPECT_EQ(server.scrape(),
            "# HELP a_value a\n# TYPE a_value gauge\na_value 1\n"
            "# HELP b_value b\n# TYPE b_value gauge\nb_value 2\n");
  server.RemoveCollectable(a);
  b.reset();
  EXPECT_EQ(http_get("127.0.0.1", server.port(), "/metrics").body, "");
}

TEST(MetricsServer, HealthzReportsCallback) {
  MetricsServer server("127.0.0.1", 0);
  auto ok = http_get("127.0.0.1", server.port(), "/healthz");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "ok\n");
  server.set_health_check([] { return HealthStatus{false, "coordinator unreachable for 31 s"}; });
  auto bad = http_get("127.0.0.1", server.port(), "/healthz");
  EXPECT_EQ(bad.status, 503);
  EXPECT_EQ(bad.body, "coordinator unreachable for 31 s\n");
  server.set_health_check([]() -> HealthStatus { throw std::runtime_error("boom"); });
  auto threw = http_get("127.0.0.1", server.port(), "/healthz");
  EXPECT_EQ(threw.status, 503);
  EXPECT_NE(threw.body.find("boom"), std::string::npos);
  server.set_health_check(nullptr);
  EXPECT_EQ(http_get("127.0.0.1", server.port(), "/healthz").status, 200);
}

TEST(MetricsServer, ScrapeHooksRunBeforeEveryScrape) {
  auto registry = std::make_shared<Registry>();
  CoordinatorMetrics coord(*registry, "j");
  MetricsServer server("127.0.0.1", 0);
  server.RegisterCollectable(registry);
  int calls = 0;
  server.add_scrape_hook([&] { ++calls; });
  server.add_scrape_hook([&] { coord.refresh_commit_age(); });
  // A commit 100 s ago: the age is computed at scrape time, not when recorded.
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  coord.record_commit(now - 100);
  EXPECT_EQ(coord.checkpoints_committed.Value(), 1);
  const auto body = http_get("127.0.0.1", server.port(), "/metrics").body;
  EXPECT_EQ(calls, 1);
  const std::string key = "cnx_coordinator_seconds_since_last_commit{cnx_job=\"j\"} ";
  const size_t at = body.find(key);
  ASSERT_NE(at, std::string::npos) << body;
  const double age = std::stod(body.substr(at + key.size()));
  EXPECT_GE(age, 100.0);
  EXPECT_LT(age, 160.0);
  coord.record_commit();
  EXPECT_LT(coord.seconds_since_last_commit.Value(), 5.0);
  EXPECT_EQ(coord.checkpoints_committed.Value(), 2);
  server.add_scrape_hook([]() { throw std::runtime_error("hook failed"); });
  const auto failed = http_get("127.0.0.1", server.port(), "/metrics");
  EXPECT_EQ(failed.status, 500);
  EXPECT_NE(failed.body.find("hook failed"), std::string::npos);
}

class ThrowingCollectable : public Collectable {
 public:
  std::vector<MetricFamily> Collect() const override { throw std::runtime_error("cannot read sensor"); }
};

TEST(MetricsServer, CollectorErrorIs500WithMessage) {
  auto bad = std::make_shared<ThrowingCollectable>();
  MetricsServer server("127.0.0.1", 0);
  server.RegisterCollectable(bad);
  const auto r = http_get("127.0.0.1", server.port(), "/metrics");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("cannot read sensor"), std::string::npos) << r.body;
}

TEST(MetricsServer, BadAddressesAreClearErrors) {
  MetricsServer first("127.0.0.1", 0);
  try {
    MetricsServer second("127.0.0.1", first.port());
    FAIL() << "second server on the same port should fail";
  } catch (const CheckError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(first.port())), std::string::npos) << e.what();
  }
  EXPECT_THROW(MetricsServer("localhost", 0), CheckError);
  EXPECT_THROW(MetricsServer("127.0.0.1", 70000), CheckError);
  EXPECT_THROW(MetricsServer("127.0.0.1", 0, 0), CheckError);
}

TEST(ProcessCollector, ValuesMatchIndependentSources) {
  const double before = static_cast<double>(std::time(nullptr));
  // Burn some CPU so cpu seconds is measurably non-zero.
  volatile double x = 0;
  for (int i = 0; i < 20000000; ++i) x = x + i * 1e-9;
  const ProcessStats s = read_process_stats();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double ru_cpu =
      ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
  EXPECT_NEAR(s.cpu_seconds, ru_cpu, 0.05);
  EXPECT_GT(s.cpu_seconds, 0.0);
  // ru_maxrss (KiB) is the peak RSS: the current RSS cannot exceed it.
  EXPECT_GT(s.resident_bytes, 1 << 20);
  EXPECT_LE(s.resident_bytes, ru.ru_maxrss * 1024.0 + 4096);
  EXPECT_GE(s.virtual_bytes, s.resident_bytes);
  EXPECT_LE(s.start_time_seconds, before + 1);
  EXPECT_GT(s.start_time_seconds, before - 600);  // this test process started recently
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  EXPECT_EQ(s.max_fds, static_cast<double>(lim.rlim_cur));
  const double fds_before = s.open_fds;
  const int extra = dup(0);
  EXPECT_EQ(read_process_stats().open_fds, fds_before + 1);
  close(extra);

  // RSS grows by about the size of a buffer we touch.
  std::vector<char> big(64 << 20);
  std::memset(big.data(), 1, big.size());
  EXPECT_GT(read_process_stats().resident_bytes, s.resident_bytes + (48 << 20));
  EXPECT_THROW(read_process_stats("/proc/does-not-exist"), CheckError);
}

TEST(ProcessCollector, ExportsLabelledProcessFamilies) {
  ProcessCollector pc(Labels{{"job", "j"}, {"rank", "3"}});
  const std::string text = serialize_text(pc.Collect());
  for (const char* name :
       {names::kProcessCpuSecondsTotal, names::kProcessResidentMemoryBytes, names::kProcessStartTimeSeconds,
        names::kProcessVirtualMemoryBytes, names::kProcessOpenFds}) {
    EXPECT_NE(text.find(std::string(name) + "{job=\"j\",rank=\"3\"} "), std::string::npos) << name << "\n" << text;
  }
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter\n"), std::string::npos);
}

// The sample names in an exposition (without labels), e.g. "x_bucket".
std::set<std::string> sample_names(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    out.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return out;
}

TEST(MetricsCatalogue, WorkerAndCoordinatorExportExactlyTheCatalogueAndPassPromtool) {
  auto registry = std::make_shared<Registry>();
  WorkerMetrics w0(*registry, "job-a", 0, 1, "h0");
  WorkerMetrics w1(*registry, "job-a", 1, 1, "h1");
  CoordinatorMetrics coord(*registry, "job-a");
  auto process = std::make_shared<ProcessCollector>(w0.labels());
  w0.loss.Set(0.75);
  w1.loss.Set(0.5);
  w0.lr.Set(1.5e-4);
  w0.samples.Increment(64);
  w0.phase(StepPhase::kForward).Observe(0.12);
  w0.phase(StepPhase::kCommWait).Observe(0.003);
  w0.corrupt_samples("decode").Increment();
  w0.checkpoint_write_seconds.Observe(2.5);
  w0.set_blas_info("OpenBLAS", "0.3.21", "SkylakeX", "onednn");
  coord.workers_alive.Set(2);
  coord.set_job_state("running");
  coord.set_job_state("checkpointing");
  coord.rpc_seconds("Heartbeat", "OK").Observe(0.0004);
  coord.auth_failures.Increment();

  MetricsServer server("127.0.0.1", 0);
  server.RegisterCollectable(registry);
  server.RegisterCollectable(process);
  const auto r = http_get("127.0.0.1", server.port(), "/metrics");
  ASSERT_EQ(r.status, 200);
  const auto check = promtool_check_metrics(r.body);
  EXPECT_EQ(check.exit_code, 0) << check.output << "\n" << r.body;
  EXPECT_EQ(check.output, "");

  // Every catalogue entry is exported (histograms as _bucket/_sum/_count) and
  // nothing else; but the GPU families (GpuCollector, ranks on a CUDA device),
  // which gpu_metrics_test.cc checks against the catalogue over a faked NVML.
  std::set<std::string> expected;
  for (const auto& spec : metric_catalogue()) {
    if (spec.name.rfind("cnx_worker_gpu_", 0) == 0) continue;
    if (spec.type == MetricType::Histogram) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) expected.insert(spec.name + suffix);
    } else {
      expected.insert(spec.name);
    }
  }
  EXPECT_EQ(sample_names(r.body), expected);

  EXPECT_NE(r.body.find("cnx_worker_loss{attempt=\"1\",cnx_job=\"job-a\",host=\"h0\",rank=\"0\"} 0.75\n"),
            std::string::npos);
  EXPECT_NE(r.body.find("cnx_worker_loss{attempt=\"1\",cnx_job=\"job-a\",host=\"h1\",rank=\"1\"} 0.5\n"),
            std::string::npos);
  EXPECT_NE(
      r.body.find("cnx_worker_step_phase_seconds_count{attempt=\"1\",cnx_job=\"job-a\",host=\"h0\",phase=\"forward\","
                  "rank=\"0\"} 1\n"),
      std::string::npos);
  EXPECT_NE(r.body.find("cnx_worker_blas_info{attempt=\"1\",cnx_job=\"job-a\",core=\"SkylakeX\",gemm=\"onednn\","
                        "host=\"h0\",library=\"OpenBLAS\",rank=\"0\",version=\"0.3.21\"} 1\n"),
            std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("cnx_coordinator_job_state{cnx_job=\"job-a\",state=\"checkpointing\"} 1\n"), std::string::npos);
  EXPECT_NE(r.body.find("cnx_coordinator_job_state{cnx_job=\"job-a\",state=\"running\"} 0\n"), std::string::npos);
  EXPECT_NE(r.body.find("cnx_coordinator_rpc_seconds_bucket{cnx_job=\"job-a\",code=\"OK\",method=\"Heartbeat\","
                        "le=\"0.0004\"} 1\n"),
            std::string::npos);

  // Catalogue label lists match what is exported.
  for (const auto& f : registry->Collect()) {
    const MetricSpec* spec = find_metric(f.name);
    ASSERT_NE(spec, nullptr) << f.name;
    EXPECT_EQ(spec->type, f.type) << f.name;
    for (const auto& m : f.metric) {
      std::vector<std::string> names;
      for (const auto& l : m.label) names.push_back(l.name);
      EXPECT_EQ(names, spec->labels) << f.name;
    }
  }
}

TEST(MetricsCatalogue, PromtoolRejectsBrokenExposition) {
  // The check above can fail: promtool flags a counter without _total and a
  // malformed line.
  const auto lint = promtool_check_metrics("# HELP bad_counter h\n# TYPE bad_counter counter\nbad_counter 1\n");
  EXPECT_NE(lint.exit_code, 0);
  EXPECT_NE(lint.output.find("_total"), std::string::npos) << lint.output;
  const auto broken = promtool_check_metrics("# TYPE x gauge\nx{a=\"unterminated} 1\n");
  EXPECT_NE(broken.exit_code, 0);
}

}  // namespace
}  // namespace cnx::metrics
