// CoordinatorServer: the gRPC callback generic service that authenticates
// each call from its metadata before reading its message, then dispatches
// the parsed request to CoordinatorService (protocol in service.h).
#include <absl/synchronization/mutex.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <chrono>
#include <memory>
#include <unordered_map>

#include "common/check.h"
#include "coordinator/auth.h"
#include "coordinator/service.h"

namespace cnx::coordinator {
namespace {

namespace pb = cnx::v1;
using SteadyClock = std::chrono::steady_clock;

class CallReactor;

// Parses the request, runs the handler, sends the reply when durable.
using Dispatch = void (*)(CoordinatorService&, CallReactor*);

struct Method {
  const char* name;
  Dispatch dispatch;
};

// One call. Lives from CreateReactor to OnDone.
class CallReactor final : public grpc::ServerGenericBidiReactor {
 public:
  CallReactor(CoordinatorService& service, const std::unordered_map<std::string, Method>& methods,
              grpc::GenericCallbackServerContext* ctx)
      : service_(service), ctx_(ctx), started_(SteadyClock::now()) {
    auto m = methods.find(ctx->method());
    if (m == methods.end()) {
      service_.refuse("(unknown method)", ctx->peer(), "no method '" + log_escape(ctx->method(), 128) + "'");
      service_.record("(unknown method)", grpc::StatusCode::UNIMPLEMENTED, started_);
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method"));
      return;
    }
    method_ = &m->second;
    const auto& md = ctx->client_metadata();
    auto auth = md.find("authorization");
    const grpc::Status access =
        service_.authenticate(method_->name, auth == md.end() ? nullptr : &auth->second, ctx->peer());
    if (!access.ok()) {
      service_.record(method_->name, access.error_code(), started_);
      Finish(access);
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // No message: the client went away, or gRPC refused it (over
      // kMaxRequestBytes: the client already has RESOURCE_EXHAUSTED).
      service_.refuse(method_->name, ctx_->peer(), "no request message (larger than the limit, or cancelled)");
      service_.record(method_->name, grpc::StatusCode::RESOURCE_EXHAUSTED, started_);
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "expected one request message"));
      return;
    }
    method_->dispatch(service_, this);
  }

  void OnDone() override { delete this; }

  template <class Req>
  bool parse(Req* req) {
    grpc::ProtoBufferReader reader(&request_);
    const bool ok = req->ParseFromZeroCopyStream(&reader);
    request_.Clear();
    if (!ok) {
      service_.record(method_->name, grpc::StatusCode::INVALID_ARGUMENT, started_);
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          std::string("cannot parse the request of ") + method_->name));
    }
    return ok;
  }

  // Sends `rep` (when `st` is OK) and ends the call.
  void reply(const grpc::Status& st, const google::protobuf::Message& rep) {
    if (!st.ok()) {
      Finish(st);
      return;
    }
    bool own = false;
    grpc::Status ser = grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(rep, &reply_, &own);
    if (!ser.ok()) {
      Finish(ser);
      return;
    }
    StartWriteAndFinish(&reply_, grpc::WriteOptions(), grpc::Status::OK);
  }

  const Method& method() const { return *method_; }
  SteadyClock::time_point started() const { return started_; }

 private:
  CoordinatorService& service_;
  grpc::GenericCallbackServerContext* ctx_;
  const Method* method_ = nullptr;
  SteadyClock::time_point started_;
  grpc::ByteBuffer request_, reply_;
};

// Dispatch for a handler `uint64_t (CoordinatorService::*)(const Req&, Rep*)`.
template <class Req, class Rep, uint64_t (CoordinatorService::*Handler)(const Req&, Rep*)>
void dispatch(CoordinatorService& service, CallReactor* call) {
  auto req = std::make_shared<Req>();
  if (!call->parse(req.get())) return;
  auto rep = std::make_shared<Rep>();
  service.run(
      call->method().name, call->started(), [&] { return (service.*Handler)(*req, rep.get()); },
      [call, rep](const grpc::Status& st) { call->reply(st, *rep); });
}

// Dispatch for a handler that also hands out checkpoint folders to delete
// once its changes are durable (ReportCheckpointPart / ReportCheckpointParts).
template <class Req, class Rep,
          uint64_t (CoordinatorService::*Handler)(const Req&, Rep*, std::vector<std::string>* garbage)>
