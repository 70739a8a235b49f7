#include "coordinator/client.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "common/check.h"
#include "coordinator/auth.h"

namespace cnx::coordinator {

namespace pb = cnx::v1;

RpcError::RpcError(grpc::StatusCode code, const std::string& method, const std::string& message)
    : std::runtime_error("coordinator " + method + " failed (gRPC code " + std::to_string(static_cast<int>(code)) +
                         "): " + message),
      code_(code) {}

std::string dial_address_for_listen(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return listen;
  const std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
  if (host.empty() || host == "0.0.0.0" || host == "*") return "127.0.0.1:" + port;
  if (host == "[::]" || host == "::" || host == "[::0]") return "[::1]:" + port;
  return listen;
}

CoordinatorClient::CoordinatorClient(ClientOptions options) : options_(std::move(options)) {
  CNX_CHECK(!options_.target.empty(), "coordinator address is empty");
  CNX_CHECK(options_.deadline_s > 0 && options_.retry_budget_s >= 0, "client deadlines must be positive");
  grpc::ChannelArguments args;
  // Reconnect quickly after a coordinator restart (gRPC's default backoff grows to 120 s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetMaxReceiveMessageSize(64 << 20);
  // One connection per client, as one worker process has (no sharing of
  // subchannels between clients created in one process, e.g. in tests).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // No BDP pings (each is a timer, a write and a read at both ends per
  // reply; coordinator messages are small): see coordinator/server.cc.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  if (!options_.tls_server_name.empty()) {
    CNX_CHECK(!options_.tls_ca.empty(), "a TLS server name (", options_.tls_server_name,
              ") needs TLS: set the CA that verifies the coordinator (coordinator.tls_ca / --tls-ca)");
    args.SetSslTargetNameOverride(options_.tls_server_name);
  }
  channel_ = grpc::CreateCustomChannel(options_.target,
                                       channel_credentials(options_.tls_ca, options_.tls_cert, options_.tls_key), args);
  stub_ = pb::Coordinator::NewStub(channel_);
}

template <class Req, class Rep, class Fn>
Rep CoordinatorClient::call(const char* method, const Req& req, Fn fn) {
  using clock = std::chrono::steady_clock;
  const auto give_up = clock::now() + std::chrono::duration_cast<clock::duration>(
                                          std::chrono::duration<double>(options_.retry_budget_s));
  thread_local std::mt19937_64 rng(std::random_device{}());
  double backoff = options_.backoff_initial_s;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + options_.token);
    ctx.set_wait_for_ready(true);  // ride out a restart: wait for the channel to reconnect
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                            std::chrono::duration<double>(options_.deadline_s)));
    Rep rep;
    grpc::Status st = fn(&ctx, req, &rep);
    if (st.ok()) return rep;
    const bool transient =
        st.error_code() == grpc::StatusCode::UNAVAILABLE || st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
    if (!transient || clock::now() >= give_up) throw RpcError(st.error_code(), method, st.error_message());
    ++retries_;
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    std::this_thread::sleep_for(std::chrono::duration<double>(backoff * jitter(rng)));
    backoff = std::min(backoff * 2, options_.backoff_max_s);
  }
}

pb::RegisterReply CoordinatorClient::register_worker(const std::string& job_id, int rank, int world_size,
                                                     const std::string& host, const std::string& launch_id) {
  pb::RegisterRequest req;
  req.set_job_id(job_id);
  req.set_rank(rank);
  req.set_world_size(world_size);
  req.set_host(host);
  req.set_launch_id(launch_id);
  auto rep = call<pb::RegisterRequest, pb::RegisterReply>(
      "Register", req, [&](grpc::ClientContext* c, const pb::RegisterRequest& q, pb::RegisterReply* r) {
        return stub_->Register(c, q, r);
      });
  worker_.set_job_id(job_id);
  worker_.set_attempt(rep.attempt());
  worker_.set_rank(rank);
  return rep;
}

pb::HeartbeatReply CoordinatorClient::heartbeat(pb::HeartbeatRequest req) {
  *req.mutable_worker() = worker_;
  return call<pb::HeartbeatRequest, pb::HeartbeatReply>(
      "Heartbeat", req, [&](grpc::ClientContext* c, const pb::HeartbeatRequest& q, pb::HeartbeatReply* r) {
        return stub_->Heartbeat(c, q, r);
      });
}

pb::AcquireShardReply CoordinatorClient::acquire_shard(int64_t epoch, int64_t position) {
  pb::AcquireShardRequest req;
  *req.mutable_worker() = worker_;
  req.set_epoch(epoch);
  req.set_position(position);
  return call<pb::AcquireShardRequest, pb::AcquireShardReply>(
      "AcquireShard", req, [&](grpc::ClientContext* c, const pb::AcquireShardRequest& q, pb::AcquireShardReply* r) {
        return stub_->AcquireShard(c, q, r);
      });
}

void CoordinatorClient::report_shard_done(int64_t epoch, int64_t position, int64_t consumed) {
  pb::ShardDoneRequest req;
  *req.mutable_worker() = worker_;
  req.set_epoch(epoch);
  req.set_position(position);
  req.set_consumed(consumed);
  call<pb::ShardDoneRequest, pb::ShardDoneReply>(
      "ReportShardDone", req, [&](grpc::ClientContext* c, const pb::ShardDoneRequest& q, pb::ShardDoneReply* r) {
        return stub_->ReportShardDone(c, q, r);
      });
}

