// cnx-eval: linear probe of an encoder (see tools/eval/eval_job.h).
#include "tools/eval/eval_cli.h"

int main(int argc, char** argv) {
  return cnx::eval::eval_main(argc, argv, cnx::eval::EvalMode::kLinearProbe);
}
