// End to end: Prometheus scrapes a real training run.
//
// Starts a real cnx-coordinator (loopback, token file, a shard index), a real
// Prometheus (the Debian package) scraping both worker ranks and the
// coordinator, and a 2-rank cnx-worker run under mpirun (synthetic images,
// tiny model) registered with the coordinator. Asserts that each rank's and
// the coordinator's /metrics pass `promtool check metrics`, and that
// Prometheus holds cnx_worker_loss for rank 0 and rank 1 and
// cnx_coordinator_workers_alive == 2.
//
// Binaries come from the environment (set by tests/e2e/CMakeLists.txt):
// CNX_WORKER_BIN, CNX_COORDINATOR_BIN, CNX_MPIEXEC. Every process the test
// starts runs in its own process group and is terminated (then killed) by an
// RAII guard, also when an assertion fails.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/metrics/prom_harness.h"

namespace cnx::e2e {
namespace {

namespace fs = std::filesystem;
using cnx::testing::http_get;
using cnx::testing::PrometheusServer;
using cnx::testing::promtool_check_metrics;

std::string env_or_die(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') throw std::runtime_error(std::string("environment variable ") + name + " is not set");
  return v;
}

std::string read_tail(const fs::path& path, size_t max_bytes = 4000) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return s.size() > max_bytes ? s.substr(s.size() - max_bytes) : s;
}

// A child process in its own process group, stdout+stderr to `log`.
// The destructor sends SIGTERM to the group, waits up to 20 s, then SIGKILLs it.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const fs::path& log) : log_(log) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execvp(args[0], args.data());
      std::fprintf(stderr, "cannot execute %s: %s\n", args[0], std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
  }
  ~Child() { stop(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool running() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
    return !exited_;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (running() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ::kill(-pid_, SIGKILL);  // stragglers in the group (and the leader if still running)
    if (running()) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
      exited_ = true;
    }
    pid_ = -1;
  }
  std::string log_tail() const { return read_tail(log_); }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

// Removes the work dir at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "cnx_metrics_e2e.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool port_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// Two consecutive free ports (worker_port + local rank 0 and 1).
int free_port_pair() {
  for (int i = 0; i < 50; ++i) {
    const int p = cnx::testing::free_tcp_port();
    if (p < 65535 && port_free(p + 1)) return p;
  }
  throw std::runtime_error("no two consecutive free TCP ports");
}

// Polls `ready` every 100 ms for up to timeout_s while every child in `alive` runs.
bool wait_until(const std::function<bool()>& ready, double timeout_s, const std::vector<Child*>& alive) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    for (Child* c : alive)
      if (!c->running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return ready();
}

// True if `body` has a sample line of `metric` whose labels contain `label`.
bool has_sample(const std::string& body, const std::string& metric, const std::string& label) {
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(metric + "{", 0) == 0 && line.find(label) != std::string::npos) return true;
  }
  return false;
}

// /metrics of 127.0.0.1:port once it answers 200 with a body for which
// `ready` holds; "" if that does not happen in time.
std::string scrape_when(int port, const std::function<bool(const std::string&)>& ready, double timeout_s,
                        const std::vector<Child*>& alive) {
  std::string body;
  wait_until(
      [&] {
        try {
          const auto r = http_get("127.0.0.1", port, "/metrics", 2.0);
          if (r.status == 200 && ready(r.body)) {
            body = r.body;
            return true;
          }
        } catch (const std::exception&) {
          // not listening yet
        }
        return false;
      },
      timeout_s, alive);
  return body;
}

