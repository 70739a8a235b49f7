// The worker's exit codes (worker/cli.h) against the tables in
// docs/operations.md and deploy/README.md, Kubeflow's ExitCode convention
// (128-255 retryable, 1-127 permanent) and the MPIJob's restart policy; the
// tests that run real workers into those outcomes assert the same numbers.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "tests/deploy/deploy_files.h"
#include "worker/cli.h"

namespace cnx::testing {
namespace {

using namespace cnx::worker;

struct Row {
  std::string meaning, policy;
};

// The rows "| code | meaning | policy | ... |" of the table under `heading`.
std::map<int, Row> exit_code_table(const std::string& file, const std::string& heading) {
  const std::string text = read_text(source_dir() + "/" + file);
  const size_t at = text.find(heading);
  EXPECT_NE(at, std::string::npos) << file << " has no section '" << heading << "'";
  std::map<int, Row> rows;
  if (at == std::string::npos) return rows;
  std::istringstream in(text.substr(at));
  const std::regex row(R"(^\|\s*(\d+)\s*\|([^|]*)\|\s*([^|]*?)\s*\|)");
  bool in_table = false;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      in_table = true;
      EXPECT_TRUE(rows.emplace(std::stoi(m[1]), Row{m[2], m[3]}).second) << file << ": code " << m[1] << " twice";
    } else if (in_table && line.rfind("|", 0) != 0) {
      break;
    }
  }
  return rows;
}

const std::map<int, std::string>& worker_codes() {
  static const std::map<int, std::string> codes = {{kExitOk, "finished"},
                                                   {kExitError, "error"},
                                                   {kExitConfig, "configuration"},
                                                   {kExitNonFinite, "non-finite"},
                                                   {kExitPreempted, "preempted"},
                                                   {kExitAborted, "aborted by the coordinator"},
                                                   {kExitPeerLost, "peer rank was lost"}};
  return codes;
}

bool retryable(int code) {
  return code >= 128 && code <= 255;
}

TEST(ExitCodes, RetryableOutcomesAreInKubeflowsRetryableRangeAndReadAsNoSignal) {
  EXPECT_EQ(worker_codes().size(), 7u) << "a code is defined twice";
  for (int code : {kExitPreempted, kExitAborted, kExitPeerLost}) {
    EXPECT_TRUE(retryable(code)) << code;
    // 128 + N is how a death by signal N reads (N <= 64 on Linux).
    EXPECT_GT(code, 128 + 64) << code;
    EXPECT_LT(code, 255) << code << ": ssh's own failure code";
  }
  for (int code : {kExitError, kExitConfig, kExitNonFinite}) {
    EXPECT_GE(code, 1);
    EXPECT_LE(code, 127) << code << " must be permanent under ExitCode";
  }
  EXPECT_EQ(kExitConfig, 2) << "usage and config errors exit 2 in every program";
}

TEST(ExitCodes, DocumentedTablesMatchTheWorker) {
  for (const auto& [file, heading] : std::vector<std::pair<std::string, std::string>>{
           {"docs/operations.md", "## Exit codes (cnx-worker)"}, {"deploy/README.md", "### Exit codes"}}) {
    const auto rows = exit_code_table(file, heading);
    std::set<int> documented, defined;
    for (const auto& [code, row] : rows) documented.insert(code);
    for (const auto& [code, what] : worker_codes()) {
      defined.insert(code);
      auto it = rows.find(code);
      if (it == rows.end()) continue;
      EXPECT_NE(it->second.meaning.find(what), std::string::npos)
          << file << ": code " << code << " should be '" << what << "', says '" << it->second.meaning << "'";
      const std::string want = code == 0 ? "—" : retryable(code) ? "retryable" : "permanent";
      EXPECT_EQ(it->second.policy, want) << file << ": code " << code;
    }
    EXPECT_EQ(documented, defined) << file;
  }
}

TEST(ExitCodes, TheMpiJobLauncherRestartsByExitCode) {
  for (const auto& overlay : k8s_overlays()) {
    const auto mpijob = find_doc(load_k8s_docs(overlay), "MPIJob", "cnx-fcmae-atto");
    EXPECT_EQ(mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["restartPolicy"].as<std::string>(), "ExitCode") << overlay;
  }
}

// The tests that drive real workers into these outcomes expect these numbers.
TEST(ExitCodes, RealRunTestsExpectTheseCodes) {
  const std::map<std::string, std::vector<int>> expectations = {
      {"tests/worker/worker_cli_test.sh", {kExitPreempted}},
      {"tests/worker/worker_coordinator_test.sh", {kExitPreempted}},
      {"tests/e2e/fault_resume_test.sh", {kExitPreempted}},
      {"tests/cluster/cluster_test.sh", {kExitAborted}},
  };
  for (const auto& [file, codes] : expectations) {
    const std::string text = read_text(source_dir() + "/" + file);
    for (int code : codes) {
      EXPECT_NE(text.find("[ \"$RC\" = " + std::to_string(code) + " ]"), std::string::npos)
          << file << " does not check for exit " << code;
    }
  }
  EXPECT_NE(
      read_text(source_dir() + "/tests/cluster/cluster_test.sh").find("(exit " + std::to_string(kExitPeerLost) + ")"),
      std::string::npos);
}

}  // namespace
}  // namespace cnx::testing
