#pragma once
// Global Response Normalization on a sparse tensor, statistics per sample
// over that sample's active sites only (docs/model.md; not the
// reference's batch-global pooling):
//   G[n,c] = sqrt(sum_{i in n} x[i,c]^2),  Nx = G / (mean_c G[n,:] + eps),
//   out[i,c] = gamma[c] * x[i,c] * Nx[n,c] + beta[c] + x[i,c].
// A sample without active sites contributes nothing. Where G == 0 the
// gradient through the norm is taken as 0 (as torch.norm's backward does).
#include <ATen/ATen.h>

namespace cnx::sparse_ops {

// features: [M, C]; offsets: int64 [N+1] (SparseLayout::offsets, same device);
// gamma, beta: C elements in any shape (the reference stores (1,1,1,C));
// their gradients come back in that shape.
at::Tensor sparse_grn(const at::Tensor& features, const at::Tensor& offsets, const at::Tensor& gamma,
                      const at::Tensor& beta, double eps = 1e-6);

}  // namespace cnx::sparse_ops
