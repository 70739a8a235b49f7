// The only place that knows which communicator backends (and bootstraps)
// exist.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>

#include "comm/communicator.h"
#include "comm/rendezvous.h"
#include "common/check.h"

#if CNX_COMM_HAVE_MPI
#include "comm/mpi/mpi_bootstrap.h"
#include "comm/mpi/mpi_communicator.h"
#endif
#if CNX_COMM_HAVE_NCCL
#include "comm/nccl/nccl_communicator.h"
#endif

namespace cnx::comm {

bool launched_by_mpi() {
  // Open MPI's mpirun, PMIx servers (Slurm, Open MPI 5) and PMI-1/2 launchers.
  return std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMIX_RANK") || std::getenv("PMI_SIZE");
}

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

std::string resolve_backend(const std::string& requested, at::DeviceType tensors,
                            const std::vector<std::string>& built) {
  if (requested != "auto" && requested != "mpi" && requested != "nccl") {
    throw CommError(cnx::str("communicator backend '", requested, "' is unknown; expected one of auto, mpi, nccl"));
  }
  if (tensors != at::kCPU && tensors != at::kCUDA) {
    throw CommError(cnx::str("communicator: no backend reduces ", c10::DeviceTypeName(tensors, /*lower_case=*/true),
                             " tensors (mpi: cpu, nccl: cuda)"));
  }
  const auto has = [&](const char* name) { return std::find(built.begin(), built.end(), name) != built.end(); };
  const std::string chosen = requested != "auto" ? requested : (tensors == at::kCUDA ? "nccl" : "mpi");
  if (chosen == "nccl" && !has("nccl")) {
    throw CommError(cnx::str(
        "communicator backend 'nccl' is not built in", requested == "auto" ? " (auto: the model is on cuda)" : "",
        ": configure with -DCNX_WITH_NCCL=ON (needs CUDA LibTorch and nccl.h/libnccl, e.g. the nvidia-nccl pip "
        "package); or train on the CPU with backend 'mpi'"));
  }
  if (chosen == "mpi" && !has("mpi")) {
    throw CommError(cnx::str("communicator backend '", requested,
                             "' needs MPI, but cnx_comm was built without it (CMake did not find MPI; install "
                             "libopenmpi-dev and reconfigure)"));
  }
  if (chosen == "nccl" && tensors != at::kCUDA) {
    throw CommError(
        "communicator backend 'nccl' reduces CUDA tensors, but the model's tensors are on the cpu (train.device); "
        "use backend 'mpi' or 'auto', or put the model on the GPU");
  }
  if (chosen == "mpi" && tensors != at::kCPU) {
    throw CommError(
        "communicator backend 'mpi' reduces CPU tensors, but the model's tensors are on cuda (train.device); use "
        "backend 'nccl' or 'auto'");
  }
  return chosen;
}

std::unique_ptr<Bootstrap> make_bootstrap(const RendezvousEnv& env) {
  if (auto store = make_store_from_env(env)) {
    return make_store_bootstrap(std::move(store), env);
  }
  if (env.world_size == 1) {
    return make_single_bootstrap();
  }
#if CNX_COMM_HAVE_MPI
  return make_mpi_bootstrap(MpiRuntime::acquire());
#else
  throw CommError(cnx::str("rendezvous: ", env.world_size, " ranks (from ", env.source,
                           ") but no way to reach them: set CNX_MASTER_ADDR and CNX_MASTER_PORT (rank 0 serves a TCP "
                           "store there) or CNX_STORE_DIR (a folder every rank shares); this build has no MPI"));
#endif
}

std::unique_ptr<Communicator> make_communicator(const CommOptions& options) {
  const std::string chosen = resolve_backend(options.backend, options.device_type, available_backends());
  if (chosen == "nccl") {
#if CNX_COMM_HAVE_NCCL
    if (!at::hasCUDA()) {
      throw CommError("communicator backend 'nccl' needs a CUDA device, but none is available");
    }
    NcclOptions nccl;
    nccl.device = options.device;
    nccl.timeout_s = options.timeout_s;
    return std::make_unique<NcclCommunicator>(make_bootstrap(read_rendezvous_env()), nccl);
#endif
  }
#if CNX_COMM_HAVE_MPI
  return std::make_unique<MpiCommunicator>(MpiRuntime::acquire(), MPI_COMM_WORLD,
                                           options.overlap ? MpiWaitMode::kPolled : MpiWaitMode::kBlocking);
#else
  throw CommError(cnx::str("communicator backend '", chosen, "' is not built in"));
#endif
}

}  // namespace cnx::comm
