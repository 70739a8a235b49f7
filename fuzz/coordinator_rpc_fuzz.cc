// Fuzz target: every coordinator RPC from raw bytes, in the server's order
// (coordinator/service.h, "Serving"): the bearer token from the call's
// metadata is checked first, then the request message is parsed, then the
// handler validates it and changes the state, which the DurableWriter
// commits to a real SQLite store (in /dev/shm) before the reply. Only the
// gRPC transport is left out; the method table mirrors server.cc's.
//
// Input: a sequence of calls until the bytes run out, each
//   op (1 byte: method = op % 14, token = op / 14 % 4: none, job, operator,
//       or a fuzzed "authorization" value), clock advance (1 byte, x0.5 s),
//   request bytes (FuzzedDataProvider string, <= 4 KiB).
// A fresh coordinator (empty store, 4 shards) serves each input.
//
// Contract: authentication follows the token rules exactly; a handler
// answers OK or a client error (INVALID_ARGUMENT, FAILED_PRECONDITION,
// NOT_FOUND), never INTERNAL (an unexpected exception) nor a crash; every
// folder retention hands out for deletion lies inside checkpoint.root; and
// whatever the calls did, the durable state restores (Scheduler::restore
// from the store's rows succeeds).
#include <fuzzer/FuzzedDataProvider.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <future>

#include "common/check.h"
#include "coordinator/service.h"
#include "data/shard_index.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace co = cnx::coordinator;
namespace pb = cnx::v1;
namespace fs = std::filesystem;

const std::string kJobToken = "fuzz-job-token-7f3a9c2e51d84b06";
const std::string kOperatorToken = "fuzz-operator-token-c4e81a2f9b7d";

struct Env {
  std::string dir, index_path, ckpt_root;
};

const Env& env() {
  static const Env e = [] {
    Env out;
    out.dir = cnx::fuzz::scratch_dir();
    out.index_path = out.dir + "/index.json";
    out.ckpt_root = out.dir + "/ckpt";
    cnx::data::ShardIndex idx;
    idx.dataset = "fuzz";
    for (int i = 0; i < 4; ++i) {
      cnx::data::ShardInfo s;
      s.name = "train-" + std::to_string(i) + ".tar";
      s.samples = 3 + i;
      s.bytes = 1000;
      s.sha256 = std::string(64, 'a' + i);
      idx.shards.push_back(s);
      idx.total_samples += s.samples;
    }
    cnx::data::save_index(idx, out.index_path);
    return out;
  }();
  return e;
}

co::ServerOptions options(const std::string& db, double* clock) {
  co::ServerOptions o;
  o.token = kJobToken;
  o.operator_token = kOperatorToken;
  o.state_db = db;
  o.shard_index = env().index_path;
  o.scheduler.job_id = "fuzz-job";
  o.scheduler.seed = 5;
  o.scheduler.max_epochs = 4;
  o.scheduler.checkpoint_root = env().ckpt_root;
  o.scheduler.every_steps = 3;
  o.tick_s = 3600;  // the ticker never fires during an input
  o.clock = [clock] { return *clock; };
  return o;
}

const char* const kMethods[] = {"Register",
                                "Heartbeat",
                                "AcquireShard",
                                "ReportShardDone",
                                "ReportCheckpointPart",
                                "RegisterHost",
                                "HostHeartbeat",
                                "AcquireShards",
                                "ReportShardsDone",
                                "ReportCheckpointParts",
                                "LatestCheckpoint",
                                "GetStatus",
                                "RequestCheckpoint",
                                "Drain"};
constexpr int kMethodCount = sizeof(kMethods) / sizeof(kMethods[0]);

// The token rules of service.h, written out independently.
bool may_call(int method, int who) {  // who: 0 none, 1 job, 2 operator
  const std::string m = kMethods[method];
  if (m == "GetStatus" || m == "LatestCheckpoint") return who != 0;
  if (m == "Drain" || m == "RequestCheckpoint") return who == 2;
  return who == 1;
}

template <class Req, class Rep>
grpc::Status call(co::CoordinatorService& s, const char* name, const std::string& bytes,
                  uint64_t (co::CoordinatorService::*handler)(const Req&, Rep*), bool* parsed) {
  Req req;
  *parsed = req.ParseFromString(bytes);
  if (!*parsed) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "cannot parse");
  Rep rep;
  std::promise<grpc::Status> done;
  s.run(
      name, std::chrono::steady_clock::now(), [&] { return (s.*handler)(req, &rep); },
      [&](const grpc::Status& st) { done.set_value(st); });
  return done.get_future().get();
}

