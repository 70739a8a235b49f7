#pragma once
// The command lines of cnx-eval (linear probe) and cnx-finetune (full
// fine-tune): parse flags, set threads, create the communicator under
// mpirun, run run_eval_job, print the summary line and write the JSON
// (rank 0). Returns the process exit code (0 ok, 1 error, 2 bad flags);
// errors are logged with their message, never thrown.
#include "tools/eval/eval_job.h"

namespace cnx::eval {

int eval_main(int argc, char** argv, EvalMode mode);

}  // namespace cnx::eval
