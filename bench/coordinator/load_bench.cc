// Load test of a real cnx-coordinator process on loopback: W simulated
// workers (default 1000), each heartbeating at 1 Hz over its own connection
// (one step per heartbeat), plus shard-lease traffic (AcquireShard +
// ReportShardDone every CNX_LOAD_LEASE_EVERY seconds per worker) and
// checkpoints (checkpoint.every_steps = CNX_LOAD_CKPT_STEPS: every worker
// reports its part when its heartbeat says so). Reports client-observed
// latency p50 / p99 / max per RPC kind, RPC/s, errors, and the coordinator
// process's CPU per RPC (utime + stime from /proc over the measured window).
// Target: p99 < 10 ms for every kind. The load generator runs on the same
// machine: `load1` (the 1-minute load average at the start) says how busy
// it was. Results: bench/coordinator/README.md.
//
//   coordinator_load_bench [--benchmark_...] ; env CNX_LOAD_WORKERS,
//   CNX_LOAD_SECONDS, CNX_LOAD_LEASE_EVERY, CNX_LOAD_CKPT_STEPS override the
//   defaults.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <sstream>
#include <thread>

#include "coordinator/client.h"

namespace {

namespace fs = std::filesystem;
namespace pb = cnx::v1;
using Clock = std::chrono::steady_clock;

const char* kToken = "load-bench-token-0123456789";

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : def;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream rest(s.substr(s.rfind(')') + 2));
  std::string f;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {
    rest >> f;
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double load1() {
  std::ifstream in("/proc/loadavg");
  double l = 0;
  in >> l;
  return l;
}

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

void BM_CoordinatorLoad(benchmark::State& state) {
  const int workers = env_int("CNX_LOAD_WORKERS", 1000);
  const int seconds = env_int("CNX_LOAD_SECONDS", 20);
  const int lease_every = env_int("CNX_LOAD_LEASE_EVERY", 5);
  const int ckpt_steps = env_int("CNX_LOAD_CKPT_STEPS", 10);
  const int threads = 32;
  // One connection per worker on each side.
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  nofile.rlim_cur = nofile.rlim_max;
  setrlimit(RLIMIT_NOFILE, &nofile);
  if (static_cast<int>(nofile.rlim_cur) < workers + 200) {
    state.SkipWithError("RLIMIT_NOFILE too low for one connection per worker");
    return;
  }
  const fs::path dir = fs::temp_directory_path() / ("cnx_load_" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    // 20 shards per worker per epoch.
    std::ofstream idx(dir / "index.json");
    idx << R"({"version":1,"dataset":"load","total_samples":)" << int64_t{workers} * 20 * 100 << R"(,"shards":[)";
    for (int i = 0; i < workers * 20; ++i)
      idx << (i ? "," : "") << R"({"name":"s)" << i << R"(.tar","samples":100,"bytes":1,"sha256":")"
          << std::string(64, 'a') << "\"}";
    idx << "]}";
    std::ofstream(dir / "token") << kToken;
  }
  const int port = 20000 + getpid() % 20000;
  const std::string target = "127.0.0.1:" + std::to_string(port);
  std::ofstream(dir / "job.yaml") << "job: {id: load, seed: 1}\n"
                                  << "data: {index: " << (dir / "index.json").string() << "}\n"
                                  << "checkpoint: {root: " << (dir / "ckpt").string() << ", every_steps: " << ckpt_steps
                                  << "}\n"
                                  << "coordinator: {listen: \"" << target
                                  << "\", token_file: " << (dir / "token").string()
                                  << ", state_db: " << (dir / "state.sqlite").string()
                                  << ", heartbeat_timeout_s: 120, stall_s: 600}\n";
  pid_t pid = fork();
  if (pid == 0) {
    FILE* f = std::freopen((dir / "coordinator.log").c_str(), "w", stdout);
    (void)f;
    dup2(fileno(stdout), 2);
    execl(CNX_COORDINATOR_BIN, CNX_COORDINATOR_BIN, "--config", (dir / "job.yaml").c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }

  std::vector<std::unique_ptr<cnx::coordinator::CoordinatorClient>> clients(workers);
  {
    std::vector<std::thread> reg;
    for (int t = 0; t < threads; ++t)
      reg.emplace_back([&, t] {
        for (int w = t; w < workers; w += threads) {
          cnx::coordinator::ClientOptions o;
          o.target = target;
          o.token = kToken;
          o.deadline_s = 10;
          clients[w] = std::make_unique<cnx::coordinator::CoordinatorClient>(o);
          clients[w]->register_worker("load", w, workers, "sim", "launch-1");
        }
      });
    for (auto& th : reg) th.join();
  }

  // Latencies (ms) per kind: heartbeat, acquire, done, checkpoint part.
  enum Kind { kHeartbeat, kAcquire, kDone, kPart, kKinds };
  const char* kind_names[kKinds] = {"hb", "acquire", "done", "part"};
  std::mutex mu;
  std::vector<double> ms[kKinds];
  std::atomic<int64_t> errors{0};
  const double load_at_start = load1();
  for (auto _ : state) {
    const auto t0 = Clock::now() + std::chrono::seconds(1);  // everyone starts together
    const auto measure_from = t0 + std::chrono::seconds(2);  // warm-up excluded
    const auto t_end = measure_from + std::chrono::seconds(seconds);
    double cpu0 = 0;
    std::thread cpu_probe([&] {
      std::this_thread::sleep_until(measure_from);
      cpu0 = cpu_seconds(pid);
    });
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        // Events: (time, worker, 0 = heartbeat, 1 = lease round).
        using Ev = std::tuple<Clock::time_point, int, int>;
        std::priority_queue<Ev, std::vector<Ev>, std::greater<Ev>> q;
        std::vector<int64_t> step(workers, 0), pos(workers, 0), epoch(workers, 0), reported(workers, 0);
        for (int w = t; w < workers; w += threads) {
          auto phase = std::chrono::microseconds(static_cast<int64_t>(1e6 * w / workers));
          q.push({t0 + phase, w, 0});
          q.push({t0 + phase + std::chrono::milliseconds(500) + std::chrono::seconds(w % lease_every), w, 1});
        }
        std::vector<double> mine[kKinds];
        auto timed = [&](Kind k, auto&& fn) {
          const auto s0 = Clock::now();
          try {
            fn();
          } catch (const std::exception& e) {
            if (errors++ == 0) std::fprintf(stderr, "load bench: %s\n", e.what());
          }
          if (s0 >= measure_from)
            mine[k].push_back(std::chrono::duration<double, std::milli>(Clock::now() - s0).count());
        };
        while (!q.empty()) {
          auto [when, w, kind] = q.top();
          q.pop();
          if (when >= t_end) continue;
          std::this_thread::sleep_until(when);
          if (kind == 0) {
            pb::HeartbeatReply rep;
            timed(kHeartbeat, [&] {
              pb::HeartbeatRequest req;
              req.set_step(++step[w]);
              req.set_epoch(epoch[w]);
              rep = clients[w]->heartbeat(req);
            });
            if (rep.action() == pb::ACTION_CHECKPOINT && rep.checkpoint().id() != reported[w]) {
              reported[w] = rep.checkpoint().id();
              timed(kPart, [&] {
                pb::CheckpointPartRequest part;
                part.set_plan_id(rep.checkpoint().id());
                part.set_step(rep.checkpoint().step());
                auto* f = part.add_files();
                f->set_path("rank.bin");
                f->set_sha256(std::string(64, 'c'));
                f->set_bytes(1);
                part.mutable_progress()->set_epoch(epoch[w]);
                part.mutable_progress()->set_next_position(pos[w]);
                part.set_data_cursor(std::string(64, 'x'));
                clients[w]->report_checkpoint_part(part);
              });
            }
          } else {
            pb::AcquireShardReply a;
            timed(kAcquire, [&] { a = clients[w]->acquire_shard(epoch[w], pos[w]); });
            if (a.end_of_epoch()) {
              ++epoch[w];
              pos[w] = 0;
            } else if (a.has_lease()) {
              ++pos[w];
              timed(kDone,
                    [&] { clients[w]->report_shard_done(epoch[w], pos[w] - 1, a.lease().end() - a.lease().start()); });
            }
          }
          q.push({when + std::chrono::seconds(kind == 0 ? 1 : lease_every), w, kind});
        }
        std::lock_guard<std::mutex> lock(mu);
        for (int k = 0; k < kKinds; ++k) ms[k].insert(ms[k].end(), mine[k].begin(), mine[k].end());
      });
    for (auto& th : pool) th.join();
    cpu_probe.join();
    const double cpu = cpu_seconds(pid) - cpu0;
    // The real window: when the generator falls behind its schedule, the
    // last events run after t_end.
    const double window_s = std::chrono::duration<double>(Clock::now() - measure_from).count();
    std::vector<double> all;
    for (auto& v : ms) all.insert(all.end(), v.begin(), v.end());
    state.counters["workers"] = workers;
    state.counters["load1"] = load_at_start;
    state.counters["rpc_per_s"] = static_cast<double>(all.size()) / window_s;
    state.counters["window_s"] = window_s;
    for (int k = 0; k < kKinds; ++k) {
      const std::string n = kind_names[k];
      state.counters[n + "_n"] = static_cast<double>(ms[k].size());
      state.counters[n + "_p50_ms"] = percentile(ms[k], 0.50);
      state.counters[n + "_p99_ms"] = percentile(ms[k], 0.99);
      state.counters[n + "_max_ms"] = ms[k].empty() ? 0 : *std::max_element(ms[k].begin(), ms[k].end());
    }
    state.counters["all_p99_ms"] = percentile(all, 0.99);
    state.counters["coord_cpu_pct"] = 100.0 * cpu / window_s;
    state.counters["cpu_us_per_rpc"] = all.empty() ? 0 : 1e6 * cpu / static_cast<double>(all.size());
    state.counters["errors"] = static_cast<double>(errors.load());
  }
  clients.clear();
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  fs::remove_all(dir);
}

BENCHMARK(BM_CoordinatorLoad)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
