#pragma once
// Client library for the coordinator (what cnx-worker and cnx-ctl link).
//
// Every call carries the job token and runs under a per-try deadline with
// gRPC's wait-for-ready (a call made while the coordinator is down waits for
// the channel to reconnect, which it retries every <= 1 s). A try that ends
// UNAVAILABLE or DEADLINE_EXCEEDED is retried with exponential backoff (with
// jitter) up to `retry_budget_s` in total — so a coordinator restart (kill -9
// and back) is ridden out. The coordinator's
// calls are idempotent under retry (see proto/coordinator.proto). Any other
// failure throws RpcError at once; FAILED_PRECONDITION from a worker call
// means this attempt is fenced off (or the job is not running).
//
// Threading: a CoordinatorClient may be used from several threads at once
// (gRPC stubs are thread-safe); worker identity is set once by
// register_worker() before the other worker calls.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "proto/coordinator.grpc.pb.h"

namespace cnx::coordinator {

class RpcError : public std::runtime_error {
 public:
  RpcError(grpc::StatusCode code, const std::string& method, const std::string& message);
  grpc::StatusCode code() const { return code_; }

 private:
  grpc::StatusCode code_;
};

struct ClientOptions {
  std::string target = "127.0.0.1:50051";  // HOST:PORT
  std::string token;                       // the job's bearer token
  std::string tls_ca;                      // verify the coordinator with this CA (enables TLS)
  std::string tls_cert, tls_key;           // client certificate for mutual TLS
  // With TLS: the name the coordinator's certificate must carry, when it is
  // not the host of `target` (e.g. 127.0.0.1 through `kubectl port-forward`
  // to a certificate for the Service name). "" = the host of `target`.
  std::string tls_server_name;
  double deadline_s = 10.0;       // per try
  double retry_budget_s = 120.0;  // total time spent retrying one call
  double backoff_initial_s = 0.05;
  double backoff_max_s = 2.0;
};

// The address a client on the coordinator's own host dials for the listen
// address `listen` (coordinator.listen): a wildcard host (0.0.0.0, [::], *,
// or none) becomes loopback (127.0.0.1, [::1]); any other is returned as is.
// cnx-ctl's default --address.
std::string dial_address_for_listen(const std::string& listen);

class CoordinatorClient {
 public:
  explicit CoordinatorClient(ClientOptions options);

  // Worker calls. register_worker() records (job, attempt, rank) for the rest.
  cnx::v1::RegisterReply register_worker(const std::string& job_id, int rank, int world_size, const std::string& host,
                                         const std::string& launch_id);
  cnx::v1::HeartbeatReply heartbeat(cnx::v1::HeartbeatRequest request);
  cnx::v1::AcquireShardReply acquire_shard(int64_t epoch, int64_t position);
  void report_shard_done(int64_t epoch, int64_t position, int64_t consumed);
  cnx::v1::CheckpointPartReply report_checkpoint_part(cnx::v1::CheckpointPartRequest request);

  // Host speaker calls (proto/coordinator.proto). register_host() records
  // (job, attempt, host) for the rest, which fill in HostRef themselves.
  cnx::v1::RegisterHostReply register_host(const std::string& job_id, const std::vector<int>& ranks, int world_size,
                                           const std::string& host, const std::string& launch_id);
  cnx::v1::HeartbeatReply host_heartbeat(cnx::v1::HostHeartbeatRequest request);
  cnx::v1::AcquireShardsReply acquire_shards(cnx::v1::AcquireShardsRequest request);
  void report_shards_done(cnx::v1::ShardsDoneRequest request);
  cnx::v1::CheckpointPartReply report_checkpoint_parts(cnx::v1::CheckpointPartsRequest request);

  // Operator / shared calls.
  cnx::v1::LatestCheckpointReply latest_checkpoint(const std::string& job_id);
  cnx::v1::StatusReply status(const std::string& job_id);
  cnx::v1::RequestCheckpointReply request_checkpoint(const std::string& job_id);
  cnx::v1::DrainReply drain(const std::string& job_id, bool checkpoint);

  const cnx::v1::WorkerRef& worker() const { return worker_; }
  const cnx::v1::HostRef& host() const { return host_; }
  // Calls retried so far (for logs and tests).
  int64_t retries() const { return retries_.load(); }

 private:
  template <class Req, class Rep, class Fn>
  Rep call(const char* method, const Req& req, Fn fn);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<cnx::v1::Coordinator::Stub> stub_;
  cnx::v1::WorkerRef worker_;
  cnx::v1::HostRef host_;
  std::atomic<int64_t> retries_{0};
};

}  // namespace cnx::coordinator
