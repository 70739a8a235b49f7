#pragma once
// The coordinator's RPC handlers (proto/coordinator.proto) around the
// Scheduler, and the server that hosts them.
//
// Serving (server.cc): one gRPC async generic service receives every
// call as raw bytes. For each call, in this order:
//   1. the method name is looked up (unknown: UNIMPLEMENTED);
//   2. the bearer token is checked from the call's metadata (missing or
//      wrong: UNAUTHENTICATED) -- before a byte of the message is read, so
//      an unauthenticated peer cannot make the coordinator parse anything;
//   3. the message is read (gRPC refuses one over kMaxRequestBytes with
//      RESOURCE_EXHAUSTED) and parsed;
//   4. the handler runs: it validates the request and calls the Scheduler
//      under `mu_`, queuing the changes on the DurableWriter while still
//      holding `mu_` (durable order = state order). It returns the sequence
//      number the reply depends on;
//   5. the reply is sent once that sequence number is durable: no thread
//      waits for the disk; the DurableWriter's thread sends the replies of
//      the calls its transaction made durable (group commit).
// A timer thread calls Scheduler::tick() every `tick_s`. Checkpoint folders
// that retention made garbage are deleted after the commit that did so is
// durable, and only when they lie inside the checkpoint root.
//
// Client strings that reach a log line are escaped (control characters as
// \xNN) and truncated; refusals (bad token, oversized or unknown calls) are
// logged at most a few lines per interval, the rest counted.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/config.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "proto/coordinator.pb.h"

namespace cnx::coordinator {

struct CallQueues;  // server.cc

// Receives one call per finished RPC: method name ("Heartbeat"), the status
// code returned and the call's wall time in seconds (from the start of the
// call to its reply, durability wait included). Called on gRPC
// threads, concurrently: implementations must be thread-safe and cheap.
struct RpcObserver {
  virtual ~RpcObserver() = default;
  virtual void on_rpc(std::string_view method, grpc::StatusCode code, double seconds) = 0;
};

// Everything the metrics exporter needs, as one consistent snapshot.
struct CoordinatorStatus {
  SchedulerStatus job;
  int64_t auth_failures = 0;
  int64_t rpcs_total = 0;
  int64_t rpcs_failed = 0;
  int64_t store_transactions = 0;
  int64_t refusal_logs_suppressed = 0;  // refusal log lines dropped by the rate limit
};

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  std::string token;  // the job's bearer token (load_token)
  // "" = none: the job token authorises every call. Else Drain and
  // RequestCheckpoint need this token (the job token gets PERMISSION_DENIED),
  // and it may also read (GetStatus, LatestCheckpoint), nothing else.
  std::string operator_token;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string state_db;
  std::string shard_index;  // data.index
  SchedulerOptions scheduler;
  double tick_s = 0.5;
  std::function<double()> clock;  // unix seconds; default: the system clock
};

// Builds ServerOptions from the job config (token loaded as configured).
ServerOptions server_options_from_config(const Config& config);

// The largest request message the server accepts (a checkpoint part with
// its 1 MiB data cursor and a file list fits with room to spare).
inline constexpr int kMaxRequestBytes = 4 << 20;

// `s` made safe for one log line: control and non-ASCII bytes as \xNN,
// backslash doubled, cut to `max_bytes` input bytes (marked "...").
std::string log_escape(std::string_view s, size_t max_bytes = 256);

// Lets through `burst` lines per `interval_s`, counts the others; the next
// line let through reports how many were suppressed. Thread-safe.
class LogLimiter {
 public:
  LogLimiter(int burst, double interval_s) : burst_(burst), interval_s_(interval_s) {}
  // True when a line may be logged now; *suppressed_before receives the
  // number of lines suppressed since the last one let through.
  bool allow(double now_s, int64_t* suppressed_before);
  int64_t suppressed_total() const;

 private:
  mutable std::mutex mu_;
  int burst_;
  double interval_s_;
  double window_start_ = -1e300;
  int used_ = 0;
  int64_t pending_ = 0, total_ = 0;
};

class CoordinatorService {
 public:
  CoordinatorService(const ServerOptions& options, Store* store);
  ~CoordinatorService();

  // The observer must outlive the service; nullptr detaches.
  void set_observer(RpcObserver* observer) { observer_.store(observer); }
  // with_ranks = false: no per-rank rows (the metrics exporter's snapshot).
  CoordinatorStatus status(bool with_ranks = true) const;

