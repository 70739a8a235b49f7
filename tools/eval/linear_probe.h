#pragma once
// Linear probing of a frozen encoder.
//
// Features: the dense ConvNeXt V2's forward_features (global average pool of
// the last stage, then the final LayerNorm) in eval mode without autograd.
// An FCMAE encoder has no trained final norm; it stays at its init (weight 1,
// bias 0), i.e. a plain standardisation over channels.
//
// Head: MAE's linear probe puts BatchNorm1d(affine=False) before the Linear
// layer; we use its fixed-statistics form: features are standardised with
// the mean and (biased) variance of the whole training set (eps 1e-6), the
// same statistics then applied to the test set. The Linear head (weight
// trunc-normal std 0.01 as MAE, bias 0) is trained with AdamW (betas 0.9,
// 0.999; weight decay on the weight only) and a cosine lr schedule over
// cached features, mini-batches drawn by a seeded permutation each epoch.
// Deterministic for a given (features, options).
//
// Data parallel: each rank extracts the features of its own samples
// (labelled_data.h assigns positions round-robin); extract_features then
// all-reduces them into one position-ordered matrix on every rank. The head
// is trained identically on every rank from the same matrix (it costs
// milliseconds; communicating per step would cost more), so all ranks report
// the same numbers.
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "comm/communicator.h"
#include "model/convnextv2.h"
#include "tools/eval/labelled_data.h"

namespace cnx::eval {

struct Features {
  at::Tensor x;        // float [n, C], rows in position order
  at::Tensor labels;   // int64 [n]
  int64_t failed = 0;  // samples that could not be decoded (all ranks)
};

// forward_features of every sample of `set` (eval transform `transform`),
// batch_size at a time, through model::dense_kernels() (dense_kernels.h); with comm, gathered over all ranks
// (collective).
Features extract_features(model::ConvNeXtV2Impl& net, const LabelledSet& set, const data::TransformOptions& transform,
                          int64_t batch_size, comm::Communicator* comm);

struct ProbeOptions {
  int64_t epochs = 50;
  int64_t batch_size = 256;
  double lr = 1e-3;
  double weight_decay = 1e-4;
  double warmup_epochs = 2;
  bool standardize = true;
  uint64_t seed = 0;
};

struct LinearProbe {
  at::Tensor mean;        // [C] (zeros when not standardising)
  at::Tensor inv_std;     // [C] (ones when not standardising)
  at::Tensor weight;      // [K, C]
  at::Tensor bias;        // [K]
  double final_loss = 0;  // mean training cross-entropy of the last epoch

  at::Tensor logits(const at::Tensor& x) const;
};

// Trains the head on features x [n, C] and labels y [n] in [0, num_classes).
LinearProbe train_linear_probe(const at::Tensor& x, const at::Tensor& y, int64_t num_classes,
                               const ProbeOptions& options);

// Fraction of rows whose argmax logit equals the label (0 for no rows).
double top1_accuracy(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace cnx::eval
