// The only place that knows which communicator backends exist.
#include <ATen/ATen.h>

#include "comm/communicator.h"
#include "common/check.h"

#if CNX_COMM_HAVE_MPI
#include "comm/mpi/mpi_communicator.h"
#endif
#if CNX_COMM_HAVE_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace cnx::comm {

std::vector<std::string> available_backends() {
  std::vector<std::string> names;
#if CNX_COMM_HAVE_MPI
  names.push_back("mpi");
#endif
#if CNX_COMM_HAVE_NCCL
  names.push_back("nccl");
#endif
  return names;
}

std::unique_ptr<Communicator> make_communicator(const CommOptions& options) {
  const std::string& name = options.backend;
  if (name != "auto" && name != "mpi" && name != "nccl") {
    throw CommError(cnx::str("communicator backend '", name,
                             "' is unknown; expected one of auto, mpi, nccl"));
  }
  std::string chosen = name;
  if (name == "auto") {
#if CNX_COMM_HAVE_NCCL
    chosen = at::hasCUDA() ? "nccl" : "mpi";
#else
    chosen = "mpi";
#endif
  }
  if (chosen == "nccl") {
#if CNX_COMM_HAVE_NCCL
    if (!at::hasCUDA()) {
      throw CommError("communicator backend 'nccl' needs a CUDA device, but none is available");
    }
    return std::make_unique<NcclCommunicator>(MpiRuntime::acquire(), options.device);
#else
    throw CommError(
        "communicator backend 'nccl' is not built in: configure with -DCNX_WITH_NCCL=ON (needs "
        "CUDA LibTorch, nccl.h/libnccl and MPI); use backend 'mpi' for CPU tensors");
#endif
  }
#if CNX_COMM_HAVE_MPI
  return std::make_unique<MpiCommunicator>(MpiRuntime::acquire(), MPI_COMM_WORLD,
                                           options.overlap ? MpiWaitMode::kPolled : MpiWaitMode::kBlocking);
#else
  throw CommError(cnx::str(
      "communicator backend '", name,
      "' needs MPI, but cnx_comm was built without it (CMake did not find MPI; install "
      "libopenmpi-dev and reconfigure)"));
#endif
}

}  // namespace cnx::comm
