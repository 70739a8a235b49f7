#pragma once
// Helpers of the coordinator's loopback tests: a job folder with a shard
// index, token and config; client options; raw gRPC calls; the
// cnx-coordinator binary as a child process.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/generic/generic_stub.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>

#include "common/config.h"
#include "coordinator/client.h"
#include "coordinator/service.h"

namespace cnx::coordinator::test {

namespace fs = std::filesystem;

inline const char* kToken = "integration-token-0123456789";

inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// One raw unary call of `method` (e.g. "Heartbeat") with `body` as the
// request bytes, waited for; returns its status. An empty token sends no
// authorization.
inline grpc::Status raw_call(const std::string& target, const std::string& method, const std::string& body,
                             const std::string& token) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  grpc::GenericStub stub(grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::Slice slice(body);
  grpc::ByteBuffer in(&slice, 1), out;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status st;
  stub.UnaryCall(&ctx, "/cnx.v1.Coordinator/" + method, grpc::StubOptions(), &in, &out, [&](grpc::Status s) {
    std::lock_guard<std::mutex> l(mu);
    st = s;
    done = true;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> l(mu);
  cv.wait(l, [&] { return done; });
  return st;
}

inline void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
}

// A temp folder with a shard index (`shards` shards of 10 + i samples), a
// token and a config; `extra` is appended inside the coordinator section.
struct JobDir {
  fs::path dir;
  int port;
  explicit JobDir(const std::string& name, int shards = 8, const std::string& extra = "") {
    dir = fs::temp_directory_path() / ("cnx_coord_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    port = free_port();
    std::string list;
    int64_t total = 0;
    for (int i = 0; i < shards; ++i) {
      list += std::string(i ? "," : "") + R"({"name":"train-)" + std::to_string(i) + R"(.tar","samples":)" +
              std::to_string(10 + i % 8) + R"(,"bytes":1,"sha256":")" + std::string(64, 'a') + R"("})";
      total += 10 + i % 8;
    }
    write_file(dir / "index.json", R"({"version":1,"dataset":"t","total_samples":)" + std::to_string(total) +
                                       R"(,"classes":[],"shards":[)" + list + "]}");
    write_file(dir / "token", std::string(kToken) + "\n");
    write_file(dir / "job.yaml",
               "job: {id: itest, seed: 5}\n"
               "data: {index: " +
                   (dir / "index.json").string() +
                   "}\n"
                   "checkpoint: {root: " +
                   (dir / "ckpt").string() +
                   ", keep: 2}\n"
                   "coordinator: {listen: \"127.0.0.1:" +
                   std::to_string(port) + "\", token_file: " + (dir / "token").string() + ", state_db: " +
                   (dir / "state.sqlite").string() + ", heartbeat_timeout_s: 60, lease_s: 600" + extra + "}\n" +
                   // No fixed metrics port: tests run beside other coordinators.
                   "metrics: {enabled: false}\n");
  }
  ~JobDir() { fs::remove_all(dir); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port); }
  ServerOptions options() const { return server_options_from_config(load_config((dir / "job.yaml").string())); }
};

inline ClientOptions client_options(const std::string& target, const std::string& token = kToken) {
  ClientOptions o;
  o.target = target;
  o.token = token;
  o.deadline_s = 5;
  o.retry_budget_s = 30;
  return o;
}

// The cnx-coordinator binary as a child process (log appended to
// <job>/coordinator.log).
class Process {
 public:
  explicit Process(const JobDir& job) : job_(job) {}
  ~Process() { kill9(); }
  void start() {
    const char* build = std::getenv("CNX_BINARY_DIR");
    ASSERT_NE(build, nullptr) << "run through ctest (CNX_BINARY_DIR names the build folder)";
    const std::string bin = std::string(build) + "/coordinator/cnx-coordinator";
    const std::string config = (job_.dir / "job.yaml").string();
    const std::string log = (job_.dir / "coordinator.log").string();
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen(log.c_str(), "a", stdout);
      (void)f;
      dup2(fileno(stdout), 2);
      execl(bin.c_str(), bin.c_str(), "--config", config.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    ASSERT_GT(pid_, 0);
  }
  void kill9() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  pid_t pid() const { return pid_; }

 private:
  const JobDir& job_;
  pid_t pid_ = -1;
};

}  // namespace cnx::coordinator::test
