// CoordinatorServer: a gRPC async generic service that authenticates each
// call from its metadata before reading its message, then dispatches the
// parsed request to CoordinatorService (protocol in service.h).
//
// Threading: kRpcThreads completion queues, one thread each; a thread runs
// every event of the calls on its queue (new call, token check, read,
// parse, handler) itself, so a call is never handed between threads before
// its handler ran. A reply that waits for durability is started by the
// DurableWriter's thread. (gRPC 1.51's callback API runs its handlers on
// "nexting" threads that take turns at one epoll set: measured at 10,000
// ranks on 1,250 hosts, ~8 context switches and ~450 us of CPU per RPC;
// bench/coordinator/README.md.)
#include <absl/synchronization/mutex.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

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

std::unordered_map<std::string, Method> method_table();

}  // namespace

// The server's completion queues, their threads and what a call needs.
struct CallQueues {
  explicit CallQueues(CoordinatorService& s) : service(s), methods(method_table()) {}
  CoordinatorService& service;
  const std::unordered_map<std::string, Method> methods;
  grpc::AsyncGenericService generic;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  std::vector<std::thread> threads;
  std::atomic<int64_t> live{0};  // CallReactors alive (waiting for a call, or in one)
};

namespace {

// One call, driven by the completion queue it was requested on: every
// event of the call comes back to proceed() (the tag is the call itself).
// Lives from the RequestCall that waits for it to the completion of its
// Finish. Only one operation is outstanding at a time: RequestCall, then
// Read, then Finish (possibly started on the writer's thread, once the
// reply is durable).
class CallReactor {
 public:
  CallReactor(CallQueues& queues, grpc::ServerCompletionQueue* cq) : queues_(queues), cq_(cq), stream_(&ctx_) {
    queues_.live.fetch_add(1);
    queues_.generic.RequestCall(&ctx_, &stream_, cq_, cq_, this);
  }

  // The completion of the outstanding operation.
  void proceed(bool ok) {
    switch (state_) {
      case State::kRequested:
        if (!ok) {  // the server is shutting down: no call came
          done();
          return;
        }
        new CallReactor(queues_, cq_);  // wait for the next call on this queue
        started_ = SteadyClock::now();
        start();
        return;
      case State::kReading:
        if (!ok) {
          // No message: the client went away, or gRPC refused it (over
          // kMaxRequestBytes: the client already has RESOURCE_EXHAUSTED).
          service().refuse(method_->name, ctx_.peer(), "no request message (larger than the limit, or cancelled)");
          service().record(method_->name, grpc::StatusCode::RESOURCE_EXHAUSTED, started_);
          Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "expected one request message"));
          return;
        }
        // Nothing of `this` may be touched after dispatch: the reply may be
        // sent (and the call deleted) on another thread at any moment.
        method_->dispatch(service(), this);
        return;
      case State::kFinishing:
        done();
        return;
    }
  }

  template <class Req>
  bool parse(Req* req) {
    grpc::ProtoBufferReader reader(&request_);
    const bool ok = req->ParseFromZeroCopyStream(&reader);
    request_.Clear();
    if (!ok) {
      service().record(method_->name, grpc::StatusCode::INVALID_ARGUMENT, started_);
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
    state_ = State::kFinishing;
    stream_.WriteAndFinish(reply_, grpc::WriteOptions(), grpc::Status::OK, this);
  }

  const Method& method() const { return *method_; }
  SteadyClock::time_point started() const { return started_; }

 private:
  enum class State { kRequested, kReading, kFinishing };

  CoordinatorService& service() { return queues_.service; }

  // Steps 1-3 of service.h: method, token, then read the message.
  void start() {
    auto m = queues_.methods.find(ctx_.method());
    if (m == queues_.methods.end()) {
      service().refuse("(unknown method)", ctx_.peer(), "no method '" + log_escape(ctx_.method(), 128) + "'");
      service().record("(unknown method)", grpc::StatusCode::UNIMPLEMENTED, started_);
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "unknown method"));
      return;
    }
    method_ = &m->second;
    const auto& md = ctx_.client_metadata();
    auto auth = md.find("authorization");
    const grpc::Status access =
        service().authenticate(method_->name, auth == md.end() ? nullptr : &auth->second, ctx_.peer());
    if (!access.ok()) {
      service().record(method_->name, access.error_code(), started_);
      Finish(access);
      return;
    }
    state_ = State::kReading;
    stream_.Read(&request_, this);
  }

  void Finish(const grpc::Status& st) {
    state_ = State::kFinishing;
    stream_.Finish(st, this);
  }

  void done() {
    queues_.live.fetch_sub(1);
    delete this;
  }

  CallQueues& queues_;
  grpc::ServerCompletionQueue* cq_;
  grpc::GenericServerContext ctx_;
  grpc::GenericServerAsyncReaderWriter stream_;
  State state_ = State::kRequested;
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

}  // namespace

CoordinatorServer::CoordinatorServer(const ServerOptions& options) {
  // gRPC locks absl::Mutex on every call; Debian's absl keeps a global
  // deadlock-detection graph for each lock (measured: ~12% of the
  // coordinator's CPU under load). Detection is a debugging aid: off.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  store_ = std::make_unique<Store>(options.state_db);
  service_ = std::make_unique<CoordinatorService>(options, store_.get());
  queues_ = std::make_unique<CallQueues>(*service_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, server_credentials(options.tls_cert, options.tls_key, options.tls_client_ca),
                           &port_);
  builder.RegisterAsyncGenericService(&queues_->generic);
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  // No BDP pings: they size HTTP/2 windows for bulk transfers; every call
  // here is small, and each ping is one more timer, write and read per call
  // (measured: ~15% of the coordinator's CPU at 1,250 hosts).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  for (int i = 0; i < kRpcThreads; ++i) queues_->cqs.push_back(builder.AddCompletionQueue());
  server_ = builder.BuildAndStart();
  CNX_CHECK(server_ != nullptr && port_ > 0, "coordinator.listen: cannot listen on '", options.listen,
            "' (address in use or invalid?)");
  for (auto& cq : queues_->cqs) {
    // A few calls waiting per queue, so a burst of new calls need not wait for RequestCall.
    for (int i = 0; i < 4; ++i) new CallReactor(*queues_, cq.get());
    queues_->threads.emplace_back([q = cq.get()] {
      pthread_setname_np(pthread_self(), "cnx-rpc");
      void* tag = nullptr;
      bool ok = false;
      while (q->Next(&tag, &ok)) static_cast<CallReactor*>(tag)->proceed(ok);
    });
  }
}

CoordinatorServer::~CoordinatorServer() {
  shutdown();
}

void CoordinatorServer::shutdown() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  // A call whose reply waits for durability is finished by the writer's
  // thread: the queues must stay open until every call is done (the
  // writer answers every waiter, with an error if the database failed).
  while (queues_->live.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (auto& cq : queues_->cqs) cq->Shutdown();
  for (auto& t : queues_->threads) t.join();
  server_->Wait();
  server_.reset();
}

}  // namespace cnx::coordinator
