#pragma once
// The cnx-worker program: argument parsing and the run, as a library
// function so that tests can drive it in-process.
//
//   cnx-worker --config C [--set k=v ...] [--resume auto|none|PATH]
//              [--threads N] [--max-steps N] [--synthetic [--synthetic-samples N]]
//              [--coordinator HOST:PORT [--token-file F] [--tls-ca F [--tls-cert F --tls-key F]]]
//
// Exit codes (also printed by --help):
//   0  training completed (total steps reached)
//   1  other error (I/O, data, communication, corrupt checkpoint)
//   2  usage or configuration error
//   5  stopped on non-finite loss (train.nonfinite = stop, or too many skipped steps)
//   203  preempted (SIGTERM/SIGINT): checkpoint written, resume with --resume auto
//   204  aborted by the coordinator, or the coordinator was unreachable for
//        coordinator.unreachable_s while training (resume with --resume auto)
//   206  a peer rank was lost: a collective did not complete within
//        distributed.peer_timeout_s (host down or unreachable); resume with --resume auto
// Retryable outcomes (a relaunch with --resume auto carries on) lie in
// 128-255, the range Kubeflow's ExitCode restart policy retries; the others
// (1-127) are permanent there. They are 200 + the old code: above 128 + any
// signal number (129-192: a shell or runtime reports a death by signal N as
// 128 + N, e.g. 137 for SIGKILL, 143 for SIGTERM), so a code never reads as a
// signal, and below 255 (ssh's own failure code). docs/operations.md has the
// table; tests/deploy/exit_codes_test.cc checks it against these values.
// With more than one rank an error on one rank ends the whole job with its code
// (Communicator::abort) instead of leaving the others hanging in a collective.
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::worker {

enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,
  kExitConfig = 2,
  kExitNonFinite = 5,
  kExitPreempted = 203,
  kExitAborted = 204,
  kExitPeerLost = 206,
};

struct WorkerArgs {
  std::string config;
  std::vector<std::string> overrides;     // --set key=value
  std::string coordinator;                // HOST:PORT or ""
  std::string token_file;                 // "" = config's coordinator.token_file / token_env
  std::string tls_ca, tls_cert, tls_key;  // "" = config's coordinator.tls_ca / tls_client_cert / tls_client_key
  std::string resume;                     // "" = config's checkpoint.resume
  int64_t threads = -1;                   // -1 = config's train.threads
  int64_t max_steps = -1;                 // -1 = config's schedule.max_steps
  bool synthetic = false;
  int64_t synthetic_samples = 4096;
};

// Parses argv (common/cli.h). Returns -1 to continue, else the exit code to
// return at once (0 after --help or --version, kExitConfig for bad usage,
// with the message printed).
int parse_worker_args(int argc, char** argv, WorkerArgs* args);

// Runs one rank of the job; returns the exit code.
int run_worker(const WorkerArgs& args);

// Intra-op threads: requested > 0 wins; else max(1, cores / local_ranks).
int resolve_threads(int64_t requested, int local_ranks);

}  // namespace cnx::worker
