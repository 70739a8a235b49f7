// Load test of a real cnx-coordinator process on loopback: H simulated
// hosts of R ranks each (default curve 125 / 375 / 1,250 hosts x 8 ranks =
// 1,000 / 3,000 / 10,000 ranks), driven either by one host speaker per host
// (RegisterHost, HostHeartbeat, AcquireShards, ReportShardsDone,
// ReportCheckpointParts: docs/protocols.md, "Host speaker") or, at the same
// sizes in the same run, by every rank on its own (the per-rank protocol).
//
// Traffic of a job of that size: each voice heartbeats every
// CNX_LOAD_HEARTBEAT_S (default 2 s, coordinator.heartbeat_s's default; the
// coordinator is configured with the same period) and its ranks step once
// per heartbeat; every rank reads one shard item every CNX_LOAD_LEASE_EVERY
// seconds (default 5 s: 1,000-sample shards at 200 samples/s per GPU) --
// an AcquireShard + ReportShardDone pair per rank, or one AcquireShards per
// host that asks for all its ranks and reports the previous round's items
// done; and the job checkpoints every CNX_LOAD_CKPT_STEPS steps (default
// 10: each voice reports its part(s) when its heartbeat says CHECKPOINT).
// Each voice has its own connection. Voices start registering together
// right after the coordinator is launched (the start-up storm): the time
// from launch to the last registration is reported.
//
// Reported per run: p50 / p99 / max client latency per RPC kind, errors
// per kind (a failed RPC is counted, never fatal), RPC/s offered vs the
// schedule's, how late the generator ran its events (p99), the
// coordinator's CPU (utime + stime from /proc) per RPC and per second of job
// time, and the 1-minute load average at the start and the end: the
// generator runs on the same machine as the coordinator.
//
//   coordinator_load_bench [--benchmark_filter=...]; env CNX_LOAD_SECONDS
//   (20), CNX_LOAD_HEARTBEAT_S, CNX_LOAD_LEASE_EVERY, CNX_LOAD_CKPT_STEPS,
//   CNX_LOAD_THREADS (32), CNX_LOAD_SIZES ("125x8,375x8,1250x8").
//   Results: bench/coordinator/README.md.
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
using cnx::coordinator::CoordinatorClient;
using Clock = std::chrono::steady_clock;

const char* kToken = "load-bench-token-0123456789";

double env_num(const char* name, double def) {
  const char* v = std::getenv(name);
  return v ? std::atof(v) : def;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.empty()) return 0;
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

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

enum Kind { kRegister, kHeartbeat, kAcquire, kDone, kPart, kKinds };
const char* kKindNames[kKinds] = {"reg", "hb", "acquire", "done", "part"};

// Latencies (ms) and errors per kind, merged from the generator threads.
struct Stats {
  std::mutex mu;
  std::vector<double> ms[kKinds];
  int64_t errors[kKinds] = {};
  std::string first_error;
  void merge(std::vector<double> (&mine)[kKinds], const int64_t (&err)[kKinds], const std::string& first) {
    std::lock_guard<std::mutex> lock(mu);
    for (int k = 0; k < kKinds; ++k) {
      ms[k].insert(ms[k].end(), mine[k].begin(), mine[k].end());
      errors[k] += err[k];
    }
    if (first_error.empty()) first_error = first;
  }
};

// One simulated voice: a host speaker (ranks = its local ranks) or one rank.
struct Voice {
  std::unique_ptr<CoordinatorClient> client;
  std::vector<int> ranks;
  std::string host;
  bool registered = false;
  int64_t step = 0, reported_plan = 0;
  std::vector<int64_t> epoch, pos;
  google::protobuf::RepeatedPtrField<pb::ShardDone> pending_done;  // host speakers: reported with the next round
};

struct Config {
  int hosts = 0, per_host = 0;
  bool host_protocol = true;
  double seconds = 20, heartbeat_s = 1, lease_every = 5;
  int ckpt_steps = 10, threads = 32;
};

class Run {
 public:
  explicit Run(const Config& c) : c_(c), ranks_(c.hosts * c.per_host) {}

