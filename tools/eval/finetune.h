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
//
// Threading: everything on the calling thread (GradSync hooks on autograd's).
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "model/convnextv2.h"
#include "tools/eval/labelled_data.h"

namespace cnx::eval {

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
  int64_t log_every = 20;  // progress line every N steps (rank 0); 0 = none
  uint64_t seed = 0;
};

struct FinetuneResult {
  double top1 = 0;
  int64_t n_train = 0;  // samples trained on per epoch (all ranks)
  int64_t n_test = 0;   // test samples evaluated (all ranks)
  int64_t steps = 0;
  int64_t failed = 0;  // samples that could not be decoded (all ranks, train + test)
  double peak_lr = 0;
  std::vector<double> epoch_loss;  // mean training loss per epoch (over ranks)
};

// Label-smoothed cross-entropy, mean over rows: (1-s) * NLL + s * mean(-log p).
at::Tensor smoothed_cross_entropy(const at::Tensor& logits, const at::Tensor& labels, double smoothing);

// Top-1 of `net` on `test` (collective with comm); sets *n_test and *failed.
double evaluate_top1(model::ConvNeXtV2Impl& net, const LabelledSet& test, const data::TransformOptions& transform,
                     int64_t batch_size, comm::Communicator* comm, int64_t* n_test, int64_t* failed);

FinetuneResult finetune(model::ConvNeXtV2Impl& net, const LabelledSet& train, const LabelledSet& test,
                        const FinetuneOptions& options, comm::Communicator* comm);

}  // namespace cnx::eval
