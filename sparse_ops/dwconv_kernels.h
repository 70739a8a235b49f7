#pragma once
// Kernels of the submanifold depthwise convolution (internal; use dwconv.h).
//
// Contract shared by the cpu/, cuda/ and generic/ implementations: contiguous
// tensors on one device; `map` int32 [M, K] (neighbour_map, -1 = no site);
// `w` [K, C]. The cpu and cuda versions take float or double only and need no
// atomics; every version's result is independent of the thread count. The
// cpu weight gradient sums blocks of rows in the dtype and the blocks in double.
#include <ATen/ATen.h>

#include <tuple>

namespace cnx::sparse_ops::detail {

// out[i, c] = bias[c] + sum_t w[t, c] * in[map[i, t], c], taps summed in
// order t = 0..K-1 after the bias. bias may be undefined. Returns [M, C].
at::Tensor dwconv_forward_cpu(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w, const at::Tensor& bias);
at::Tensor dwconv_forward_generic(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                                  const at::Tensor& bias);

// (dw [K, C], dbias [C]) of grad_out [M, C]:
// dw[t, c] = sum_i grad_out[i, c] * in[map[i, t], c], dbias[c] = sum_i grad_out[i, c].
std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cpu(const at::Tensor& grad_out, const at::Tensor& in,
                                                          const at::Tensor& map);
std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_generic(const at::Tensor& grad_out, const at::Tensor& in,
                                                              const at::Tensor& map);

#ifdef CNX_SPARSE_CUDA_KERNELS
at::Tensor dwconv_forward_cuda(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                               const at::Tensor& bias);
std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cuda(const at::Tensor& grad_out, const at::Tensor& in,
                                                           const at::Tensor& map);
#endif

}  // namespace cnx::sparse_ops::detail
