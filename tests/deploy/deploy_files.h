#pragma once
// Loading deploy/ for the tests: every Kubernetes document under deploy/k8s,
// the job config embedded in the ConfigMap, and small lookups.
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace cnx::testing {

// $CNX_SOURCE_DIR (set by CTest), else the source dir baked in at build time.
std::string source_dir();
std::string read_text(const std::string& path);

struct K8sDoc {
  std::string file;  // relative to deploy/k8s
  YAML::Node node;
};
// Every YAML document of every deploy/k8s/*.yaml (sorted by file name).
std::vector<K8sDoc> load_k8s_docs();
// The unique document of this kind and name; fails the test (throws) if none or several.
YAML::Node find_doc(const std::vector<K8sDoc>& docs, const std::string& kind, const std::string& name);

struct DashboardQuery {
  std::string panel;  // panel title
  std::string expr;   // PromQL with Grafana variables
};
// Every target expression of deploy/grafana/cnx-dashboard.json.
std::vector<DashboardQuery> dashboard_queries();
// Replaces $__rate_interval (1m), $__range (1h) and $job by values Prometheus accepts.
std::string substitute_grafana_vars(std::string expr, const std::string& job);

}  // namespace cnx::testing
