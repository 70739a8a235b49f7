// The Grafana dashboard: valid JSON, every PromQL expression is valid (promtool
// check rules) and refers only to metrics in the catalogue
// (common/metrics_catalogue.h) and to labels those metrics carry; outside the
// per-rank drill-down row every worker query aggregates over ranks (readable
// at 1,000 ranks). tests/e2e/dashboard_e2e_test.sh runs every panel's query
// against a Prometheus that scraped a real 2-rank job.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "common/check.h"
#include "common/metrics_catalogue.h"
#include "tests/deploy/deploy_files.h"
#include "tests/deploy/promql_refs.h"
#include "tests/metrics/prom_harness.h"

namespace cnx::testing {
namespace {

using metrics::MetricType;

nlohmann::json load_dashboard() {
  return nlohmann::json::parse(read_text(source_dir() + "/deploy/grafana/cnx-dashboard.json"));
}

// The catalogue entry a sample name belongs to (x_bucket/_sum/_count of a histogram x), or nullptr.
const metrics::MetricSpec* spec_for(const std::string& name) {
  if (const auto* s = metrics::find_metric(name)) return s;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string sfx = suffix;
    if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
      const auto* s = metrics::find_metric(name.substr(0, name.size() - sfx.size()));
      if (s != nullptr && s->type == MetricType::Histogram) return s;
    }
  }
  return nullptr;
}

// Problems with one expression: unknown metrics, labels none of its metrics carry.
std::vector<std::string> problems(const std::string& expr) {
  std::vector<std::string> out;
  const PromqlRefs refs = promql_refs(expr);
  if (refs.metrics.empty()) out.push_back("queries no metric");
  std::set<std::string> allowed = {"instance", "pod", "namespace", "job"};  // target labels
  for (const auto& m : refs.metrics) {
    const auto* spec = spec_for(m);
    if (spec == nullptr) {
      out.push_back("unknown metric " + m);
      continue;
    }
    allowed.insert(spec->labels.begin(), spec->labels.end());
    if (spec->type == MetricType::Histogram && m.size() > 7 && m.compare(m.size() - 7, 7, "_bucket") == 0) {
      allowed.insert("le");
    }
  }
  for (const auto& l : refs.labels) {
    if (!allowed.count(l)) out.push_back("label '" + l + "' is not on its metrics");
  }
  return out;
}

TEST(PromqlRefs, FindsMetricsAndLabelsNotFunctionsOrVariables) {
  const auto r = promql_refs(
      "histogram_quantile(0.95, sum by (le, phase) (rate(cnx_worker_step_phase_seconds_bucket{cnx_job=\"$cnx_job\","
      "rank=~\"0|1\"}[$__rate_interval]))) / ignoring(phase) group_left max without (rank) "
      "(cnx_worker_loss offset 5m) > bool 1e-3 and on(cnx_job) process_open_fds{pod!='a{b}'}");
  EXPECT_EQ(r.metrics,
            (std::set<std::string>{"cnx_worker_step_phase_seconds_bucket", "cnx_worker_loss", "process_open_fds"}));
  EXPECT_EQ(r.labels, (std::set<std::string>{"le", "phase", "cnx_job", "rank", "pod"}));
  EXPECT_THROW(promql_refs("rate(x{job=\"unterminated}[5m])"), CheckError);
}

TEST(PromqlRefs, CheckerRejectsUnknownMetricsAndLabels) {
  EXPECT_TRUE(problems("rate(cnx_worker_samples_total{cnx_job=\"$cnx_job\",host=~\"$host\"}[5m])").empty());
  EXPECT_EQ(problems("rate(cnx_worker_bogus_total[5m])"),
            (std::vector<std::string>{"unknown metric cnx_worker_bogus_total"}));
  // _bucket only maps to a histogram; a gauge has no buckets.
  EXPECT_EQ(problems("cnx_worker_loss_bucket"), (std::vector<std::string>{"unknown metric cnx_worker_loss_bucket"}));
  EXPECT_EQ(problems("sum by (phase) (cnx_worker_loss)"),
            (std::vector<std::string>{"label 'phase' is not on its metrics"}));
  EXPECT_EQ(problems("sum by (le) (cnx_worker_step_phase_seconds_sum)"),
            (std::vector<std::string>{"label 'le' is not on its metrics"}));
}

