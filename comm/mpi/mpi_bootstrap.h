#pragma once
// Bootstrap over MPI (processes launched by mpirun, MPI built in): the blob
// exchange runs on an MpiCommunicator's communication thread.
#include <memory>

#include "comm/mpi/mpi_runtime.h"
#include "comm/rendezvous.h"

namespace cnx::comm {

std::unique_ptr<Bootstrap> make_mpi_bootstrap(std::shared_ptr<MpiRuntime> runtime);

}  // namespace cnx::comm
