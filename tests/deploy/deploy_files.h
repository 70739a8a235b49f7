#pragma once
// Loading deploy/ for the tests: the Kubernetes objects an overlay of
// deploy/k8s renders to (kubectl kustomize), the job config embedded in the
// ConfigMap, and small lookups.
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace cnx::testing {

// $CNX_SOURCE_DIR (set by CTest), else the source dir baked in at build time.
std::string source_dir();
std::string read_text(const std::string& path);

struct K8sDoc {
  std::string file;  // what it came from (the overlay)
  YAML::Node node;
};
// $CNX_KUBECTL (set by CTest: the pinned kubectl of scripts/setup.sh), else "kubectl".
std::string kubectl();
// The overlays under deploy/k8s/overlays (sorted).
std::vector<std::string> k8s_overlays();
// Every object `kubectl kustomize <dir>` renders (dir: a kustomization
// folder); fails the test (throws) if kubectl fails.
std::vector<K8sDoc> render_kustomization(const std::string& dir);
// render_kustomization(deploy/k8s/overlays/<overlay>).
std::vector<K8sDoc> load_k8s_docs(const std::string& overlay);
// The unique document of this kind and name; fails the test (throws) if none or several.
YAML::Node find_doc(const std::vector<K8sDoc>& docs, const std::string& kind, const std::string& name);

struct DashboardQuery {
  std::string panel;  // panel title ("annotation: <name>" for annotations)
  std::string row;    // title of the row the panel is in ("" for annotations)
  std::string expr;   // PromQL with Grafana variables
};
// Every target expression of deploy/grafana/cnx-dashboard.json's panels.
std::vector<DashboardQuery> dashboard_queries();
// The expressions of its annotations (restarts).
std::vector<DashboardQuery> dashboard_annotation_queries();
// Replaces Grafana's variables by values Prometheus accepts: $__rate_interval
// (1m), $__range (1h), $__interval (15s), $cnx_job (`job`), $host and $rank
// (.+: every host and rank, as the variables' All) and $straggler_factor (1: with it the straggler
// panel lists the ranks slower than the median, so it has data in a test).
std::string substitute_grafana_vars(std::string expr, const std::string& job);

}  // namespace cnx::testing
