// cnx-worker: one rank of data-parallel FCMAE pretraining. See worker/cli.h.
#include "worker/cli.h"

int main(int argc, char** argv) {
  cnx::worker::WorkerArgs args;
  const int rc = cnx::worker::parse_worker_args(argc, argv, &args);
  if (rc >= 0) return rc;
  return cnx::worker::run_worker(args);
}
