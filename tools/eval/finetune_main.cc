// cnx-finetune: full fine-tuning with layer-wise lr decay (see tools/eval/eval_job.h).
#include "common/blas_info.h"
#include "model/onednn_matmul.h"
#include "tools/eval/eval_cli.h"

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-finetune", argc, argv);
  cnx::model::log_gemm_path("cnx-finetune");
  return cnx::eval::eval_main(argc, argv, cnx::eval::EvalMode::kFinetune);
}
