// cnx-worker: one rank of data-parallel FCMAE pretraining. See worker/cli.h.
#include "common/blas_info.h"
#include "common/cli.h"
#include "model/onednn_matmul.h"
#include "worker/cli.h"

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-worker", argc, argv);
  cnx::model::log_gemm_path("cnx-worker");
  return cnx::cli::run_guarded("cnx-worker", [&] {
    cnx::worker::WorkerArgs args;
    const int rc = cnx::worker::parse_worker_args(argc, argv, &args);
    if (rc >= 0) return rc;
    return cnx::worker::run_worker(args);
  });
}
