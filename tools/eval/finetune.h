#pragma once
// Full fine-tuning of a dense ConvNeXt V2 classifier (docs/model.md):
// AdamW with layer-wise lr decay (layer_decay.h), per-step linear warmup then
// half-cosine to min_lr, label-smoothed cross-entropy, RandomResizedCrop +
// flip augmentation, drop path as configured in the model.
//
// Data parallel: each rank trains on its own samples (labelled_data.h's
// round-robin positions), reshuffled every epoch with a seeded permutation;
// every rank runs the same number of steps per epoch (floor of the smallest
// rank's share / batch size; the remainder is dropped and reported).
// Parameters and buffers are broadcast from rank 0 first; gradients are
// averaged with comm::GradSync (bucketed, overlapped with backward). With
// comm == nullptr it trains alone.
//
// Evaluation: top-1 on the test set in eval mode (eval transform), each rank
// its own samples, counts all-reduced; every rank returns the same result.
// With a held-out set (samples taken from the training data, never trained
// on), its top-1 is measured the same way after every epoch: the number to
// choose a recipe by, where the test set must not be looked at.
//
// The forward passes (training and evaluation) run through
// model::dense_kernels(), the process-wide kernel set (dense_kernels.h).
// Per step the loop reads: batch (decode + train transform), zero grads,
// forward, smoothed cross-entropy, backward (+ overlapped gradient sync),
// optional clipping, AdamW at the schedule's lr for this step, then the
// loss averaged over ranks. `on_step` (if set) sees each step's record on
// every rank, after the optimizer step.
//
// Threading: everything on the calling thread (GradSync hooks on autograd's).
#include <cstdint>
#include <functional>
#include <vector>

#include "comm/communicator.h"
#include "model/convnextv2.h"
#include "tools/eval/labelled_data.h"

namespace cnx::eval {

// What one training step did, as on_step sees it.
struct StepRecord {
  int64_t epoch = 0;
  int64_t step = 0;                     // global step, from 0
  double lr = 0;                        // lr of this step (each layer group uses lr * its scale)
  double loss = 0;                      // this rank's batch loss
  double mean_loss = 0;                 // averaged over ranks
  const DecodedBatch* batch = nullptr;  // this rank's decoded batch (valid during the call)
};

struct FinetuneOptions {
  int64_t epochs = 2;
  int64_t batch_size = 32;  // per rank
  double blr = 5e-4;        // lr = blr * global_batch / 256 unless lr > 0 (the reference's default blr)
  double lr = 0.0;
  double min_lr = 1e-6;
  double warmup_epochs = 0.2;
  double layer_decay = 0.9;
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.999;
  double label_smoothing = 0.1;
  double clip_grad = 0.0;
  data::TransformOptions train_transform;  // train = true
  data::TransformOptions eval_transform;   // train = false
  int64_t eval_batch_size = 128;
  // Score the held-out set after every Nth epoch and after the last (0 = after
  // the last only: one pass instead of `epochs`).
  int64_t holdout_every = 1;
  int64_t log_every = 20;  // progress line every N steps (rank 0); 0 = none
  uint64_t seed = 0;
  std::function<void(const StepRecord&)> on_step;  // optional, called on every rank
};

struct FinetuneResult {
  double top1 = 0;
  int64_t n_train = 0;  // samples trained on per epoch (all ranks)
  int64_t n_test = 0;   // test samples evaluated (all ranks)
  int64_t steps = 0;
  int64_t failed = 0;  // samples that could not be decoded (all ranks, train + test)
  double peak_lr = 0;
  std::vector<double> epoch_loss;      // mean training loss per epoch (over ranks)
  std::vector<double> epoch_holdout;   // held-out top-1 after each scored epoch (empty without a held-out set)
  std::vector<int64_t> holdout_epoch;  // the epochs (1-based) after which epoch_holdout was scored
  std::vector<double> epoch_seconds;   // wall time at the end of each epoch (training + held-out eval)
  std::vector<double> step_loss;       // loss of every step (averaged over ranks)
  std::vector<double> step_lr;         // lr of every step
  int64_t n_holdout = 0;               // held-out samples evaluated (all ranks)
};

// Label-smoothed cross-entropy, mean over rows: (1-s) * NLL + s * mean(-log p).
at::Tensor smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double smoothing);

// Top-1 of `net` on `test` (collective with comm); sets *n_test and *failed.
double evaluate_top1(model::ConvNeXtV2Impl& net, const LabelledSet& test, const data::TransformOptions& transform,
                     int64_t batch_size, comm::Communicator* comm, int64_t* n_test, int64_t* failed);

// `holdout` may be nullptr (no per-epoch held-out evaluation).
FinetuneResult finetune(model::ConvNeXtV2Impl& net, const LabelledSet& train, const LabelledSet& test,
                        const FinetuneOptions& options, comm::Communicator* comm, const LabelledSet* holdout = nullptr);

}  // namespace cnx::eval
