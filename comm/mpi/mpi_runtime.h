#pragma once
// MPI initialisation ownership and the MPI return-code check.
//
// Who initialises and finalises MPI:
// * A program may call MPI_Init_thread itself (the tests do, in their main):
//   then MpiRuntime only checks that the thread level is MPI_THREAD_MULTIPLE
//   and never finalises.
// * Otherwise the first MpiRuntime::acquire() calls
//   MPI_Init_thread(MPI_THREAD_MULTIPLE) and the runtime finalises MPI when
//   the last shared_ptr to it is released (every MPI communicator holds one).
//   MPI cannot be initialised twice in a process: acquiring after that
//   finalisation throws CommError. A program that creates communicators
//   repeatedly should hold one acquire() result for its whole lifetime
//   (cnx-worker's main does).
//
// MPI_THREAD_MULTIPLE is required because the communication thread issues
// collectives while other threads may call MPI (e.g. the NCCL bootstrap or a
// benchmark's raw baseline).
#include <mpi.h>

#include <memory>
#include <mutex>
#include <string>

#include "comm/communicator.h"

namespace cnx::comm {

// Turns an MPI error code into a CommError "MPI_Xxx failed on rank r: <MPI's
// text>". Used by CNX_MPI_CHECK; communicators set MPI_ERRORS_RETURN on the
// communicators they own so that codes actually come back.
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);

class MpiRuntime {
 public:
  // Returns the process-wide runtime, initialising MPI if needed.
  static std::shared_ptr<MpiRuntime> acquire();
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  bool owns_mpi() const { return owns_; }
  int world_rank() const { return world_rank_; }

 private:
  explicit MpiRuntime(bool owns, int world_rank) : owns_(owns), world_rank_(world_rank) {}
  bool owns_;
  int world_rank_;
};

}  // namespace cnx::comm

// Checks an MPI return code; on failure throws cnx::comm::CommError with the
// call's text, file, line, rank and MPI's error string.
#define CNX_MPI_CHECK(call)                                                 \
  do {                                                                      \
    int cnx_mpi_rc_ = (call);                                               \
    if (cnx_mpi_rc_ != MPI_SUCCESS) {                                       \
      ::cnx::comm::throw_mpi_error(cnx_mpi_rc_, #call, __FILE__, __LINE__); \
    }                                                                       \
  } while (0)