  // Writes the job folder and starts the coordinator; false (with a
  // message) when the machine cannot hold the connections.
  bool start(std::string* why) {
    const int voices = c_.host_protocol ? c_.hosts : ranks_;
    rlimit nofile{};
    getrlimit(RLIMIT_NOFILE, &nofile);
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
    if (static_cast<int64_t>(nofile.rlim_cur) < voices + 200) {
      *why = "RLIMIT_NOFILE " + std::to_string(nofile.rlim_cur) + " too low for " + std::to_string(voices) +
             " connections";
      return false;
    }
    dir_ = fs::temp_directory_path() /
           ("cnx_load_" + std::to_string(getpid()) + "_" + std::to_string(ranks_) + (c_.host_protocol ? "h" : "r"));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    {
      // 20 shards per rank per epoch.
      std::ofstream idx(dir_ / "index.json");
      idx << R"({"version":1,"dataset":"load","total_samples":)" << int64_t{ranks_} * 20 * 100 << R"(,"shards":[)";
      for (int i = 0; i < ranks_ * 20; ++i)
        idx << (i ? "," : "") << R"({"name":"s)" << i << R"(.tar","samples":100,"bytes":1,"sha256":")"
            << std::string(64, 'a') << "\"}";
      idx << "]}";
      std::ofstream(dir_ / "token") << kToken;
    }
    const int port = 20000 + (getpid() * 7 + ranks_ + c_.host_protocol) % 20000;
    target_ = "127.0.0.1:" + std::to_string(port);
    std::ofstream(dir_ / "job.yaml") << "job: {id: load, seed: 1}\n"
                                     << "data: {index: " << (dir_ / "index.json").string() << "}\n"
                                     << "checkpoint: {root: " << (dir_ / "ckpt").string()
                                     << ", every_steps: " << c_.ckpt_steps << "}\n"
                                     << "coordinator: {listen: \"" << target_
                                     << "\", token_file: " << (dir_ / "token").string()
                                     << ", state_db: " << (dir_ / "state.sqlite").string()
                                     << ", heartbeat_s: " << c_.heartbeat_s
                                     << ", heartbeat_timeout_s: 300, stall_s: 600, max_world_size: 65536}\n"
                                     << "metrics: {enabled: false}\n";
    launched_ = Clock::now();
    pid_ = fork();
    if (pid_ == 0) {
      FILE* f = std::freopen((dir_ / "coordinator.log").c_str(), "w", stdout);
      (void)f;
      dup2(fileno(stdout), 2);
      // CNX_LOAD_COORDINATOR: another build's binary (a baseline to compare against).
      const char* bin = std::getenv("CNX_LOAD_COORDINATOR") ? std::getenv("CNX_LOAD_COORDINATOR") : CNX_COORDINATOR_BIN;
      execl(bin, bin, "--config", (dir_ / "job.yaml").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    voices_.resize(voices);
    for (int v = 0; v < voices; ++v) {
      Voice& x = voices_[v];
      if (c_.host_protocol) {
        for (int r = v * c_.per_host; r < (v + 1) * c_.per_host; ++r) x.ranks.push_back(r);
      } else {
        x.ranks.push_back(v);
      }
      x.host = "host-" + std::to_string(x.ranks.front() / c_.per_host);
      x.epoch.assign(x.ranks.size(), 0);
      x.pos.assign(x.ranks.size(), 0);
    }
    return true;
  }

  ~Run() {
    voices_.clear();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // The start-up storm: every voice registers at once. Returns seconds from
  // the coordinator's launch to the last registration answered.
  double register_all() {
    // A registration that failed after its retries (the coordinator is not
    // answering at all): the others are counted as errors, not waited for.
    std::atomic<bool> give_up{false};
    std::vector<std::thread> reg;
    for (int t = 0; t < c_.threads; ++t)
      reg.emplace_back([&, t] {
        std::vector<double> mine[kKinds];
        int64_t err[kKinds] = {};
        std::string first;
        for (size_t v = t; v < voices_.size(); v += c_.threads) {
          Voice& x = voices_[v];
          cnx::coordinator::ClientOptions o;
          o.target = target_;
          o.token = kToken;
          o.deadline_s = 10;
          o.retry_budget_s = 60;
          x.client = std::make_unique<CoordinatorClient>(o);
          if (give_up.load()) {
            ++err[kRegister];
            continue;
          }
          const auto t0 = Clock::now();
          try {
            if (c_.host_protocol)
              x.client->register_host("load", x.ranks, ranks_, x.host, "launch-1");
            else
              x.client->register_worker("load", x.ranks[0], ranks_, x.host, "launch-1");
            x.registered = true;
          } catch (const std::exception& e) {
            if (err[kRegister]++ == 0) first = e.what();
            give_up = true;
          }
          mine[kRegister].push_back(ms_since(t0));
        }
        stats_.merge(mine, err, first);
      });
    for (auto& th : reg) th.join();
    return std::chrono::duration<double>(Clock::now() - launched_).count();
  }

  // The steady load for c_.seconds after a 2 s warm-up (excluded).
  void load(benchmark::State& state) {
    const auto t0 = Clock::now() + std::chrono::milliseconds(500);
    const auto measure_from = t0 + std::chrono::seconds(2);
    const auto t_end =
        measure_from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c_.seconds));
    const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c_.heartbeat_s));
    const auto lease_period =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c_.lease_every));
    double cpu0 = 0;
    std::thread cpu_probe([&] {
      std::this_thread::sleep_until(measure_from);
      cpu0 = cpu_seconds(pid_);
    });
    std::vector<double> late_all;
    std::mutex late_mu;
    std::atomic<int64_t> skipped{0};
    std::vector<std::thread> pool;
    const int n = static_cast<int>(voices_.size());
    for (int t = 0; t < c_.threads; ++t)
      pool.emplace_back([&, t] {
        using Ev = std::tuple<Clock::time_point, int, int>;  // (time, voice, 0 = heartbeat, 1 = lease round)
        std::priority_queue<Ev, std::vector<Ev>, std::greater<Ev>> q;
        for (int v = t; v < n; v += c_.threads) {
          if (!voices_[v].registered) continue;
          const auto phase = std::chrono::duration_cast<Clock::duration>(period * (static_cast<double>(v) / n));
          q.push({t0 + phase, v, 0});
          const auto lease_phase =
              std::chrono::duration_cast<Clock::duration>(lease_period * (static_cast<double>(v % 97) / 97.0));
          q.push({t0 + phase / 2 + lease_phase, v, 1});
        }
        std::vector<double> mine[kKinds], late;
        int64_t err[kKinds] = {};
        std::string first;
        auto timed = [&](Kind k, auto&& fn) {
          const auto s0 = Clock::now();
          bool ok = true;
          try {
            fn();
          } catch (const std::exception& e) {
            ok = false;
            if (err[k]++ == 0 && first.empty()) first = std::string(kKindNames[k]) + ": " + e.what();
          }
          if (s0 >= measure_from) mine[k].push_back(ms_since(s0));
          return ok;
        };
        while (!q.empty()) {
          auto [when, v, kind] = q.top();
          q.pop();
          if (when >= t_end) continue;
          if (Clock::now() >= t_end) {
            ++skipped;  // the generator fell behind: not offered
            continue;
          }
          std::this_thread::sleep_until(when);
          if (when >= measure_from) late.push_back(ms_since(when));
          if (kind == 0)
            heartbeat(voices_[v], timed);
          else
            lease_round(voices_[v], timed);
          q.push({when + (kind == 0 ? period : lease_period), v, kind});
        }
        stats_.merge(mine, err, first);
        std::lock_guard<std::mutex> lock(late_mu);
        late_all.insert(late_all.end(), late.begin(), late.end());
      });
    for (auto& th : pool) th.join();
    cpu_probe.join();
    const double cpu = cpu_seconds(pid_) - cpu0;
    const double window_s = std::chrono::duration<double>(Clock::now() - measure_from).count();
    size_t rpcs = 0;
    for (int k = kHeartbeat; k < kKinds; ++k) rpcs += stats_.ms[k].size();
    state.counters["late_p99_ms"] = percentile(late_all, 0.99);
    state.counters["not_offered"] = static_cast<double>(skipped.load());
    state.counters["rpc_per_s"] = static_cast<double>(rpcs) / window_s;
    state.counters["window_s"] = window_s;
    state.counters["coord_cores"] = cpu / window_s;  // CPU seconds per second of job time
    state.counters["cpu_us_per_rpc"] = rpcs == 0 ? 0 : 1e6 * cpu / static_cast<double>(rpcs);
    const double voices = static_cast<double>(voices_.size());
    const double ckpt_per_s = 1.0 / (c_.heartbeat_s * c_.ckpt_steps);
    const double lease_rpcs = c_.host_protocol ? 1.0 : 2.0;  // acquire(+done) vs acquire and done
    state.counters["sched_rpc_per_s"] = voices * (1.0 / c_.heartbeat_s + lease_rpcs / c_.lease_every + ckpt_per_s);
  }

  template <class Timed>
  void heartbeat(Voice& x, Timed& timed) {
    ++x.step;
    pb::HeartbeatReply rep;
    const bool ok = timed(kHeartbeat, [&] {
      if (c_.host_protocol) {
        pb::HostHeartbeatRequest req;
        for (size_t i = 0; i < x.ranks.size(); ++i) {
          auto* b = req.add_ranks();
          b->set_rank(x.ranks[i]);
          b->set_step(x.step);
          b->set_epoch(x.epoch[i]);
          b->set_samples_per_s(100);
        }
        rep = x.client->host_heartbeat(req);
      } else {
        pb::HeartbeatRequest req;
        req.set_step(x.step);
        req.set_epoch(x.epoch[0]);
        req.set_samples_per_s(100);
        rep = x.client->heartbeat(req);
      }
    });
    if (!ok || rep.action() != pb::ACTION_CHECKPOINT || rep.checkpoint().id() == x.reported_plan) return;
    x.reported_plan = rep.checkpoint().id();
    auto fill = [&](size_t i, pb::RankPart* p) {
      p->set_rank(x.ranks[i]);
      auto* f = p->add_files();
      f->set_path("rank-" + std::to_string(x.ranks[i]) + ".bin");
      f->set_sha256(std::string(64, 'c'));
      f->set_bytes(1);
      p->mutable_progress()->set_epoch(x.epoch[i]);
      p->mutable_progress()->set_next_position(x.pos[i]);
      p->set_data_cursor(std::string(64, 'x'));
    };
    timed(kPart, [&] {
      if (c_.host_protocol) {
        pb::CheckpointPartsRequest req;
        req.set_plan_id(rep.checkpoint().id());
        req.set_step(rep.checkpoint().step());
        for (size_t i = 0; i < x.ranks.size(); ++i) fill(i, req.add_parts());
        x.client->report_checkpoint_parts(req);
      } else {
        pb::RankPart p;
        fill(0, &p);
        pb::CheckpointPartRequest req;
        req.set_plan_id(rep.checkpoint().id());
        req.set_step(rep.checkpoint().step());
        *req.mutable_files() = p.files();
        *req.mutable_progress() = p.progress();
        req.set_data_cursor(p.data_cursor());
        x.client->report_checkpoint_part(req);
      }
    });
  }

  // Every rank of the voice takes its next item and reports it used.
  // Host speakers: one AcquireShards per round, carrying the items the
  // previous round leased (now used up) as done, and the next asks.
  template <class Timed>
  void lease_round(Voice& x, Timed& timed) {
    if (c_.host_protocol) {
      pb::AcquireShardsRequest req;
      *req.mutable_done() = x.pending_done;
      for (size_t i = 0; i < x.ranks.size(); ++i) {
        auto* a = req.add_asks();
        a->set_rank(x.ranks[i]);
        a->set_epoch(x.epoch[i]);
        a->set_position(x.pos[i]);
      }
      pb::AcquireShardsReply rep;
      if (!timed(kAcquire, [&] { rep = x.client->acquire_shards(req); })) return;
      x.pending_done.Clear();
      for (size_t i = 0; i < x.ranks.size() && static_cast<int>(i) < rep.grants_size(); ++i) {
        const auto& g = rep.grants(static_cast<int>(i));
        if (g.end_of_epoch()) {
          ++x.epoch[i];
          x.pos[i] = 0;
          continue;
        }
        ++x.pos[i];
        auto* d = x.pending_done.Add();
        d->set_rank(x.ranks[i]);
        d->set_epoch(x.epoch[i]);
        d->set_position(x.pos[i] - 1);
        d->set_consumed(g.lease().end() - g.lease().start());
      }
    } else {
      pb::AcquireShardReply a;
      if (!timed(kAcquire, [&] { a = x.client->acquire_shard(x.epoch[0], x.pos[0]); })) return;
      if (a.end_of_epoch()) {
        ++x.epoch[0];
        x.pos[0] = 0;
      } else {
        ++x.pos[0];
        timed(kDone,
              [&] { x.client->report_shard_done(x.epoch[0], x.pos[0] - 1, a.lease().end() - a.lease().start()); });
      }
    }
  }

  Stats& stats() { return stats_; }
  int ranks() const { return ranks_; }

 private:
  Config c_;
  int ranks_;
  fs::path dir_;
  std::string target_;
  pid_t pid_ = -1;
  Clock::time_point launched_;
  std::vector<Voice> voices_;
  Stats stats_;
};