TEST(Dashboard, IsWellFormedGrafanaJson) {
  const auto d = load_dashboard();
  EXPECT_EQ(d["uid"], "cnx-training");
  std::set<int> ids;
  for (const auto& p : d["panels"]) {
    EXPECT_TRUE(ids.insert(p["id"].get<int>()).second) << "duplicate panel id " << p["id"];
    const auto& g = p["gridPos"];
    EXPECT_LE(g["x"].get<int>() + g["w"].get<int>(), 24) << p["title"];
    if (p["type"] != "row") {
      EXPECT_FALSE(p["targets"].empty()) << p["title"];
      EXPECT_EQ(p["datasource"]["uid"], "${datasource}") << p["title"];
    }
  }
  std::set<std::string> vars;
  for (const auto& v : d["templating"]["list"]) vars.insert(v["name"].get<std::string>());
  EXPECT_EQ(vars, (std::set<std::string>{"datasource", "cnx_job", "host", "rank", "straggler_factor"}));
  // host and rank: multi-value drill-down whose "All" matches only series that have the label.
  for (const auto& v : d["templating"]["list"]) {
    if (v["name"] == "host" || v["name"] == "rank") {
      EXPECT_TRUE(v["multi"].get<bool>() && v["includeAll"].get<bool>()) << v["name"];
      EXPECT_EQ(v["allValue"], ".+") << v["name"];
    }
  }
}

// Readable at 1,000 ranks: outside the drill-down row, a query over worker
// series aggregates them (one line per rank only where the row says so).
TEST(Dashboard, WorkerPanelsAggregateOverRanksOutsideTheDrillDownRow) {
  const std::regex aggregate(R"(^\(*\s*(sum|min|max|avg|count|topk|bottomk|quantile|histogram_quantile)\b)");
  int drill_down = 0, aggregated = 0;
  for (const auto& q : dashboard_queries()) {
    const auto refs = promql_refs(q.expr);
    const bool worker = std::any_of(refs.metrics.begin(), refs.metrics.end(), [](const std::string& m) {
      return m.rfind("cnx_worker_", 0) == 0 || m.rfind("process_", 0) == 0;
    });
    if (!worker) continue;
    // Worker queries follow the job, host and rank variables.
    EXPECT_NE(q.expr.find("cnx_job=\"$cnx_job\""), std::string::npos) << q.panel << ": " << q.expr;
    if (q.row.rfind("Per rank", 0) == 0) {
      ++drill_down;
      EXPECT_NE(q.expr.find("rank=~\"$rank\""), std::string::npos) << q.panel;
      EXPECT_NE(q.expr.find("host=~\"$host\""), std::string::npos) << q.panel;
      continue;
    }
    ++aggregated;
    EXPECT_TRUE(std::regex_search(q.expr, aggregate))
        << q.row << " / " << q.panel << " draws a series per rank: " << q.expr;
  }
  EXPECT_GE(drill_down, 5);
  EXPECT_GE(aggregated, 20);
}

TEST(Dashboard, HasStragglerRestartAndTopkViews) {
  bool straggler = false, topk = false, bottomk = false, minmeanmax = false;
  for (const auto& q : dashboard_queries()) {
    if (q.expr.find("$straggler_factor") != std::string::npos) {
      straggler = true;
      EXPECT_NE(q.expr.find("quantile(0.5,"), std::string::npos) << "stragglers are measured against the median";
      EXPECT_NE(q.expr.find("phase!=\"comm_wait\""), std::string::npos)
          << "a straggler is slow to compute, not slow because it waits for the others";
    }
    topk = topk || q.expr.rfind("topk(", 0) == 0;
    bottomk = bottomk || q.expr.rfind("bottomk(", 0) == 0;
    minmeanmax = minmeanmax || q.expr.rfind("min(", 0) == 0;
  }
  EXPECT_TRUE(straggler && topk && bottomk && minmeanmax);
  const auto annotations = dashboard_annotation_queries();
  ASSERT_EQ(annotations.size(), 1u);
  EXPECT_NE(annotations[0].expr.find("cnx_coordinator_attempt"), std::string::npos);
  for (const auto& p : problems(annotations[0].expr)) ADD_FAILURE() << p;
}

