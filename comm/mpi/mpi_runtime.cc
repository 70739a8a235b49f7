#include "comm/mpi/mpi_runtime.h"

#include "common/check.h"

namespace cnx::comm {

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) {
    len = 0;
  }
  int rank = -1;
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  }
  throw CommError(cnx::str(file, ":", line, ": ", call, " failed on rank ", rank, " (code ", code,
                           "): ", std::string(text, static_cast<size_t>(len))));
}

namespace {
std::mutex g_runtime_mu;
std::weak_ptr<MpiRuntime> g_runtime;
bool g_finalized_by_us = false;
}  // namespace

std::shared_ptr<MpiRuntime> MpiRuntime::acquire() {
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  if (auto existing = g_runtime.lock()) {
    return existing;
  }
  int finalized = 0;
  CNX_MPI_CHECK(MPI_Finalized(&finalized));
  if (finalized || g_finalized_by_us) {
    throw CommError(
        "MpiRuntime: MPI was already finalised in this process and cannot be initialised again; "
        "keep one MpiRuntime::acquire() result alive for the whole program");
  }
  int initialized = 0;
  CNX_MPI_CHECK(MPI_Initialized(&initialized));
  bool owns = false;
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    CNX_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    owns = true;
  } else {
    CNX_MPI_CHECK(MPI_Query_thread(&provided));
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    if (owns) {
      MPI_Finalize();
      g_finalized_by_us = true;
    }
    throw CommError(cnx::str("MpiRuntime: the MPI library provides thread level ", provided,
                             " but MPI_THREAD_MULTIPLE (", MPI_THREAD_MULTIPLE,
                             ") is required (one communication thread issues collectives while other threads may call "
                             "MPI); initialise with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...) or use an MPI built "
                             "with thread support"));
  }
  int rank = 0;
  CNX_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  std::shared_ptr<MpiRuntime> runtime(new MpiRuntime(owns, rank));
  g_runtime = runtime;
  return runtime;
}

MpiRuntime::~MpiRuntime() {
  if (!owns_) {
    return;
  }
  std::lock_guard<std::mutex> lock(g_runtime_mu);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    MPI_Finalize();
  }
  g_finalized_by_us = true;
}

}  // namespace cnx::comm
