#include "tests/deploy/deploy_files.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/check.h"

namespace cnx::testing {

std::string source_dir() {
  const char* s = std::getenv("CNX_SOURCE_DIR");
  return s != nullptr ? s : CNX_DEPLOY_TEST_SOURCE_DIR;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CNX_CHECK(in.good(), "cannot read ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<K8sDoc> load_k8s_docs() {
  const std::filesystem::path dir = std::filesystem::path(source_dir()) / "deploy" / "k8s";
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".yaml") files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  std::vector<K8sDoc> docs;
  for (const auto& f : files) {
    std::vector<YAML::Node> nodes;
    try {
      nodes = YAML::LoadAll(read_text((dir / f).string()));
    } catch (const YAML::Exception& e) {
      CNX_CHECK(false, "deploy/k8s/", f, ": invalid YAML: ", e.what());
    }
    for (auto& n : nodes) {
      if (n.IsNull()) continue;
      docs.push_back({f, n});
    }
  }
  return docs;
}

YAML::Node find_doc(const std::vector<K8sDoc>& docs, const std::string& kind, const std::string& name) {
  YAML::Node found;
  int n = 0;
  for (const auto& d : docs) {
    if (d.node["kind"] && d.node["kind"].as<std::string>() == kind && d.node["metadata"] &&
        d.node["metadata"]["name"].as<std::string>() == name) {
      found = d.node;
      ++n;
    }
  }
  CNX_CHECK(n == 1, "deploy/k8s: expected one ", kind, " named '", name, "', found ", n);
  return found;
}

std::vector<DashboardQuery> dashboard_queries() {
  const auto d = nlohmann::json::parse(read_text(source_dir() + "/deploy/grafana/cnx-dashboard.json"));
  std::vector<DashboardQuery> out;
  for (const auto& p : d.at("panels")) {
    if (p.at("type") == "row") continue;
    for (const auto& t : p.at("targets"))
      out.push_back({p.at("title").get<std::string>(), t.at("expr").get<std::string>()});
  }
  return out;
}

std::string substitute_grafana_vars(std::string e, const std::string& job) {
  const std::vector<std::pair<std::string, std::string>> vars = {
      {"$__rate_interval", "1m"}, {"$__range", "1h"}, {"$job", job}};
  for (const auto& [var, value] : vars) {
    for (size_t pos; (pos = e.find(var)) != std::string::npos;) e.replace(pos, var.size(), value);
  }
  return e;
}

}  // namespace cnx::testing