pb::CheckpointPartReply CoordinatorClient::report_checkpoint_part(pb::CheckpointPartRequest req) {
  *req.mutable_worker() = worker_;
  return call<pb::CheckpointPartRequest, pb::CheckpointPartReply>(
      "ReportCheckpointPart", req,
      [&](grpc::ClientContext* c, const pb::CheckpointPartRequest& q, pb::CheckpointPartReply* r) {
        return stub_->ReportCheckpointPart(c, q, r);
      });
}

pb::RegisterHostReply CoordinatorClient::register_host(const std::string& job_id, const std::vector<int>& ranks,
                                                       int world_size, const std::string& host,
                                                       const std::string& launch_id) {
  pb::RegisterHostRequest req;
  req.set_job_id(job_id);
  for (int r : ranks) req.add_ranks(r);
  req.set_world_size(world_size);
  req.set_host(host);
  req.set_launch_id(launch_id);
  auto rep = call<pb::RegisterHostRequest, pb::RegisterHostReply>(
      "RegisterHost", req, [&](grpc::ClientContext* c, const pb::RegisterHostRequest& q, pb::RegisterHostReply* r) {
        return stub_->RegisterHost(c, q, r);
      });
  host_.set_job_id(job_id);
  host_.set_attempt(rep.attempt());
  host_.set_host(host);
  return rep;
}

pb::HeartbeatReply CoordinatorClient::host_heartbeat(pb::HostHeartbeatRequest req) {
  *req.mutable_host() = host_;
  return call<pb::HostHeartbeatRequest, pb::HeartbeatReply>(
      "HostHeartbeat", req, [&](grpc::ClientContext* c, const pb::HostHeartbeatRequest& q, pb::HeartbeatReply* r) {
        return stub_->HostHeartbeat(c, q, r);
      });
}

pb::AcquireShardsReply CoordinatorClient::acquire_shards(pb::AcquireShardsRequest req) {
  *req.mutable_host() = host_;
  return call<pb::AcquireShardsRequest, pb::AcquireShardsReply>(
      "AcquireShards", req, [&](grpc::ClientContext* c, const pb::AcquireShardsRequest& q, pb::AcquireShardsReply* r) {
        return stub_->AcquireShards(c, q, r);
      });
}

void CoordinatorClient::report_shards_done(pb::ShardsDoneRequest req) {
  *req.mutable_host() = host_;
  call<pb::ShardsDoneRequest, pb::ShardDoneReply>(
      "ReportShardsDone", req, [&](grpc::ClientContext* c, const pb::ShardsDoneRequest& q, pb::ShardDoneReply* r) {
        return stub_->ReportShardsDone(c, q, r);
      });
}

pb::CheckpointPartReply CoordinatorClient::report_checkpoint_parts(pb::CheckpointPartsRequest req) {
  *req.mutable_host() = host_;
  return call<pb::CheckpointPartsRequest, pb::CheckpointPartReply>(
      "ReportCheckpointParts", req,
      [&](grpc::ClientContext* c, const pb::CheckpointPartsRequest& q, pb::CheckpointPartReply* r) {
        return stub_->ReportCheckpointParts(c, q, r);
      });
}

pb::LatestCheckpointReply CoordinatorClient::latest_checkpoint(const std::string& job_id) {
  pb::LatestCheckpointRequest req;
  req.set_job_id(job_id);
  return call<pb::LatestCheckpointRequest, pb::LatestCheckpointReply>(
      "LatestCheckpoint", req,
      [&](grpc::ClientContext* c, const pb::LatestCheckpointRequest& q, pb::LatestCheckpointReply* r) {
        return stub_->LatestCheckpoint(c, q, r);
      });
}

pb::StatusReply CoordinatorClient::status(const std::string& job_id) {
  pb::StatusRequest req;
  req.set_job_id(job_id);
  return call<pb::StatusRequest, pb::StatusReply>(
      "GetStatus", req, [&](grpc::ClientContext* c, const pb::StatusRequest& q, pb::StatusReply* r) {
        return stub_->GetStatus(c, q, r);
      });
}

pb::RequestCheckpointReply CoordinatorClient::request_checkpoint(const std::string& job_id) {
  pb::RequestCheckpointRequest req;
  req.set_job_id(job_id);
  return call<pb::RequestCheckpointRequest, pb::RequestCheckpointReply>(
      "RequestCheckpoint", req,
      [&](grpc::ClientContext* c, const pb::RequestCheckpointRequest& q, pb::RequestCheckpointReply* r) {
        return stub_->RequestCheckpoint(c, q, r);
      });
}

pb::DrainReply CoordinatorClient::drain(const std::string& job_id, bool checkpoint) {
  pb::DrainRequest req;
  req.set_job_id(job_id);
  req.set_checkpoint(checkpoint);
  return call<pb::DrainRequest, pb::DrainReply>(
      "Drain", req,
      [&](grpc::ClientContext* c, const pb::DrainRequest& q, pb::DrainReply* r) { return stub_->Drain(c, q, r); });
}

}  // namespace cnx::coordinator
