// Rendezvous stores and the store bootstrap (label unit; loopback only).
// Multi-process cases start comm_store_rank (store_rank_main.cc) once per
// rank with the rendezvous environment variables set.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/rendezvous.h"
#include "comm/store.h"
#include "tests/comm/test_util.h"

extern char** environ;

namespace cnx::comm {
namespace {

namespace fs = std::filesystem;

// A port nobody listens on right now (bound to 127.0.0.1:0, then released).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

using testing::error_of;

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("cnx_store_test_" + std::to_string(::getpid()) + "_" + std::to_string(n()++));
    fs::remove_all(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  static int& n() {
    static int c = 0;
    return c;
  }
};

TcpStoreOptions tcp(int port, bool serve, double timeout_s = 10.0) {
  TcpStoreOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.serve = serve;
  o.bind_host = "127.0.0.1";
  o.timeout_s = timeout_s;
  return o;
}

// ---------------------------------------------------------------------------
// read_rendezvous_env
// ---------------------------------------------------------------------------
RendezvousEnv env_of(std::map<std::string, std::string> vars) {
  return read_rendezvous_env([vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(RendezvousEnv, NothingSetIsAWorldOfOne) {
  const RendezvousEnv e = env_of({});
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.local_size, 1);
  EXPECT_TRUE(e.master_addr.empty());
  EXPECT_FALSE(e.under_mpirun);
  EXPECT_EQ(e.source, "default");
}

TEST(RendezvousEnv, CnxVariables) {
  const RendezvousEnv e = env_of({{"CNX_RANK", "3"},
                                  {"CNX_WORLD_SIZE", "8"},
                                  {"CNX_LOCAL_RANK", "1"},
                                  {"CNX_LOCAL_WORLD_SIZE", "2"},
                                  {"CNX_MASTER_ADDR", "node0"},
                                  {"CNX_MASTER_PORT", "29500"},
                                  {"CNX_RENDEZVOUS_TIMEOUT_S", "42"}});
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.world_size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_DOUBLE_EQ(e.timeout_s, 42.0);
  EXPECT_EQ(e.source, "CNX_RANK/CNX_WORLD_SIZE");
}

TEST(RendezvousEnv, OpenMpiVariablesUnderMpirun) {
  const RendezvousEnv e = env_of({{"OMPI_COMM_WORLD_RANK", "1"},
                                  {"OMPI_COMM_WORLD_SIZE", "4"},
                                  {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                  {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_TRUE(e.under_mpirun);
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_size, 2);
  EXPECT_EQ(e.source, "OMPI_COMM_WORLD_RANK/SIZE");
}

TEST(RendezvousEnv, CnxWinsOverOpenMpi) {
  const RendezvousEnv e = env_of({{"OMPI_COMM_WORLD_RANK", "1"},
                                  {"OMPI_COMM_WORLD_SIZE", "4"},
                                  {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                  {"CNX_RANK", "0"},
                                  {"CNX_WORLD_SIZE", "2"}});
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.local_rank, -1) << "mpirun's local rank must not mix with CNX_RANK's world";
}

TEST(RendezvousEnv, BadValuesNameTheVariable) {
  EXPECT_HAS(error_of([] { env_of({{"CNX_RANK", "4"}, {"CNX_WORLD_SIZE", "4"}}); }), "CNX_RANK='4'");
  EXPECT_HAS(error_of([] { env_of({{"CNX_RANK", "x"}, {"CNX_WORLD_SIZE", "4"}}); }), "expected an integer");
  EXPECT_HAS(error_of([] { env_of({{"CNX_WORLD_SIZE", "0"}, {"CNX_RANK", "0"}}); }), "CNX_WORLD_SIZE='0'");
  EXPECT_HAS(error_of([] { env_of({{"CNX_RANK", "1"}}); }), "both CNX_RANK and CNX_WORLD_SIZE");
  EXPECT_HAS(error_of([] { env_of({{"CNX_MASTER_ADDR", "h"}}); }), "CNX_MASTER_PORT is not");
  EXPECT_HAS(error_of([] {
               env_of({{"CNX_MASTER_ADDR", "h"}, {"CNX_MASTER_PORT", "70000"}});
             }),
             "CNX_MASTER_PORT='70000'");
  EXPECT_HAS(
      error_of([] {
        env_of({{"CNX_RANK", "1"}, {"CNX_WORLD_SIZE", "4"}, {"CNX_LOCAL_RANK", "2"}, {"CNX_LOCAL_WORLD_SIZE", "2"}});
      }),
      "CNX_LOCAL_RANK=2 is not below");
  EXPECT_HAS(error_of([] { env_of({{"OMPI_COMM_WORLD_SIZE", "2"}}); }), "OMPI_COMM_WORLD_RANK is not");
}

// ---------------------------------------------------------------------------
// Stores in one process
// ---------------------------------------------------------------------------
void check_basic(Store& s) {
  s.set("a", std::string("x\0y", 3));
  EXPECT_EQ(s.get("a"), std::string("x\0y", 3));
  s.set("a", "");
  EXPECT_EQ(s.get("a"), "");
  EXPECT_EQ(s.add("n", 2), 2);
  EXPECT_EQ(s.add("n", -5), -3);
  EXPECT_EQ(s.add("n", 0), -3);
  s.set("with/slash and space", "v");
  EXPECT_EQ(s.get("with/slash and space"), "v");
}

TEST(Store, MemoryStoreBasics) {
  auto s = make_memory_store();
  check_basic(*s);
  s->set_timeout(std::chrono::milliseconds(50));
  EXPECT_HAS(error_of([&] { s->get("missing"); }), "'missing' timed out");
}

TEST(Store, TcpStoreBasicsAndLargeValue) {
  const int port = free_port();
  auto server = make_tcp_store(tcp(port, true));
  auto client = make_tcp_store(tcp(port, false));
  check_basic(*client);
  EXPECT_EQ(server->get("a"), "");
  const std::string big(3 << 20, 'q');
  server->set("big", big);
  EXPECT_EQ(client->get("big"), big);
}

TEST(Store, TcpGetWaitsForALaterSet) {
  const int port = free_port();
  auto server = make_tcp_store(tcp(port, true));
  std::thread setter([port] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    make_tcp_store(tcp(port, false))->set("late", "here");
  });
  EXPECT_EQ(server->get("late"), "here");
  setter.join();
}

TEST(Store, TcpGetTimesOutNamingTheKey) {
  const int port = free_port();
  auto server = make_tcp_store(tcp(port, true, 0.3));
  const auto start = std::chrono::steady_clock::now();
  const std::string e = error_of([&] { server->get("never"); });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_HAS(e, "get 'never' timed out after 0.3 s");
  EXPECT_HAS(e, "CNX_RENDEZVOUS_TIMEOUT_S");
  EXPECT_GE(took, 0.25);
  // The connection recovers for the next request.
  server->set("k", "v");
  EXPECT_EQ(server->get("k"), "v");
}

TEST(Store, UnreachableMasterIsAClearError) {
  const int port = free_port();  // nobody serves it
  const auto start = std::chrono::steady_clock::now();
  auto client = make_tcp_store(tcp(port, false, 0.5));
  const std::string e = error_of([&] { client->get("id"); });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_HAS(e, "cannot reach rank 0's store at tcp://127.0.0.1:" + std::to_string(port));
  EXPECT_HAS(e, "Connection refused");
  EXPECT_HAS(e, "CNX_MASTER_ADDR / CNX_MASTER_PORT");
  EXPECT_LT(took, 5.0);
}

TEST(Store, UnresolvableMasterIsAClearError) {
  TcpStoreOptions o = tcp(1234, false, 0.2);
  o.host = "no-such-host.invalid";
  auto client = make_tcp_store(o);
  EXPECT_HAS(error_of([&] { client->set("k", "v"); }), "cannot resolve 'no-such-host.invalid'");
}

TEST(Store, PortInUseIsAClearError) {
  const int port = free_port();
  auto first = make_tcp_store(tcp(port, true));
  const std::string e = error_of([&] { make_tcp_store(tcp(port, true)); });
  EXPECT_HAS(e, "cannot listen on 127.0.0.1:" + std::to_string(port));
  EXPECT_HAS(e, "CNX_MASTER_PORT");
  EXPECT_HAS(error_of([] { make_tcp_store(tcp(0, false)); }), "port 0 is not in 1..65535");
}

TEST(Store, TcpServerIgnoresGarbageConnections) {
  const int port = free_port();
  auto server = make_tcp_store(tcp(port, true));
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    const char junk[] = "GET / HTTP/1.1\r\n\r\n";
    EXPECT_GT(::send(fd, junk, sizeof(junk), MSG_NOSIGNAL), 0);
    ::close(fd);
  }
  server->set("still", "fine");
  EXPECT_EQ(make_tcp_store(tcp(port, false))->get("still"), "fine");
}

TEST(Store, FileStoreBasicsAcrossInstances) {
  TempDir dir;
  auto a = make_file_store(dir.path.string(), 5.0);
  auto b = make_file_store(dir.path.string(), 5.0);
  check_basic(*a);
  EXPECT_EQ(b->get("with/slash and space"), "v");
  EXPECT_EQ(b->add("n", 3), 0);
  a->set_timeout(std::chrono::milliseconds(100));
  EXPECT_HAS(error_of([&] { a->get("missing"); }), "get 'missing' timed out");
  a->remove_all();
  EXPECT_TRUE(fs::is_empty(dir.path));
}

TEST(Store, FileStoreCountersAreAtomic) {
  TempDir dir;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&dir] {
      auto s = make_file_store(dir.path.string(), 5.0);
      for (int i = 0; i < 25; ++i) s->add("count", 1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(make_file_store(dir.path.string())->add("count", 0), 100);
}

TEST(Store, FileStoreRejectsStaleFiles) {
  TempDir dir;
  make_file_store(dir.path.string())->set("cnx/0/b", "old id");
  // Make the key file an hour old: left over by an earlier launch.
  const fs::path file = dir.path / "k.cnx%2F0%2Fb";
  ASSERT_TRUE(fs::exists(file));
  fs::last_write_time(file, fs::last_write_time(file) - std::chrono::hours(1));
  auto s = make_file_store(dir.path.string(), 60.0);
  const std::string e = error_of([&] { s->get("cnx/0/b"); });
  EXPECT_HAS(e, "stale files of an earlier run");
  EXPECT_HAS(e, "CNX_STORE_DIR");
}

TEST(Store, FileStoreUnusableFolder) {
  TempDir dir;
  fs::create_directories(dir.path);
  std::ofstream(dir.path / "file") << "x";
  EXPECT_HAS(error_of([&] { make_file_store((dir.path / "file" / "sub").string()); }), "cannot create the folder");
}

// ---------------------------------------------------------------------------
// Store bootstrap, ranks as threads
// ---------------------------------------------------------------------------
TEST(StoreBootstrap, ThreadsExchangeOverTcp) {
  const int port = free_port();
  const int world = 4;
  std::vector<std::string> results(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      RendezvousEnv env;
      env.rank = r;
      env.world_size = world;
      env.local_rank = r % 2;
      env.local_size = 2;
      auto boot = make_store_bootstrap(make_tcp_store(tcp(port, r == 0)), env);
      const std::string b = boot->broadcast(r == 2 ? "from two" : "", 2);
      const auto all = boot->allgather(std::to_string(r * r));
      boot->barrier();
      results[r] = b + "|" + all[0] + "," + all[1] + "," + all[2] + "," + all[3] + "|" +
                   std::to_string(boot->local_rank()) + "/" + std::to_string(boot->local_size());
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(results[r], "from two|0,1,4,9|" + std::to_string(r % 2) + "/2") << "rank " << r;
  }
}

TEST(StoreBootstrap, BadRootIsAnError) {
  RendezvousEnv env;
  auto boot = make_store_bootstrap(make_memory_store(), env);
  EXPECT_HAS(error_of([&] { boot->broadcast("x", 1); }), "root 1 not in [0, 1)");
  EXPECT_EQ(make_single_bootstrap()->allgather("me"), std::vector<std::string>{"me"});
}

// ---------------------------------------------------------------------------
// Ranks as processes
// ---------------------------------------------------------------------------
struct RankRun {
  int exit_code = -1;
  std::string out, err;
};

// Starts one comm_store_rank per entry of `envs` (extra variables on top of
// this process's environment) and waits for all, at most `limit_s`.
std::vector<RankRun> run_ranks(const std::vector<std::map<std::string, std::string>>& envs, double limit_s = 60) {
  TempDir logs;
  fs::create_directories(logs.path);
  std::vector<pid_t> pids;
  for (size_t i = 0; i < envs.size(); ++i) {
    std::vector<std::string> strings;
    for (char** e = environ; *e; ++e) {
      const std::string s = *e;
      if (s.rfind("CNX_RANK=", 0) == 0 || s.rfind("CNX_WORLD_SIZE=", 0) == 0 || s.rfind("CNX_MASTER", 0) == 0 ||
          s.rfind("CNX_STORE_DIR=", 0) == 0 || s.rfind("CNX_LOCAL", 0) == 0 || s.rfind("OMPI_COMM_WORLD", 0) == 0) {
        continue;
      }
      strings.push_back(s);
    }
    for (const auto& [k, v] : envs[i]) strings.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string out = (logs.path / ("out" + std::to_string(i))).string();
    const std::string err = (logs.path / ("err" + std::to_string(i))).string();
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    char* argv[] = {const_cast<char*>(CNX_STORE_RANK_EXE), nullptr};
    pid_t pid = -1;
    EXPECT_EQ(posix_spawn(&pid, CNX_STORE_RANK_EXE, &fa, nullptr, argv, envp.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    pids.push_back(pid);
  }
  std::vector<RankRun> runs(envs.size());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(limit_s);
  for (size_t i = 0; i < pids.size(); ++i) {
    int status = 0;
    for (;;) {
      const pid_t done = ::waitpid(pids[i], &status, WNOHANG);
      if (done == pids[i]) break;
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pids[i], SIGKILL);
        ::waitpid(pids[i], &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    runs[i].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream o(logs.path / ("out" + std::to_string(i))), e(logs.path / ("err" + std::to_string(i)));
    std::stringstream os, es;
    os << o.rdbuf();
    es << e.rdbuf();
    runs[i].out = os.str();
    runs[i].err = es.str();
  }
  return runs;
}

std::vector<std::map<std::string, std::string>> world_env(int world, std::map<std::string, std::string> common) {
  std::vector<std::map<std::string, std::string>> envs;
  for (int r = 0; r < world; ++r) {
    auto e = common;
    e["CNX_RANK"] = std::to_string(r);
    e["CNX_WORLD_SIZE"] = std::to_string(world);
    envs.push_back(e);
  }
  return envs;
}

void expect_consistent(const std::vector<RankRun>& runs, const std::string& via) {
  const int world = static_cast<int>(runs.size());
  std::string gather;
  for (int r = 0; r < world; ++r) gather += (r ? ",r" : "r") + std::to_string(r);
  std::string blob_field;
  for (int r = 0; r < world; ++r) {
    const RankRun& run = runs[r];
    ASSERT_EQ(run.exit_code, 0) << "rank " << r << " stderr: " << run.err;
    // Every rank is on this host: local rank = rank, found from hostnames.
    EXPECT_HAS(run.out, "rank=" + std::to_string(r) + " size=" + std::to_string(world) + " local=" + std::to_string(r) +
                            "/" + std::to_string(world) + " via=" + via);
    EXPECT_HAS(run.out, "gather=" + gather + "\n");
    const std::string blob = run.out.substr(run.out.find("blob="), run.out.find(" gather") - run.out.find("blob="));
    EXPECT_HAS(blob, "blob=128:");
    if (r == 0) blob_field = blob;
    EXPECT_EQ(blob, blob_field) << "rank " << r << " got another blob than rank 0";
  }
}

TEST(StoreProcesses, ThreeRanksOverTcp) {
  const int port = free_port();
  const auto runs = run_ranks(world_env(3, {{"CNX_MASTER_ADDR", "127.0.0.1"},
                                            {"CNX_MASTER_PORT", std::to_string(port)},
                                            {"CNX_RENDEZVOUS_TIMEOUT_S", "30"}}));
  expect_consistent(runs, "tcp://127.0.0.1:" + std::to_string(port));
}

TEST(StoreProcesses, ThreeRanksOverAFolder) {
  TempDir dir;
  const auto runs = run_ranks(world_env(3, {{"CNX_STORE_DIR", dir.path.string()}, {"CNX_RENDEZVOUS_TIMEOUT_S", "30"}}));
  expect_consistent(runs, "file:" + dir.path.string());
  // Rank 0 cleared the folder after every rank checked out.
  EXPECT_TRUE(fs::is_empty(dir.path));
}

TEST(StoreProcesses, RankWithoutItsMasterFailsClearly) {
  const int port = free_port();  // rank 0 never starts
  auto envs = world_env(
      2,
      {{"CNX_MASTER_ADDR", "127.0.0.1"}, {"CNX_MASTER_PORT", std::to_string(port)}, {"CNX_RENDEZVOUS_TIMEOUT_S", "1"}});
  const auto runs = run_ranks({envs[1]});
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].exit_code, 3) << runs[0].out;
  EXPECT_HAS(runs[0].err, "cannot reach rank 0's store at tcp://127.0.0.1:" + std::to_string(port) + " within 1 s");
}

TEST(StoreProcesses, MissingPeerTimesOut) {
  TempDir dir;
  auto envs = world_env(2, {{"CNX_STORE_DIR", dir.path.string()}, {"CNX_RENDEZVOUS_TIMEOUT_S", "1"}});
  const auto runs = run_ranks({envs[0]});  // rank 1 never comes
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].exit_code, 3);
  EXPECT_HAS(runs[0].err, "timed out after 1 s");
}

}  // namespace
}  // namespace cnx::comm
