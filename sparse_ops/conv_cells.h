#pragma once
// Convolutions whose kernel equals their stride (the ConvNeXt stem, k = 4,
// and downsample layers, k = 2) evaluated only at active output sites: each
// output site gathers its k x k input cell (im2col of active cells only), then
// one GEMM with the reshaped weight. Cells never overlap, so the backward
// scatters without atomics. Differentiable in every floating input. The GEMM
// follows autocast (under autocast its output has the reduced dtype; the
// backward runs in the input's dtype).
#include <ATen/ATen.h>

#include "sparse_ops/layout.h"

namespace cnx::sparse_ops {

// Sparse -> sparse: features [M_in, Cin] of the fine layout; map =
// cell_map(fine, coarse, k), int32 [M_out, k*k]; weight (Cout, Cin, k, k),
// bias (Cout) or undefined. Inactive inputs of a cell count as zero.
// Returns [M_out, Cout] in the coarse layout's order.
at::Tensor sparse_downsample_conv(const at::Tensor& features, const at::Tensor& map, const at::Tensor& weight,
                                  const at::Tensor& bias);

// Dense image -> sparse: image (N, Cin, H, W); out_layout at resolution
// (H/k, W/k) with k = weight.size(2) (= stride); weight (Cout, Cin, k, k),
// bias (Cout) or undefined. Returns [M, Cout]: Conv2d(k, stride k) at the
// layout's sites.
at::Tensor sparse_stem_conv(const at::Tensor& image, const SparseLayout& out_layout, const at::Tensor& weight,
                            const at::Tensor& bias);

}  // namespace cnx::sparse_ops
