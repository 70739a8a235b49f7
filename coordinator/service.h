#pragma once
// The gRPC service (proto/coordinator.proto) around the Scheduler, and the
// server that hosts it.
//
// Threading: gRPC's sync server calls the handlers on its thread pool. Each
// handler checks the token, converts and validates the request, then calls
// the Scheduler under `mu_`; the changes the call made are queued on the
// DurableWriter while still holding `mu_` (so durable order = state order)
// and the reply is sent only after they are durable. A timer thread calls
// Scheduler::tick() every `tick_s`. Checkpoint folders that retention made
// garbage are deleted after the commit that did so is durable, and only
// when they lie inside the checkpoint root.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/config.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"
#include "proto/coordinator.grpc.pb.h"

namespace cnx::coordinator {

// Receives one call per finished RPC: method name ("Heartbeat"), the status
// code returned and the handler's wall time in seconds. Called on gRPC
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
};

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  std::string token;  // the job's bearer token (load_token)
  std::string tls_cert, tls_key, tls_client_ca;
  std::string state_db;
  std::string shard_index;  // data.index
  SchedulerOptions scheduler;
  double tick_s = 0.5;
  std::function<double()> clock;  // unix seconds; default: the system clock
};

// Builds ServerOptions from the job config (token loaded as configured).
ServerOptions server_options_from_config(const Config& config);

class CoordinatorService final : public cnx::v1::Coordinator::Service {
 public:
  CoordinatorService(const ServerOptions& options, Store* store);
  ~CoordinatorService() override;

  // The observer must outlive the service; nullptr detaches.
  void set_observer(RpcObserver* observer) { observer_.store(observer); }
  CoordinatorStatus status() const;

  grpc::Status Register(grpc::ServerContext*, const cnx::v1::RegisterRequest*, cnx::v1::RegisterReply*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const cnx::v1::HeartbeatRequest*, cnx::v1::HeartbeatReply*) override;
  grpc::Status AcquireShard(grpc::ServerContext*, const cnx::v1::AcquireShardRequest*,
                            cnx::v1::AcquireShardReply*) override;
  grpc::Status ReportShardDone(grpc::ServerContext*, const cnx::v1::ShardDoneRequest*, cnx::v1::ShardDoneReply*) override;
  grpc::Status ReportCheckpointPart(grpc::ServerContext*, const cnx::v1::CheckpointPartRequest*,
                                    cnx::v1::CheckpointPartReply*) override;
  grpc::Status LatestCheckpoint(grpc::ServerContext*, const cnx::v1::LatestCheckpointRequest*,
                                cnx::v1::LatestCheckpointReply*) override;
  grpc::Status GetStatus(grpc::ServerContext*, const cnx::v1::StatusRequest*, cnx::v1::StatusReply*) override;
  grpc::Status RequestCheckpoint(grpc::ServerContext*, const cnx::v1::RequestCheckpointRequest*,
                                 cnx::v1::RequestCheckpointReply*) override;
  grpc::Status Drain(grpc::ServerContext*, const cnx::v1::DrainRequest*, cnx::v1::DrainReply*) override;

 private:
  // Runs `body` with auth, error mapping and timing. `body` returns the
  // durable sequence number to wait for before replying.
  grpc::Status handle(std::string_view method, grpc::ServerContext* ctx, const std::function<uint64_t()>& body);
  // With mu_ held: queue the scheduler's changes, log its events.
  uint64_t persist_locked();
  void delete_garbage(std::vector<std::string> dirs);
  void tick_loop();
  double now() const { return clock_(); }

  std::string token_;
  std::string checkpoint_root_;
  std::function<double()> clock_;
  double tick_s_;
  mutable std::mutex mu_;
  Scheduler scheduler_;
  DurableWriter writer_;
  std::atomic<RpcObserver*> observer_{nullptr};
  std::atomic<int64_t> auth_failures_{0}, rpcs_total_{0}, rpcs_failed_{0};
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
  void wait() { server_->Wait(); }
  void shutdown();

 private:
  std::unique_ptr<Store> store_;
  std::unique_ptr<CoordinatorService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace cnx::coordinator