TEST(Dashboard, EveryQueryUsesCatalogueMetricsAndTheirLabels) {
  const auto d = load_dashboard();
  const auto queries = dashboard_queries();
  ASSERT_GE(queries.size(), 20u);
  std::set<std::string> used;
  for (const auto& q : queries) {
    for (const auto& p : problems(q.expr)) ADD_FAILURE() << "panel '" << q.panel << "': " << p << "\n  " << q.expr;
    for (const auto& m : promql_refs(q.expr).metrics) {
      if (const auto* s = spec_for(m)) used.insert(s->name);
    }
  }
  // Template variable queries too.
  const std::regex label_values(R"(label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s*,\s*([a-zA-Z_]+)\s*\))");
  for (const auto& v : d["templating"]["list"]) {
    if (!v.contains("definition")) continue;
    std::smatch m;
    const std::string def = v["definition"].get<std::string>();
    ASSERT_TRUE(std::regex_search(def, m, label_values)) << def;
    const auto* spec = spec_for(m[1]);
    ASSERT_NE(spec, nullptr) << def;
    EXPECT_NE(std::find(spec->labels.begin(), spec->labels.end(), m[3].str()), spec->labels.end()) << def;
    for (const auto& p : problems(m[1].str() + m[2].str())) ADD_FAILURE() << def << ": " << p;
  }
  // The panels the issue asks for: loss, lr, throughput per rank, step-phase
  // breakdown, comm time, data errors, checkpoint age, coordinator health.
  namespace n = metrics::names;
  for (const char* needed :
       {n::kWorkerLoss, n::kWorkerLr, n::kWorkerImagesPerSecond, n::kWorkerStepPhaseSeconds,
        n::kWorkerAllreduceSecondsTotal, n::kWorkerCorruptSamplesTotal, n::kCoordinatorSecondsSinceLastCommit,
        n::kCoordinatorWorkersAlive, n::kCoordinatorJobState, n::kCoordinatorRpcSeconds, n::kCoordinatorAttempt}) {
    EXPECT_TRUE(used.count(needed)) << "no panel shows " << needed;
  }
}

// The GPU panels say so in their description ("GPU only (": the e2e test
// exempts exactly those from "returns data" on a CPU job), and only they.
TEST(Dashboard, GpuPanelsAreExactlyThoseMarkedGpuOnly) {
  const auto d = load_dashboard();
  std::set<std::string> marked, querying_gpu;
  for (const auto& p : d["panels"]) {
    if (p["type"] == "row") continue;
    const std::string title = p["title"];
    if (p.value("description", "").rfind("GPU only (", 0) == 0) marked.insert(title);
    for (const auto& t : p["targets"]) {
      for (const auto& m : promql_refs(t["expr"].get<std::string>()).metrics) {
        if (m.rfind("cnx_worker_gpu_", 0) == 0) querying_gpu.insert(title);
      }
    }
  }
  EXPECT_EQ(marked, querying_gpu);
  EXPECT_EQ(marked,
            (std::set<std::string>{"GPU memory (max / mean over ranks)", "GPU utilisation (min / mean over ranks)",
                                   "GPU memory per rank", "GPU utilisation per rank"}));
}

