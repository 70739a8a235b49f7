#pragma once
// Gathers and scatters of non-overlapping k x k cells (internal; behind
// conv_cells.h: the sparse downsample and the sparse stem).
//
// Contract shared by the cpu/, cuda/ and generic/ implementations: contiguous
// tensors on one device; `map` int32 [M_out, K] (cell_map, -1 = no site),
// site_index int64 [M]. Every source row / pixel is referenced at most once,
// so scatters are plain copies (no atomics). The cpu and cuda versions take
// float or double only.
#include <ATen/ATen.h>

namespace cnx::sparse_ops::detail {

// [M_out, K*C]: block t of row o is src[map[o, t]] or zeros.
at::Tensor gather_cells_cpu(const at::Tensor& src, const at::Tensor& map);
at::Tensor gather_cells_generic(const at::Tensor& src, const at::Tensor& map);
// [rows, C]: inverse of gather_cells; rows no cell references are zero.
at::Tensor scatter_cells_cpu(const at::Tensor& cols, const at::Tensor& map, int64_t rows);
at::Tensor scatter_cells_generic(const at::Tensor& cols, const at::Tensor& map, int64_t rows);

// [M, Cin*k*k] (column order c, ky, kx): the k x k pixel patch of every site
// of a layout at resolution (H/k, W/k). image: (N, Cin, H, W).
at::Tensor patch_im2col_cpu(const at::Tensor& image, const at::Tensor& site_index, int64_t k);
at::Tensor patch_im2col_generic(const at::Tensor& image, const at::Tensor& site_index, int64_t k);
// Image-shaped (image_sizes) inverse of patch_im2col; pixels of no site are zero.
at::Tensor patch_col2im_cpu(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                            int64_t k);
at::Tensor patch_col2im_generic(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                                int64_t k);

#ifdef CNX_SPARSE_CUDA_KERNELS
at::Tensor gather_cells_cuda(const at::Tensor& src, const at::Tensor& map);
at::Tensor scatter_cells_cuda(const at::Tensor& cols, const at::Tensor& map, int64_t rows);
at::Tensor patch_im2col_cuda(const at::Tensor& image, const at::Tensor& site_index, int64_t k);
at::Tensor patch_col2im_cuda(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                             int64_t k);
#endif

}  // namespace cnx::sparse_ops::detail
