#pragma once
// Device kernels behind the sparse ops (internal; use the op headers).
//
// Every function takes contiguous tensors on one device, of one floating
// dtype (float or double), with
// the index maps of layout.h (int32, -1 = no site). Shapes are checked by the
// op layer before these are called. CPU versions are parallel over rows with
// at::parallel_for and need no atomics; results do not depend on the thread
// count (reductions use a fixed partition).
#include <ATen/ATen.h>

#include <tuple>

namespace cnx::sparse_ops::detail {

// out[i, c] = bias[c] + sum_t w[t, c] * in[map[i, t], c]. w: [K, C]; bias may be undefined.
at::Tensor dwconv_forward_cpu(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w, const at::Tensor& bias);
// (dw [K, C], dbias [C]) for grad_out [M, C].
std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cpu(const at::Tensor& grad_out, const at::Tensor& in,
                                                          const at::Tensor& map);

// [N, C]: rows of segment n (offsets int64 [N+1]) summed: sum a*b, or sum a when b is undefined.
at::Tensor segment_dot_cpu(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets);
// out[i, c] = x[i, c]*scale[n, c] (+ y[i, c]*coef[n, c]) (+ bias[c]), n = segment of row i.
at::Tensor segment_affine_cpu(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y, const at::Tensor& coef,
                              const at::Tensor& bias, const at::Tensor& offsets);

// [M_out, K*C]: block t of row o is src[map[o, t]] or zeros.
at::Tensor gather_cells_cpu(const at::Tensor& src, const at::Tensor& map);
// [rows, C]: inverse of gather_cells (every src row referenced at most once).
at::Tensor scatter_cells_cpu(const at::Tensor& cols, const at::Tensor& map, int64_t rows);

// [M, Cin*k*k] (order c, ky, kx): the k x k pixel patch of every site of a
// layout at resolution (H/k, W/k). image: (N, Cin, H, W); site_index int64 [M].
at::Tensor patch_im2col_cpu(const at::Tensor& image, const at::Tensor& site_index, int64_t k);
// Image-shaped gradient of patch_im2col (patches never overlap).
at::Tensor patch_col2im_cpu(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                            int64_t k);

#ifdef CNX_WITH_CUDA
at::Tensor dwconv_forward_cuda(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                               const at::Tensor& bias);
std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cuda(const at::Tensor& grad_out, const at::Tensor& in,
                                                           const at::Tensor& map);
at::Tensor segment_dot_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets);
at::Tensor segment_affine_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y,
                               const at::Tensor& coef, const at::Tensor& bias, const at::Tensor& offsets);
at::Tensor gather_cells_cuda(const at::Tensor& src, const at::Tensor& map);
at::Tensor scatter_cells_cuda(const at::Tensor& cols, const at::Tensor& map, int64_t rows);
at::Tensor patch_im2col_cuda(const at::Tensor& image, const at::Tensor& site_index, int64_t k);
at::Tensor patch_col2im_cuda(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                             int64_t k);
#endif

}  // namespace cnx::sparse_ops::detail