// GPU memory (max / mean over ranks and per rank), GPU utilisation (min /
// mean over ranks and per rank); which builds run (ranks per version, so a
// mixed rollout shows) beside the BLAS kernel sets.
TEST(Dashboard, ShowsBuildBlasAndGpuPerRankAndAggregated) {
  namespace n = metrics::names;
  auto has = [](const std::string& prefix, const std::string& metric, const std::string& row_prefix) {
    for (const auto& q : dashboard_queries()) {
      if (q.expr.rfind(prefix, 0) == 0 && q.expr.find(metric + "{") != std::string::npos &&
          q.row.rfind(row_prefix, 0) == 0) {
        return true;
      }
    }
    return false;
  };
  const std::string gpu_mem = n::kWorkerGpuMemoryUsedBytes, gpu_util = n::kWorkerGpuUtilizationRatio;
  EXPECT_TRUE(has("max(", gpu_mem, "Build"));
  EXPECT_TRUE(has("avg(", gpu_mem, "Build"));
  EXPECT_TRUE(has("min(", gpu_util, "Build"));
  EXPECT_TRUE(has("avg(", gpu_util, "Build"));
  EXPECT_TRUE(has(gpu_mem, gpu_mem, "Per rank"));
  EXPECT_TRUE(has(gpu_util, gpu_util, "Per rank"));
  for (const char* m : {n::kWorkerGpuMemoryTotalBytes, n::kWorkerGpuAllocatedBytes, n::kWorkerGpuReservedBytes}) {
    EXPECT_TRUE(has("", m, "")) << "no panel shows " << m;
  }
  // cnx_build_info has only the version label: the job's ranks are found
  // through their scrape target, and counted by version.
  EXPECT_TRUE(has("count by (version) (cnx_build_info and on(instance) ", "cnx_worker_step", "Build"));
  EXPECT_TRUE(has("count(count by (version) (cnx_build_info ", "cnx_worker_step", "Build"));
  EXPECT_TRUE(has("count by (library, version, core, gemm) (", n::kWorkerBlasInfo, "Build"));
}

// docs/operations.md's metrics table lists every family of the catalogue.
TEST(Docs, OperationsListsEveryMetric) {
  const std::string doc = read_text(source_dir() + "/docs/operations.md");
  for (const auto& spec : metrics::metric_catalogue()) {
    EXPECT_NE(doc.find("| `" + spec.name + "` | " + metrics::type_name(spec.type) + " |"), std::string::npos)
        << spec.name << " is not in docs/operations.md's metrics table";
  }
}

TEST(Dashboard, EveryQueryParsesWithPromtool) {
  std::string rules = "groups:\n  - name: dashboard\n    rules:\n";
  int i = 0;
  auto queries = dashboard_queries();
  for (const auto& a : dashboard_annotation_queries()) queries.push_back(a);
  for (const auto& q : queries) {
    nlohmann::json expr = substitute_grafana_vars(q.expr, "fcmae-atto");  // JSON strings are valid YAML scalars
    rules += "      - record: cnx:dashboard_query_" + std::to_string(i++) + "\n        expr: " + expr.dump() + "\n";
  }
  const std::string dir = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
  const std::string path = dir + "/cnx_dashboard_rules_" + std::to_string(::getpid()) + ".yml";
  {
    std::ofstream out(path);
    out << rules;
  }
  const auto r = run_command({"/usr/bin/promtool", "check", "rules", path});
  std::remove(path.c_str());
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n" << rules;
  EXPECT_NE(r.output.find("SUCCESS: " + std::to_string(i) + " rules found"), std::string::npos) << r.output;

  // promtool does reject a broken expression (so the check above can fail).
  const std::string bad_path = dir + "/cnx_bad_rules_" + std::to_string(::getpid()) + ".yml";
  {
    std::ofstream out(bad_path);
    out << "groups:\n  - name: bad\n    rules:\n      - record: x:y\n        expr: \"sum by (le (rate(x[5m]))\"\n";
  }
  const auto bad = run_command({"/usr/bin/promtool", "check", "rules", bad_path});
  std::remove(bad_path.c_str());
  EXPECT_NE(bad.exit_code, 0) << bad.output;
}

}  // namespace
}  // namespace cnx::testing
