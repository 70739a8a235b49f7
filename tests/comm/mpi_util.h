#pragma once
// The MPI communicator of a test run under mpirun (label mpi).
#include <memory>

#include "comm/communicator.h"

namespace cnx::comm::testing {

inline std::unique_ptr<Communicator> make_mpi() {
  CommOptions options;
  options.backend = "mpi";
  return make_communicator(options);
}

}  // namespace cnx::comm::testing
