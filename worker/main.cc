// cnx-worker: one rank of data-parallel FCMAE pretraining. See worker/cli.h.
#include <exception>
#include <iostream>

#include "common/blas_info.h"
#include "worker/cli.h"

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-worker", argc, argv);
  try {
    cnx::worker::WorkerArgs args;
    const int rc = cnx::worker::parse_worker_args(argc, argv, &args);
    if (rc >= 0) return rc;
    return cnx::worker::run_worker(args);
  } catch (const std::exception& e) {
    std::cerr << "cnx-worker: " << e.what() << "\n";
    return cnx::worker::kExitError;
  } catch (...) {
    std::cerr << "cnx-worker: unknown error\n";
    return cnx::worker::kExitError;
  }
}
