// Deployment defaults of the control plane: token strength (placeholders and
// predictable tokens refused), plaintext only on loopback unless opted out,
// and the operator token that keeps rank tokens from ending a job.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "common/config.h"
#include "coordinator/auth.h"
#include "coordinator/client.h"
#include "coordinator/service.h"
#include "tests/coordinator/loopback_util.h"

namespace cnx::coordinator {
namespace {

namespace fs = std::filesystem;

const char* kJobToken = "security-test-job-token-0123456789";
const char* kOperatorToken = "security-test-operator-token-9876543210";

fs::path source_dir() {
  const char* s = std::getenv("CNX_SOURCE_DIR");
  return s ? fs::path(s) : fs::path(CNX_TEST_SOURCE_DIR);
}

std::string strength_error(const std::string& token) {
  try {
    check_token_strength(token, "test");
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(TokenStrength, ShippedPlaceholderIsRefused) {
  // The value deploy/k8s/base/secret.yaml ships with.
  std::ifstream in(source_dir() / "deploy" / "k8s" / "base" / "secret.yaml");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const auto at = text.find("token: ");
  ASSERT_NE(at, std::string::npos);
  const std::string shipped = text.substr(at + 7, text.find_first_of("\n ", at + 7) - at - 7);
  ASSERT_GE(shipped.size(), 16u) << shipped;
  EXPECT_NE(strength_error(shipped).find("placeholder"), std::string::npos) << shipped;
  // Loading it as the job token fails the same way.
  const fs::path f = fs::temp_directory_path() / ("cnx_placeholder_" + std::to_string(getpid()));
  std::ofstream(f) << shipped << "\n";
  EXPECT_THROW(load_token(f.string(), ""), UsageError);
  fs::remove(f);
}

TEST(TokenStrength, PredictableTokensAreRefusedRandomOnesAccepted) {
  EXPECT_NE(strength_error(std::string(40, 'a')).find("predictable"), std::string::npos);
  EXPECT_NE(strength_error("abababababababababababab").find("predictable"), std::string::npos);
  EXPECT_NE(strength_error("short").find("at least 16"), std::string::npos);
  EXPECT_NE(strength_error("changeme-changeme-1234").find("placeholder"), std::string::npos);
  EXPECT_EQ(strength_error("3f9a1c0be47d2a5590c6e8b1d7f2a4c3e5b6d8f0a1c2e3b4d5f6a7b8c9d0e1f2"), "");
  EXPECT_EQ(strength_error(kJobToken), "");
  EXPECT_EQ(strength_error(kOperatorToken), "");
}

TEST(Plaintext, OnlyOnLoopbackUnlessAllowed) {
  for (const char* a : {"127.0.0.1:1", "127.3.2.1:50051", "localhost:9", "[::1]:50051", "unix:/tmp/s"})
    EXPECT_TRUE(is_loopback_address(a)) << a;
  for (const char* a : {"0.0.0.0:50051", "10.0.0.1:1", "cnx-coordinator:50051", "127.0.0.1.evil.com:1", "[::]:1"})
    EXPECT_FALSE(is_loopback_address(a)) << a;
  EXPECT_NO_THROW(check_plaintext_allowed("127.0.0.1:5", false, false, "x"));
  EXPECT_NO_THROW(check_plaintext_allowed("0.0.0.0:5", true, false, "x"));
  EXPECT_NO_THROW(check_plaintext_allowed("0.0.0.0:5", false, true, "x"));
  try {
    check_plaintext_allowed("0.0.0.0:5", false, false, "coordinator.listen");
    FAIL() << "plaintext on 0.0.0.0 accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("coordinator.allow_plaintext"), std::string::npos) << e.what();
  }
}

TEST(OperatorToken, RolesAreTold) {
  const std::string job = std::string("Bearer ") + kJobToken, op = std::string("Bearer ") + kOperatorToken;
  EXPECT_EQ(bearer_role(job, kJobToken, kOperatorToken), TokenRole::kJob);
  EXPECT_EQ(bearer_role(op, kJobToken, kOperatorToken), TokenRole::kOperator);
  EXPECT_EQ(bearer_role("Bearer nope", kJobToken, kOperatorToken), TokenRole::kNone);
  EXPECT_EQ(bearer_role("Bearer ", kJobToken, ""), TokenRole::kNone);
}

using test::free_port;

// A coordinator with a job token and (when `with_operator`) an operator token.
struct Job {
  fs::path dir;
  int port = free_port();
  std::unique_ptr<CoordinatorServer> server;
  explicit Job(bool with_operator) {
    dir = fs::temp_directory_path() / ("cnx_security_" + std::to_string(getpid()) + (with_operator ? "_op" : ""));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ofstream(dir / "index.json") << R"({"version":1,"dataset":"t","total_samples":4,"classes":[],"shards":[)"
                                      << R"({"name":"a.tar","samples":4,"bytes":1,"sha256":")" << std::string(64, 'a')
                                      << R"("}]})";
    std::ofstream(dir / "token") << kJobToken << "\n";
    std::ofstream(dir / "op") << kOperatorToken << "\n";
    std::string yaml = "job: {id: sec}\ndata: {index: " + (dir / "index.json").string() +
                       "}\ncheckpoint: {root: " + (dir / "ckpt").string() +
                       "}\ncoordinator: {listen: \"127.0.0.1:" + std::to_string(port) +
                       "\", token_file: " + (dir / "token").string() + ", state_db: " + (dir / "state.sqlite").string();
    if (with_operator) yaml += ", operator_token_file: " + (dir / "op").string();
    yaml += "}\n";
    ServerOptions o = server_options_from_config(load_config_text(yaml, "sec.yaml"));
    server = std::make_unique<CoordinatorServer>(o);
  }
  ~Job() {
    server.reset();
    fs::remove_all(dir);
  }
  CoordinatorClient client(const std::string& token) const {
    ClientOptions o;
    o.target = "127.0.0.1:" + std::to_string(port);
    o.token = token;
    o.deadline_s = 5;
    o.retry_budget_s = 10;
    return CoordinatorClient(o);
  }
};

grpc::StatusCode code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const RpcError& e) {
    return e.code();
  }
  return grpc::StatusCode::OK;
}

TEST(OperatorToken, RankTokenCannotEndTheJobWhenAnOperatorTokenIsSet) {
  Job job(true);
  CoordinatorClient rank = job.client(kJobToken), op = job.client(kOperatorToken);
  EXPECT_EQ(code_of([&] { rank.drain("sec", false); }), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(code_of([&] { rank.request_checkpoint("sec"); }), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(code_of([&] { rank.status("sec"); }), grpc::StatusCode::OK) << "reading stays open to ranks";
  EXPECT_EQ(code_of([&] { op.register_worker("sec", 0, 1, "h", "L"); }), grpc::StatusCode::PERMISSION_DENIED)
      << "the operator token is not a rank token";
  EXPECT_EQ(code_of([&] { op.status("sec"); }), grpc::StatusCode::OK);
  EXPECT_EQ(code_of([&] { op.drain("sec", false); }), grpc::StatusCode::OK);
  EXPECT_EQ(op.status("sec").state(), cnx::v1::JOB_STOPPED);
}

TEST(OperatorToken, WithoutOneTheJobTokenStillDrains) {
  Job job(false);
  CoordinatorClient rank = job.client(kJobToken);
  EXPECT_EQ(code_of([&] { rank.drain("sec", false); }), grpc::StatusCode::OK);
}

}  // namespace
}  // namespace cnx::coordinator
