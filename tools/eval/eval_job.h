#pragma once
// One evaluation run, as cnx-eval (linear probe) and cnx-finetune (full
// fine-tune) perform it: build the dense ConvNeXt V2, load the encoder (or
// initialise it randomly), read the labelled train/test shards, run the
// protocol, and summarise.
//
// Encoder sources: anything tools/export/fcmae_state.h resolves (checkpoint
// root, step-N folder, FCMAE model.pt, exported .safetensors/.pt in reference
// or timm names). The architecture is inferred from the tensors. The final
// norm and head stay at init when the file has none (encoder-only exports);
// a file's head is never loaded (the class count differs).
//
// Random init (the baseline): "fcmae" draws the encoder exactly as FCMAE
// pretraining initialises it (model/fcmae.h, init reference) — the starting
// point the pretrained encoder came from; "dense" uses the dense model's
// std-0.02 init. Both seeded by `seed`, identical on every rank.
//
// Collective when comm is set: every rank must call run_eval_job with the
// same options; every rank returns the same summary.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "tools/eval/finetune.h"
#include "tools/eval/linear_probe.h"

namespace cnx::eval {

enum class EvalMode { kLinearProbe, kFinetune };

struct EvalJobOptions {
  EvalMode mode = EvalMode::kLinearProbe;
  std::string encoder;  // weights; "" requires random_init
  bool random_init = false;
  std::string init = "fcmae";  // fcmae | dense (random init only)
  std::string model = "atto";  // variant for random init
  std::string train_index, train_shard_root;
  std::string test_index, test_shard_root;
  int64_t max_train = 10000;  // 0 = all
  int64_t max_test = 10000;   // 0 = all
  int64_t input_size = 64;
  int64_t batch_size = 128;        // feature extraction / fine-tune (per rank)
  double drop_path_rate = 0.1;     // fine-tune only
  double head_init_scale = 0.001;  // fine-tune only (the reference's fine-tuning value)
  bool verify_sha256 = true;
  uint64_t seed = 0;
  ProbeOptions probe;
  FinetuneOptions finetune;  // transforms and seed are filled from the fields above
};

struct EvalSummary {
  std::string mode;     // "linear_probe" | "finetune"
  std::string encoder;  // path, or "random-init (fcmae, seed 0)"
  std::string architecture;
  double top1 = 0;
  int64_t n_train = 0, n_test = 0;
  int64_t epochs = 0;
  int64_t num_classes = 0;
  int64_t input_size = 0;
  int64_t failed = 0;  // undecodable samples skipped
  int world_size = 1;
  int threads = 1;
  double seconds = 0;          // whole run (after process start-up)
  double feature_seconds = 0;  // linear probe: feature extraction
  double train_seconds = 0;    // probe head / fine-tune training
  double final_loss = 0;
  uint64_t seed = 0;
};

EvalSummary run_eval_job(const EvalJobOptions& options, comm::Communicator* comm);

// Pretty JSON of the summary (stable key order).
std::string summary_json(const EvalSummary& summary);
// "linear probe top-1 87.31% (test n=2000) | train n=10000, 50 epochs | atto ... | 83.2 s"
std::string summary_line(const EvalSummary& summary);

// A communicator when the process was started by mpirun (Open MPI / PMIx
// environment), else nullptr (a single process needs none).
std::unique_ptr<comm::Communicator> communicator_from_environment();

}  // namespace cnx::eval
