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
// pretraining initialises it (model/fcmae.h, with the pretraining config's
// model.init: `fcmae_init`) — the starting point the pretrained encoder came
// from; "dense" uses the dense model's std-0.02 init. Both seeded by `seed`,
// identical on every rank.
//
// Collective when comm is set: every rank must call run_eval_job with the
// same options; every rank returns the same summary.
#include <array>
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
  std::string init = "fcmae";            // fcmae | dense (random init only)
  std::string fcmae_init = "reference";  // init "fcmae": model.init of the pretraining (reference | std02)
  std::string model = "atto";            // variant for random init
  std::string train_index, train_shard_root;
  std::string test_index, test_shard_root;
  int64_t max_train = 10000;  // 0 = all
  int64_t max_test = 10000;   // 0 = all
  // Fine-tune only: the first `holdout` labelled training samples are held
  // out (never trained on; the training samples are the next max_train) and
  // evaluated after every epoch. 0 = none.
  int64_t holdout = 0;
  int64_t input_size = 64;
  // Evaluation transform (feature extraction, held-out and test top-1):
  // resize the shorter side to input_size / eval_crop_pct (bicubic,
  // antialiased), centre crop, normalise with mean/std. The fine-tune's train
  // transform normalises with the same mean/std.
  double eval_crop_pct = 0.875;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
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
  std::string eval_transform;  // describe_eval_transform() of the transform used
  double eval_crop_pct = 0;
  std::array<float, 3> mean{}, std{};
  int64_t n_holdout = 0;               // fine-tune: held-out samples
  std::vector<double> epoch_loss;      // fine-tune: mean training loss per epoch
  std::vector<double> epoch_holdout;   // fine-tune: held-out top-1 per scored epoch
  std::vector<int64_t> holdout_epoch;  // fine-tune: the epochs (1-based) epoch_holdout scored
  std::vector<double> epoch_seconds;   // fine-tune: wall time at each epoch's end
  std::vector<double> step_loss;       // fine-tune: loss per step
  std::vector<double> step_lr;         // fine-tune: lr per step
};

// "resize 64 (64 / crop_pct 1.000) + centre crop 64, bicubic antialias,
// mean [0.286 0.286 0.286] std [0.353 0.353 0.353]"
std::string describe_eval_transform(const data::TransformOptions& eval_transform);

EvalSummary run_eval_job(const EvalJobOptions& options, comm::Communicator* comm);

// Pretty JSON of the summary (stable key order).
std::string summary_json(const EvalSummary& summary);
// "linear probe top-1 87.31% (test n=2000) | train n=10000, 50 epochs | atto ... | 83.2 s"
std::string summary_line(const EvalSummary& summary);

// A communicator when an MPI launcher started the process
// (comm::launched_by_mpi), else nullptr (a single process needs none).
std::unique_ptr<comm::Communicator> communicator_from_environment();

}  // namespace cnx::eval
