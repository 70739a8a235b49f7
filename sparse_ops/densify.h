#pragma once
// Conversions between a sparse tensor (layout.h) and a dense N,C,H,W one.
#include <ATen/ATen.h>

#include "sparse_ops/layout.h"

namespace cnx::sparse_ops {

// [M, C] -> (N, C, H, W), zeros at inactive positions. The result is a
// channels-last strided tensor. Differentiable (backward gathers the rows).
at::Tensor densify(const at::Tensor& features, const SparseLayout& layout);

// (N, C, H, W) -> [M, C]: the values at the layout's active sites.
// Differentiable (plain LibTorch ops).
at::Tensor sparsify(const at::Tensor& dense, const SparseLayout& layout);

}  // namespace cnx::sparse_ops
