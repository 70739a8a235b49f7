#include "tests/deploy/deploy_files.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
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

std::string kubectl() {
  const char* k = std::getenv("CNX_KUBECTL");
  return k != nullptr && *k != '\0' ? k : "kubectl";
}

std::vector<std::string> k8s_overlays() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(source_dir() + "/deploy/k8s/overlays")) {
    if (e.is_directory()) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<K8sDoc> render_kustomization(const std::string& dir) {
  // kubectl takes seconds on a loaded machine: render each folder once per
  // process, parse afresh for every caller (tests get their own nodes).
  static std::mutex mu;
  static std::map<std::string, std::string> rendered;
  const std::string cmd = "'" + kubectl() + "' kustomize '" + dir + "' 2>&1";
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = rendered.find(dir);
    if (it == rendered.end()) {
      FILE* p = ::popen(cmd.c_str(), "r");
      CNX_CHECK(p != nullptr, "cannot run ", cmd);
      char buf[8192];
      for (size_t n; (n = std::fread(buf, 1, sizeof(buf), p)) > 0;) out.append(buf, n);
      const int status = ::pclose(p);
      CNX_CHECK(status == 0, cmd, " failed (", status, "); kubectl comes from scripts/setup.sh:\n", out);
      it = rendered.emplace(dir, out).first;
    }
    out = it->second;
  }
  std::vector<K8sDoc> docs;
  try {
    for (auto& n : YAML::LoadAll(out)) {
      if (!n.IsNull()) docs.push_back({dir, n});
    }
  } catch (const YAML::Exception& e) {
    CNX_CHECK(false, cmd, ": invalid YAML: ", e.what());
  }
  return docs;
}

std::vector<K8sDoc> load_k8s_docs(const std::string& overlay) {
  return render_kustomization(source_dir() + "/deploy/k8s/overlays/" + overlay);
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
  std::string row;
  for (const auto& p : d.at("panels")) {
    if (p.at("type") == "row") {
      row = p.at("title").get<std::string>();
      continue;
    }
    for (const auto& t : p.at("targets"))
      out.push_back({p.at("title").get<std::string>(), row, t.at("expr").get<std::string>()});
  }
  return out;
}

std::vector<DashboardQuery> dashboard_annotation_queries() {
  const auto d = nlohmann::json::parse(read_text(source_dir() + "/deploy/grafana/cnx-dashboard.json"));
  std::vector<DashboardQuery> out;
  for (const auto& a : d.at("annotations").at("list")) {
    if (a.contains("expr")) out.push_back({"annotation: " + a.at("name").get<std::string>(), "", a.at("expr")});
  }
  return out;
}

std::string substitute_grafana_vars(std::string e, const std::string& job) {
  const std::vector<std::pair<std::string, std::string>> vars = {
      {"$__rate_interval", "1m"}, {"$__range", "1h"}, {"$__interval", "15s"},
      {"$cnx_job", job},          {"$host", ".+"},    {"$rank", ".+"},
      {"$straggler_factor", "1"}};
  for (const auto& [var, value] : vars) {
    for (size_t pos; (pos = e.find(var)) != std::string::npos;) e.replace(pos, var.size(), value);
  }
  return e;
}

}  // namespace cnx::testing