TEST(MetricsE2E, PrometheusScrapesWorkersAndCoordinator) {
  const std::string worker_bin = env_or_die("CNX_WORKER_BIN");
  const std::string coordinator_bin = env_or_die("CNX_COORDINATOR_BIN");
  const std::string mpiexec = env_or_die("CNX_MPIEXEC");
  TempDir work;
  const fs::path dir = work.path;

  const int grpc_port = cnx::testing::free_tcp_port();
  const int coord_metrics_port = cnx::testing::free_tcp_port();
  const int worker_port = free_port_pair();
  ASSERT_NE(grpc_port, coord_metrics_port);

  // A shard index for the coordinator's lease table; the ranks train on
  // synthetic images, so the shard files themselves are never opened.
  {
    std::ofstream index(dir / "index.json");
    index << R"({"version":1,"dataset":"e2e","total_samples":64,"classes":[],"shards":[)";
    for (int i = 0; i < 4; ++i) {
      index << (i ? "," : "") << R"({"name":"train-)" << i << R"(.tar","samples":16,"bytes":1,"sha256":")"
            << std::string(64, 'a') << "\"}";
    }
    index << "]}\n";
    std::ofstream(dir / "token") << "metrics-e2e-test-token-0123456789\n";
    std::ofstream yaml(dir / "job.yaml");
    yaml << "job: {id: metrics-e2e, seed: 5}\n"
         << "model: {name: custom, depths: [1, 1, 1, 1], dims: [8, 16, 32, 64], decoder_dim: 32}\n"
         << "mask: {ratio: 0.5}\n"
         << "optimizer: {blr: 1.0e-3}\n"
         << "schedule: {epochs: 1000, warmup_epochs: 0.5, log_every: 20}\n"
         << "data: {index: " << (dir / "index.json").string() << ", input_size: 64, batch_size: 2}\n"
         << "train: {threads: 1}\n"
         << "checkpoint: {root: " << (dir / "ckpt").string() << ", every_steps: 100000, keep: 1}\n"
         << "coordinator: {listen: \"127.0.0.1:" << grpc_port << "\", token_file: " << (dir / "token").string()
         << ", state_db: " << (dir / "state.sqlite").string()
         << ", heartbeat_s: 0.2, heartbeat_timeout_s: 60, stall_s: 120, world_size: 2}\n"
         << "metrics: {enabled: true, listen_host: 127.0.0.1, worker_port: " << worker_port
         << ", coordinator_port: " << coord_metrics_port << "}\n";
  }

  const std::string w0 = "127.0.0.1:" + std::to_string(worker_port);
  const std::string w1 = "127.0.0.1:" + std::to_string(worker_port + 1);
  const std::string co = "127.0.0.1:" + std::to_string(coord_metrics_port);
  // Started before the run: its first scrape comes a few seconds after start.
  PrometheusServer prom({{"cnx-worker", {w0, w1}}, {"cnx-coordinator", {co}}}, 1.0);

  Child coordinator({coordinator_bin, "--config", (dir / "job.yaml").string()}, dir / "coordinator.log");
  const std::string coord_body = scrape_when(
      coord_metrics_port, [](const std::string& b) { return has_sample(b, "cnx_coordinator_workers_alive", ""); }, 30.0,
      {&coordinator});
  ASSERT_FALSE(coord_body.empty()) << "coordinator /metrics never answered:\n" << coordinator.log_tail();

  // Enough steps of a tiny model to outlive the scrapes; stopped by the guard.
  Child workers({mpiexec, "--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", "2", worker_bin,
                 "--config", (dir / "job.yaml").string(), "--coordinator", "127.0.0.1:" + std::to_string(grpc_port),
                 "--synthetic", "--synthetic-samples", "64", "--max-steps", "1000000"},
                dir / "workers.log");

  for (int local_rank = 0; local_rank < 2; ++local_rank) {
    const std::string rank_label = "rank=\"" + std::to_string(local_rank) + "\"";
    const std::string body = scrape_when(
        worker_port + local_rank, [&](const std::string& b) { return has_sample(b, "cnx_worker_loss", rank_label); },
        60.0, {&coordinator, &workers});
    ASSERT_FALSE(body.empty()) << "rank " << local_rank << " /metrics never showed cnx_worker_loss{" << rank_label
                               << "}\nworkers:\n"
                               << workers.log_tail() << "\ncoordinator:\n"
                               << coordinator.log_tail();
    const auto check = promtool_check_metrics(body);
    EXPECT_EQ(check.exit_code, 0) << "promtool on rank " << local_rank << ":\n" << check.output;
    EXPECT_EQ(http_get("127.0.0.1", worker_port + local_rank, "/healthz").status, 200);
    // The GEMM path label is the one rank 0 logs once the threads are set
    // (train.threads 1: onednn where the build has it, else cnx on AVX-512
    // CPUs, else blas).
    const std::string log = read_tail(dir / "workers.log", 1 << 20);
    const size_t at = log.find("GEMM path ", log.find("ranks x"));
    ASSERT_NE(at, std::string::npos) << "workers never logged their GEMM path:\n" << workers.log_tail();
    const std::string path = log.substr(at + 10, log.find(' ', at + 10) - (at + 10));
    EXPECT_TRUE(path == "cnx" || path == "onednn" || path == "blas") << path;
    EXPECT_TRUE(has_sample(body, "cnx_worker_blas_info", "gemm=\"" + path + "\"")) << body;
  }

  // Once both ranks registered, the coordinator reports them alive.
  const std::string coord_alive =
      scrape_when(coord_metrics_port,
                  [](const std::string& b) {
                    return b.find("\ncnx_coordinator_workers_alive{cnx_job=\"metrics-e2e\"} 2\n") != std::string::npos;
                  },
                  30.0, {&coordinator, &workers});
  ASSERT_FALSE(coord_alive.empty()) << "coordinator never reported 2 workers alive:\n"
                                    << coordinator.log_tail() << "\nworkers:\n"
                                    << workers.log_tail();
  const auto coord_check = promtool_check_metrics(coord_alive);
  EXPECT_EQ(coord_check.exit_code, 0) << "promtool on the coordinator:\n" << coord_check.output;

  // Prometheus has scraped all three targets.
  for (const char* rank : {"0", "1"}) {
    const auto loss =
        prom.wait_for(std::string("cnx_worker_loss{cnx_job=\"metrics-e2e\",rank=\"") + rank + "\"} > 0", 1, 30.0);
    ASSERT_EQ(loss.size(), 1u) << "rank " << rank;
    EXPECT_GT(std::stod(loss[0]["value"][1].get<std::string>()), 0.0);
  }
  const auto alive = prom.wait_for("cnx_coordinator_workers_alive{cnx_job=\"metrics-e2e\"} == 2", 1, 30.0);
  EXPECT_EQ(alive.size(), 1u);
  const auto up = prom.wait_for("up == 1", 3, 30.0);
  EXPECT_EQ(up.size(), 3u) << "every scrape target is up";

  EXPECT_TRUE(workers.running()) << "the run ended before the scrapes:\n" << workers.log_tail();
  EXPECT_TRUE(coordinator.running()) << coordinator.log_tail();
}

}  // namespace
}  // namespace cnx::e2e