  // Step 2 above: OK when the "authorization" metadata value (nullptr:
  // absent) carries a token that may make this call: the job token for
  // worker calls, the operator token (when one is set) for Drain and
  // RequestCheckpoint, either for GetStatus and LatestCheckpoint. Else
  // UNAUTHENTICATED (no valid token) or PERMISSION_DENIED (the other
  // token); a refusal is counted and logged (rate-limited), naming the
  // method and the peer.
  grpc::Status authenticate(std::string_view method, const grpc::string_ref* authorization, const std::string& peer);
  // Logs (rate-limited) a call refused before its handler ran.
  void refuse(std::string_view method, const std::string& peer, const std::string& why);
  // Counts a finished call and reports it to the observer.
  void record(std::string_view method, grpc::StatusCode code, std::chrono::steady_clock::time_point started);

  // Steps 4-5: runs `body` (returns the durable sequence number to wait
  // for, or throws SchedulerError / anything else), then calls
  // `done(status)` once that number is durable -- or at once on an error.
  // `done` may run on the calling thread or on the writer's thread.
  void run(std::string_view method, std::chrono::steady_clock::time_point started,
           const std::function<uint64_t()>& body, std::function<void(const grpc::Status&)> done,
           std::function<void()> after_durable = nullptr);

  // The handlers: validate, change the state under mu_, fill the reply;
  // return the sequence number the reply depends on.
  uint64_t Register(const cnx::v1::RegisterRequest&, cnx::v1::RegisterReply*);
  uint64_t Heartbeat(const cnx::v1::HeartbeatRequest&, cnx::v1::HeartbeatReply*);
  uint64_t AcquireShard(const cnx::v1::AcquireShardRequest&, cnx::v1::AcquireShardReply*);
  uint64_t ReportShardDone(const cnx::v1::ShardDoneRequest&, cnx::v1::ShardDoneReply*);
  // *garbage receives folders to delete once the returned number is durable.
  uint64_t ReportCheckpointPart(const cnx::v1::CheckpointPartRequest&, cnx::v1::CheckpointPartReply*,
                                std::vector<std::string>* garbage);
  // Host speaker protocol (proto/coordinator.proto).
  uint64_t RegisterHost(const cnx::v1::RegisterHostRequest&, cnx::v1::RegisterHostReply*);
  uint64_t HostHeartbeat(const cnx::v1::HostHeartbeatRequest&, cnx::v1::HeartbeatReply*);
  uint64_t AcquireShards(const cnx::v1::AcquireShardsRequest&, cnx::v1::AcquireShardsReply*);
  uint64_t ReportShardsDone(const cnx::v1::ShardsDoneRequest&, cnx::v1::ShardDoneReply*);
  uint64_t ReportCheckpointParts(const cnx::v1::CheckpointPartsRequest&, cnx::v1::CheckpointPartReply*,
                                 std::vector<std::string>* garbage);
  uint64_t LatestCheckpoint(const cnx::v1::LatestCheckpointRequest&, cnx::v1::LatestCheckpointReply*);
  uint64_t GetStatus(const cnx::v1::StatusRequest&, cnx::v1::StatusReply*);
  uint64_t RequestCheckpoint(const cnx::v1::RequestCheckpointRequest&, cnx::v1::RequestCheckpointReply*);
  uint64_t Drain(const cnx::v1::DrainRequest&, cnx::v1::DrainReply*);

  // Deletes the folders retention dropped (inside checkpoint.root only), after
  // checking that the last committed checkpoint is visible on this host
  // (else logs an error: checkpoint.root is not a shared filesystem here).
  void delete_garbage(std::vector<std::string> dirs);

 private:
  // With mu_ held: queue the scheduler's changes, log its events.
  uint64_t persist_locked();
  void tick_loop();
  void check_visible(const std::string& dir);
  double now() const { return clock_(); }

  std::string token_, operator_token_;
  std::string checkpoint_root_;
  std::function<double()> clock_;
  double tick_s_;
  mutable std::mutex mu_;
  Scheduler scheduler_;
  DurableWriter writer_;
  std::string committed_dir_to_check_;  // guarded by mu_; see delete_garbage()
  std::atomic<RpcObserver*> observer_{nullptr};
  std::atomic<int64_t> auth_failures_{0}, rpcs_total_{0}, rpcs_failed_{0};
  LogLimiter refusal_log_{5, 10.0};
  std::mutex tick_mu_;
  std::condition_variable tick_cv_;
  bool stop_ = false;
  std::thread ticker_;
};

// The store, service and gRPC server of one coordinator process.
class CoordinatorServer {
 public:
  // Opens the state database, restores the job, binds and starts serving.
  // Throws cnx::CheckError with a clear message on any setup failure.
  explicit CoordinatorServer(const ServerOptions& options);
  ~CoordinatorServer();
  int port() const { return port_; }
  CoordinatorService& service() { return *service_; }
  void wait() {
    if (server_) server_->Wait();
  }
  void shutdown();

  // Completion queues, one serving thread each (server.cc).
  static constexpr int kRpcThreads = 1;

 private:
  std::unique_ptr<Store> store_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<CallQueues> queues_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace cnx::coordinator
