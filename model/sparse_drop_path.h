#pragma once
// Stochastic depth (per-sample drop path) on a sparse tensor (sparse_ops/layout.h):
// the same semantics as layers.h's drop_path on a dense N,C,H,W branch, with
// the sample of each row taken from the layout's offsets.
#include <ATen/ATen.h>

namespace cnx::model {

// features: [M, C], rows of sample n are [offsets[n], offsets[n+1]); offsets:
// int64 [N+1] on the features' device. Each sample's rows are zeroed with
// probability p and kept ones scaled by 1/(1-p); p in [0, 1), p == 0 returns
// `features`. Draws one Bernoulli value per sample (N of them, in sample
// order) from the global generator, exactly as drop_path does for an N-sample
// dense tensor, so a CPU run seeded alike drops the same samples as the dense
// model. Differentiable in `features` (the mask is a constant).
at::Tensor sparse_drop_path(const at::Tensor& features, const at::Tensor& offsets, double p);

}  // namespace cnx::model
