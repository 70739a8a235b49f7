// A build without the coordinator link (CNX_WITH_COORDINATOR=OFF: no gRPC,
// the GPU machine's flavour). The worker trains without a coordinator:
// shards split statically across the ranks, checkpoints committed locally.
#include "common/config.h"
#include "worker/coordinator_session.h"

namespace cnx::worker {
namespace {

[[noreturn]] void no_link() {
  throw ConfigError(
      "--coordinator: this cnx-worker was built without the coordinator link (CMake -DCNX_WITH_COORDINATOR=OFF, "
      "no gRPC); leave --coordinator out (shards are then split statically across the ranks and checkpoints "
      "committed locally), or use a build configured with -DCNX_WITH_COORDINATOR=ON");
}

}  // namespace

bool coordinator_link_built() {
  return false;
}

LinkOptions coordinator_options(const Config&, const std::string&) {
  no_link();
}

CoordinatorJoin join_coordinator(const LinkOptions&, const Config&, bool, std::string, comm::Communicator&,
                                 std::function<void(const std::string&)>) {
  no_link();
}

}  // namespace cnx::worker
