#pragma once
// The worker's coordinator connection as cnx-worker sees it, behind one
// interface. Which implementation a build has is CMake's choice
// (CNX_WITH_COORDINATOR): coordinator_session.cc (registration, heartbeats,
// shard leases and checkpoint commits over gRPC, worker/coordinator_link.h)
// or coordinator_session_none.cc (the GPU machine's flavour, built without
// gRPC: --coordinator is a usage error that names the flag, and the worker
// trains as it does without a coordinator: shards split statically across
// the ranks, checkpoints committed locally).
#include <functional>
#include <memory>
#include <string>

#include "worker/coordinator_link.h"  // LinkOptions (the header is free of gRPC)

namespace cnx {
struct Config;
namespace comm {
class Communicator;
}
}  // namespace cnx

namespace cnx::worker {

class ControlPlane;

// A registered rank's connection. Thread-safety as CoordinatorLink's.
class CoordinatorSession {
 public:
  virtual ~CoordinatorSession() = default;
  // The trainer's control plane (checkpoint plans, abort, drain, progress).
  virtual ControlPlane& control() = 0;
  // Shard leases (LeaseSource).
  virtual LeaseClient& leases() = 0;
  // Why the coordinator ordered an abort.
  virtual std::string reason() const = 0;
  // Final status, best effort (errors are logged, not thrown).
  virtual void report_finished() = 0;
  virtual void report_failed(const std::string& message) = 0;
};

// Whether this build has the coordinator link (CNX_WITH_COORDINATOR).
bool coordinator_link_built();

// Where and as whom to reach the coordinator at `target` (HOST:PORT), from
// coordinator.* of the config. Throws cnx::ConfigError naming the key, or
// --coordinator in a build without the link.
LinkOptions coordinator_options(const Config& config, const std::string& target);

struct CoordinatorJoin {
  std::unique_ptr<CoordinatorSession> session;
  std::string resume_how;   // --resume resolved against the last committed checkpoint
  bool lease_mode = false;  // shard data from the coordinator's leases
};

// Registers this rank (`options.host` advertised) and waits until every rank
// of the launch did; resolves `resume_how` ("auto" = the coordinator's last
// committed checkpoint); arms the abort watchdog, which calls `on_stuck`
// when a rank blocked in a collective cannot reach the step where an ABORT
// is handled; starts heartbeats. Throws cnx::ConfigError when --resume
// contradicts the coordinator's record, other exceptions when it cannot be
// reached.
CoordinatorJoin join_coordinator(const LinkOptions& options, const Config& config, bool synthetic,
                                 std::string resume_how, comm::Communicator& comm,
                                 std::function<void(const std::string& why)> on_stuck);

}  // namespace cnx::worker