void dispatch_with_garbage(CoordinatorService& service, CallReactor* call) {
  auto req = std::make_shared<Req>();
  if (!call->parse(req.get())) return;
  auto rep = std::make_shared<Rep>();
  auto garbage = std::make_shared<std::vector<std::string>>();
  service.run(
      call->method().name, call->started(), [&] { return (service.*Handler)(*req, rep.get(), garbage.get()); },
      [call, rep](const grpc::Status& st) { call->reply(st, *rep); },
      [&service, garbage] { service.delete_garbage(std::move(*garbage)); });
}

std::unordered_map<std::string, Method> method_table() {
  using S = CoordinatorService;
  const Method methods[] = {
      {"Register", dispatch<pb::RegisterRequest, pb::RegisterReply, &S::Register>},
      {"Heartbeat", dispatch<pb::HeartbeatRequest, pb::HeartbeatReply, &S::Heartbeat>},
      {"AcquireShard", dispatch<pb::AcquireShardRequest, pb::AcquireShardReply, &S::AcquireShard>},
      {"ReportShardDone", dispatch<pb::ShardDoneRequest, pb::ShardDoneReply, &S::ReportShardDone>},
      {"ReportCheckpointPart",
       dispatch_with_garbage<pb::CheckpointPartRequest, pb::CheckpointPartReply, &S::ReportCheckpointPart>},
      {"RegisterHost", dispatch<pb::RegisterHostRequest, pb::RegisterHostReply, &S::RegisterHost>},
      {"HostHeartbeat", dispatch<pb::HostHeartbeatRequest, pb::HeartbeatReply, &S::HostHeartbeat>},
      {"AcquireShards", dispatch<pb::AcquireShardsRequest, pb::AcquireShardsReply, &S::AcquireShards>},
      {"ReportShardsDone", dispatch<pb::ShardsDoneRequest, pb::ShardDoneReply, &S::ReportShardsDone>},
      {"ReportCheckpointParts",
       dispatch_with_garbage<pb::CheckpointPartsRequest, pb::CheckpointPartReply, &S::ReportCheckpointParts>},
      {"LatestCheckpoint", dispatch<pb::LatestCheckpointRequest, pb::LatestCheckpointReply, &S::LatestCheckpoint>},
      {"GetStatus", dispatch<pb::StatusRequest, pb::StatusReply, &S::GetStatus>},
      {"RequestCheckpoint", dispatch<pb::RequestCheckpointRequest, pb::RequestCheckpointReply, &S::RequestCheckpoint>},
      {"Drain", dispatch<pb::DrainRequest, pb::DrainReply, &S::Drain>},
  };
  std::unordered_map<std::string, Method> table;
  for (const Method& m : methods) table.emplace(std::string("/cnx.v1.Coordinator/") + m.name, m);
  // Every method of the proto service is served (a new one must be added here).
  const auto* desc = pb::RegisterRequest::descriptor()->file()->FindServiceByName("Coordinator");
  CNX_CHECK(desc && static_cast<size_t>(desc->method_count()) == table.size(),
            "coordinator method table is incomplete");
  return table;
}

class GenericService final : public grpc::CallbackGenericService {
 public:
  explicit GenericService(CoordinatorService& service) : service_(service), methods_(method_table()) {}
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
    return new CallReactor(service_, methods_, ctx);
  }

 private:
  CoordinatorService& service_;
  const std::unordered_map<std::string, Method> methods_;
};

}  // namespace

CoordinatorServer::CoordinatorServer(const ServerOptions& options) {
  // gRPC locks absl::Mutex on every call; Debian's absl keeps a global
  // deadlock-detection graph for each lock (measured: ~12% of the
  // coordinator's CPU under load). Detection is a debugging aid: off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  store_ = std::make_unique<Store>(options.state_db);
  service_ = std::make_unique<CoordinatorService>(options, store_.get());
  generic_ = std::make_unique<GenericService>(*service_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, server_credentials(options.tls_cert, options.tls_key, options.tls_client_ca),
                           &port_);
  builder.RegisterCallbackGenericService(generic_.get());
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  server_ = builder.BuildAndStart();
  CNX_CHECK(server_ != nullptr && port_ > 0, "coordinator.listen: cannot listen on '", options.listen,
            "' (address in use or invalid?)");
}

CoordinatorServer::~CoordinatorServer() {
  shutdown();
}

void CoordinatorServer::shutdown() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server_->Wait();
    server_.reset();
  }
}

}  // namespace cnx::coordinator
