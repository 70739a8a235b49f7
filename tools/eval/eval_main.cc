// cnx-eval: linear probe of an encoder (see tools/eval/eval_job.h).
#include "common/blas_info.h"
#include "model/onednn_matmul.h"
#include "tools/eval/eval_cli.h"

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-eval", argc, argv);
  cnx::model::log_gemm_path("cnx-eval");
  return cnx::eval::eval_main(argc, argv, cnx::eval::EvalMode::kLinearProbe);
}
