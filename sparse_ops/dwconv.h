#pragma once
// Submanifold depthwise k x k convolution on a sparse tensor (layout.h):
// outputs exist exactly at the input's active sites, inactive neighbours
// contribute zero. Equal, at active sites, to a dense depthwise Conv2d
// (padding k/2, groups C) applied to the densified input.
//
// Differentiable (torch::autograd::Function): gradients for features,
// weight and bias. The input gradient reuses the forward kernel with the
// mirrored kernel over the same (symmetric) neighbour map, so it needs no
// atomics; the weight gradient sums per-chunk partials in a fixed order.
#include <ATen/ATen.h>

namespace cnx::sparse_ops {

// Mixed precision: under autocast float32 features are cast to autocast's
// dtype first (a convolution, as Conv2d under autocast); float16/bfloat16
// features on CPU run the float32 kernels between casts (op_util.h).
//
// features: [M, C] float32/float64/float16/bfloat16, rows in the layout's order.
// map: neighbour_map(layout, k), int32 [M, k*k], same device.
// weight: (C, 1, k, k) as stored by a depthwise torch Conv2d; bias: (C) or undefined.
// Returns [M, C].
at::Tensor sparse_depthwise_conv(const at::Tensor& features, const at::Tensor& map, const at::Tensor& weight,
                                 const at::Tensor& bias);

}  // namespace cnx::sparse_ops