// ReportCheckpointPart(s): the folders retention hands out for deletion
// must lie inside checkpoint.root.
template <class Req>
grpc::Status call_parts(co::CoordinatorService& s, const char* name, const std::string& bytes,
                        uint64_t (co::CoordinatorService::*handler)(const Req&, pb::CheckpointPartReply*,
                                                                    std::vector<std::string>*),
                        bool* parsed) {
  Req req;
  *parsed = req.ParseFromString(bytes);
  if (!*parsed) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "cannot parse");
  pb::CheckpointPartReply rep;
  std::vector<std::string> garbage;
  std::promise<grpc::Status> done;
  s.run(
      name, std::chrono::steady_clock::now(), [&] { return (s.*handler)(req, &rep, &garbage); },
      [&](const grpc::Status& st) { done.set_value(st); });
  const grpc::Status st = done.get_future().get();
  const std::string root = env().ckpt_root + "/";
  for (const auto& g : garbage) {
    const std::string norm = fs::path(g).lexically_normal().string();
    FUZZ_REQUIRE(norm.rfind(root, 0) == 0 && norm.size() > root.size(),
                 "retention would delete '" + g + "' outside checkpoint.root");
  }
  return st;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  env();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string db = env().dir + "/state.sqlite";
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db + suffix);
  double clock = 1.7e9;
  FuzzedDataProvider in(data, size);
  {
    co::Store store(db);
    co::CoordinatorService service(options(db, &clock), &store);
    while (in.remaining_bytes() > 0) {
      const uint8_t op = in.ConsumeIntegral<uint8_t>();
      const int method = op % kMethodCount, who = op / kMethodCount % 4;
      clock += 0.5 * in.ConsumeIntegral<uint8_t>();
      std::string auth;
      if (who == 1) auth = "Bearer " + kJobToken;
      if (who == 2) auth = "Bearer " + kOperatorToken;
      if (who == 3) auth = in.ConsumeRandomLengthString(96);
      const std::string bytes = in.ConsumeRandomLengthString(4096);

      const grpc::string_ref auth_ref(auth);
      const grpc::Status access = service.authenticate(kMethods[method], who == 0 ? nullptr : &auth_ref, "fuzz");
      const int role = auth == "Bearer " + kJobToken ? 1 : auth == "Bearer " + kOperatorToken ? 2 : 0;
      FUZZ_REQUIRE(access.ok() == may_call(method, role), std::string("authentication of ") + kMethods[method] +
                                                              " with token kind " + std::to_string(role) + ": " +
                                                              (access.ok() ? "allowed" : "refused"));
      if (!access.ok()) {
        FUZZ_REQUIRE(access.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                         access.error_code() == grpc::StatusCode::PERMISSION_DENIED,
                     "refusal code " + std::to_string(access.error_code()));
        continue;
      }
      using S = co::CoordinatorService;
      bool parsed = false;
      grpc::Status st;
      switch (method) {
        case 0:
          st = call(service, "Register", bytes, &S::Register, &parsed);
          break;
        case 1:
          st = call(service, "Heartbeat", bytes, &S::Heartbeat, &parsed);
          break;
        case 2:
          st = call(service, "AcquireShard", bytes, &S::AcquireShard, &parsed);
          break;
        case 3:
          st = call(service, "ReportShardDone", bytes, &S::ReportShardDone, &parsed);
          break;
        case 4:
          st = call_parts(service, "ReportCheckpointPart", bytes, &S::ReportCheckpointPart, &parsed);
          break;
        case 5:
          st = call(service, "RegisterHost", bytes, &S::RegisterHost, &parsed);
          break;
        case 6:
          st = call(service, "HostHeartbeat", bytes, &S::HostHeartbeat, &parsed);
          break;
        case 7:
          st = call(service, "AcquireShards", bytes, &S::AcquireShards, &parsed);
          break;
        case 8:
          st = call(service, "ReportShardsDone", bytes, &S::ReportShardsDone, &parsed);
          break;
        case 9:
          st = call_parts(service, "ReportCheckpointParts", bytes, &S::ReportCheckpointParts, &parsed);
          break;
        case 10:
          st = call(service, "LatestCheckpoint", bytes, &S::LatestCheckpoint, &parsed);
          break;
        case 11:
          st = call(service, "GetStatus", bytes, &S::GetStatus, &parsed);
          break;
        case 12:
          st = call(service, "RequestCheckpoint", bytes, &S::RequestCheckpoint, &parsed);
          break;
        default:
          st = call(service, "Drain", bytes, &S::Drain, &parsed);
          break;
      }
      if (!parsed) continue;
      const auto code = st.error_code();
      FUZZ_REQUIRE(code == grpc::StatusCode::OK || code == grpc::StatusCode::INVALID_ARGUMENT ||
                       code == grpc::StatusCode::FAILED_PRECONDITION || code == grpc::StatusCode::NOT_FOUND,
                   std::string(kMethods[method]) + " answered " + std::to_string(code) + ": " + st.error_message());
    }
  }
  // The durable state of whatever happened must restore.
  co::Store store(db);
  const auto rows = store.load();
  try {
    const co::ServerOptions o = options(db, &clock);
    co::Scheduler::restore(o.scheduler, cnx::data::load_index(o.shard_index), rows, clock + 1);
  } catch (const cnx::CheckError& e) {
    FUZZ_REQUIRE(false, std::string("the coordinator's own durable state does not restore: ") + e.what());
  }
  return 0;
}
