// Cell gathers/scatters and patch im2col/col2im from ATen operators (any
// device, any dtype: pure copies, bitwise equal to the cpu/cuda kernels).
#include "sparse_ops/cells_kernels.h"
#include "sparse_ops/generic/index_util.h"

namespace cnx::sparse_ops::detail {

at::Tensor gather_cells_generic(const at::Tensor& src, const at::Tensor& map) {
  const int64_t m = map.size(0), k = map.size(1), c = src.size(1);
  auto idx = padded_index(map, src.size(0)).reshape({-1});
  return with_zero_row(src).index_select(0, idx).view({m, k * c});
}

at::Tensor scatter_cells_generic(const at::Tensor& cols, const at::Tensor& map, int64_t rows) {
  const int64_t m = map.size(0), k = map.size(1), c = k > 0 ? cols.size(1) / k : 0;
  // "No site" entries all land in an extra last row, which is dropped.
  auto idx = padded_index(map, rows).reshape({-1});
  auto out = at::zeros({rows + 1, c}, cols.options());
  out.index_copy_(0, idx, cols.reshape({m * k, c}));
  return out.narrow(0, 0, rows);
}

at::Tensor patch_im2col_generic(const at::Tensor& image, const at::Tensor& site_index, int64_t k) {
  const int64_t n = image.size(0), cin = image.size(1), hc = image.size(2) / k, wc = image.size(3) / k;
  auto patches = image.reshape({n, cin, hc, k, wc, k}).permute({0, 2, 4, 1, 3, 5}).reshape({n * hc * wc, cin * k * k});
  return patches.index_select(0, site_index);
}

at::Tensor patch_col2im_generic(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                                int64_t k) {
  const int64_t n = image_sizes[0], cin = image_sizes[1], h = image_sizes[2], w = image_sizes[3];
  const int64_t hc = h / k, wc = w / k;
  auto patches = at::zeros({n * hc * wc, cin * k * k}, cols.options());
  patches.index_copy_(0, site_index, cols);
  return patches.view({n, hc, wc, cin, k, k}).permute({0, 3, 1, 4, 2, 5}).reshape({n, cin, h, w}).contiguous();
}

}  // namespace cnx::sparse_ops::detail
