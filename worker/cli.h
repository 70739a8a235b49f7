#pragma once
// The cnx-worker program: argument parsing and the run, as a library
// function so that tests can drive it in-process.
//
//   cnx-worker --config C [--set k=v ...] [--resume auto|none|PATH]
//              [--threads N] [--max-steps N] [--synthetic [--synthetic-samples N]]
//              [--coordinator HOST:PORT]
//
// Exit codes (also printed by --help):
//   0  training completed (total steps reached)
//   1  other error (I/O, data, communication, corrupt checkpoint)
//   2  usage or configuration error
//   3  preempted (SIGTERM/SIGINT): checkpoint written, resume with --resume auto
//   4  aborted by the coordinator, or the coordinator was unreachable for
//      coordinator.unreachable_s while training (resume with --resume auto)
//   5  stopped on non-finite loss (train.nonfinite = stop, or too many skipped steps)
//   6  a peer rank was lost: a collective did not complete within
//      distributed.peer_timeout_s (host down or unreachable); resume with --resume auto
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
  kExitPreempted = 3,
  kExitAborted = 4,
  kExitNonFinite = 5,
  kExitPeerLost = 6,
};

struct WorkerArgs {
  std::string config;
  std::vector<std::string> overrides;  // --set key=value
  std::string coordinator;             // HOST:PORT or ""
  std::string resume;                  // "" = config's checkpoint.resume
  int64_t threads = -1;                // -1 = config's train.threads
  int64_t max_steps = -1;              // -1 = config's schedule.max_steps
  bool synthetic = false;
  int64_t synthetic_samples = 4096;
};

// Parses argv. Returns -1 to continue, else the exit code to return at once
// (after --help, or kExitConfig for bad usage, with the message printed).
int parse_worker_args(int argc, char** argv, WorkerArgs* args);

// Runs one rank of the job; returns the exit code.
int run_worker(const WorkerArgs& args);

// Intra-op threads: requested > 0 wins; else max(1, cores / local_ranks).
int resolve_threads(int64_t requested, int local_ranks);

}  // namespace cnx::worker