void BM_CoordinatorLoad(benchmark::State& state) {
  Config c;
  c.hosts = static_cast<int>(state.range(0));
  c.per_host = static_cast<int>(state.range(1));
  c.host_protocol = state.range(2) != 0;
  c.seconds = env_num("CNX_LOAD_SECONDS", 20);
  c.heartbeat_s = env_num("CNX_LOAD_HEARTBEAT_S", 2);
  c.lease_every = env_num("CNX_LOAD_LEASE_EVERY", 5);
  c.ckpt_steps = static_cast<int>(env_num("CNX_LOAD_CKPT_STEPS", 10));
  c.threads = static_cast<int>(env_num("CNX_LOAD_THREADS", 32));
  state.SetLabel(c.host_protocol ? "host speakers" : "per-rank");
  for (auto _ : state) {
    Run run(c);
    std::string why;
    if (!run.start(&why)) {
      state.SkipWithError(why.c_str());
      return;
    }
    state.counters["load1_start"] = load1();
    state.counters["ranks"] = run.ranks();
    state.counters["register_s"] = run.register_all();
    run.load(state);
    Stats& s = run.stats();
    double errors = 0;
    for (int k = 0; k < kKinds; ++k) {
      const std::string n = kKindNames[k];
      state.counters[n + "_n"] = static_cast<double>(s.ms[k].size());
      state.counters[n + "_p50_ms"] = percentile(s.ms[k], 0.50);
      state.counters[n + "_p99_ms"] = percentile(s.ms[k], 0.99);
      state.counters[n + "_max_ms"] = s.ms[k].empty() ? 0 : *std::max_element(s.ms[k].begin(), s.ms[k].end());
      state.counters[n + "_errors"] = static_cast<double>(s.errors[k]);
      errors += static_cast<double>(s.errors[k]);
    }
    state.counters["errors"] = errors;
    state.counters["load1_end"] = load1();
    if (!s.first_error.empty()) std::fprintf(stderr, "load bench: first error: %s\n", s.first_error.c_str());
  }
}

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"hosts", "per_host", "host_speaker"});
  std::string spec = std::getenv("CNX_LOAD_SIZES") ? std::getenv("CNX_LOAD_SIZES") : "125x8,375x8,1250x8";
  std::stringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto x = item.find('x');
    const int hosts = std::atoi(item.substr(0, x).c_str());
    const int per = x == std::string::npos ? 8 : std::atoi(item.substr(x + 1).c_str());
    b->Args({hosts, per, 1});
    b->Args({hosts, per, 0});
  }
}

BENCHMARK(BM_CoordinatorLoad)->Apply(sizes)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
