#pragma once
// Segment kernels behind the sparse GRN (internal; use grn.h). A segment is
// the rows of one sample: [offsets[n], offsets[n+1]), offsets int64 [N+1].
//
// Contract shared by the cpu/, cuda/ and generic/ implementations: contiguous
// tensors on one device. The cpu and cuda versions take float or double only
// (where the statistics dtype equals the dtype) and need no atomics; every
// version's result is independent of the thread count. The cpu segment sums
// accumulate in double (float features too), so their only rounding is the
// final one; the generic version sums with ATen's (pairwise) reductions.
#include <ATen/ATen.h>

#include <tuple>

namespace cnx::sparse_ops::detail {

// [N, C] in the statistics dtype (acc_dtype of a's dtype): per segment, the
// column sums of a*b, or of a when b is undefined.
at::Tensor segment_dot_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets);
at::Tensor segment_dot_generic(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets);

// [M, C] in x's dtype: out[i, c] = x[i, c]*scale[n, c] (+ y[i, c]*coef[n, c])
// (+ bias[c]), n = segment of row i. scale, coef [N, C] in the statistics
// dtype; y (x's dtype), coef and bias (x's dtype) may be undefined.
at::Tensor segment_affine_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y, const at::Tensor& coef,
                              const at::Tensor& bias, const at::Tensor& offsets);
at::Tensor segment_affine_generic(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y,
                                  const at::Tensor& coef, const at::Tensor& bias, const at::Tensor& offsets);

// Fused CPU GRN (float or double, contiguous): one parallel region over the
// samples, each sample's rows read once for the statistics and once more
// (from cache) for the output; the per-sample statistics in double.
// Forward returns {out [M, C], gx [N, C], denom [N, 1], nx [N, C]} with
// gx = sqrt(sum x^2), denom = mean_c gx + eps, nx = gx / denom.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grn_forward_cpu(const at::Tensor& x,
                                                                           const at::Tensor& offsets,
                                                                           const at::Tensor& gamma,
                                                                           const at::Tensor& beta, double eps);
// Backward from the saved statistics: {dx (undefined unless need_dx),
// dgamma [C], dbeta [C]}; sums over rows in double per sample, over samples
// in double in sample order.
std::tuple<at::Tensor, at::Tensor, at::Tensor> grn_backward_cpu(const at::Tensor& g, const at::Tensor& x,
                                                                const at::Tensor& offsets, const at::Tensor& gamma,
                                                                const at::Tensor& gx, const at::Tensor& denom,
                                                                const at::Tensor& nx, bool need_dx);

#ifdef CNX_SPARSE_CUDA_KERNELS
at::Tensor segment_dot_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets);
at::Tensor segment_affine_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y,
                               const at::Tensor& coef, const at::Tensor& bias, const at::Tensor& offsets);
#endif

}  // namespace cnx::sparse_ops::detail
