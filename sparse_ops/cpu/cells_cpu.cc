// CPU gathers/scatters of non-overlapping cells (sparse downsample, stem).
#include <ATen/Parallel.h>

#include <cstring>

#include "sparse_ops/cells_kernels.h"
#include "sparse_ops/index_math.h"

namespace cnx::sparse_ops::detail {

at::Tensor gather_cells_cpu(const at::Tensor& src, const at::Tensor& map) {
  const int64_t m = map.size(0), k = map.size(1), c = src.size(1);
  auto out = at::empty({m, k * c}, src.options());
  const int32_t* mp = map.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "sparse_gather_cells", [&] {
    const scalar_t* sp = src.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, 64, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        for (int64_t t = 0; t < k; ++t) {
          const int32_t j = mp[o * k + t];
          scalar_t* dst = op + (o * k + t) * c;
          if (j >= 0) {
            std::memcpy(dst, sp + static_cast<int64_t>(j) * c, sizeof(scalar_t) * c);
          } else {
            std::memset(dst, 0, sizeof(scalar_t) * c);
          }
        }
      }
    });
  });
  return out;
}

at::Tensor scatter_cells_cpu(const at::Tensor& cols, const at::Tensor& map, int64_t rows) {
  const int64_t m = map.size(0), k = map.size(1), c = cols.size(1) / k;
  auto out = at::zeros({rows, c}, cols.options());
  const int32_t* mp = map.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(cols.scalar_type(), "sparse_scatter_cells", [&] {
    const scalar_t* cp = cols.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, 64, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        for (int64_t t = 0; t < k; ++t) {
          const int32_t j = mp[o * k + t];
          if (j >= 0) std::memcpy(op + static_cast<int64_t>(j) * c, cp + (o * k + t) * c, sizeof(scalar_t) * c);
        }
      }
    });
  });
  return out;
}

at::Tensor patch_im2col_cpu(const at::Tensor& image, const at::Tensor& site_index, int64_t k) {
  const int64_t cin = image.size(1), h = image.size(2), w = image.size(3);
  const int64_t m = site_index.size(0);
  auto out = at::empty({m, cin * k * k}, image.options());
  const int64_t* si = site_index.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "sparse_patch_im2col", [&] {
    const scalar_t* ip = image.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, m, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        scalar_t* dst = op + i * cin * k * k;
        for (int64_t ch = 0; ch < cin; ++ch) {
          for (int64_t ky = 0; ky < k; ++ky) {
            const scalar_t* src = ip + patch_pixel(si[i], ch, ky, 0, cin, h, w, k);
            std::memcpy(dst + (ch * k + ky) * k, src, sizeof(scalar_t) * k);
          }
        }
      }
    });
  });
  return out;
}

at::Tensor patch_col2im_cpu(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                            int64_t k) {
  auto image = at::zeros(image_sizes, cols.options());
  const int64_t cin = image.size(1), h = image.size(2), w = image.size(3);
  const int64_t m = site_index.size(0);
  const int64_t* si = site_index.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(cols.scalar_type(), "sparse_patch_col2im", [&] {
    const scalar_t* cp = cols.data_ptr<scalar_t>();
    scalar_t* ip = image.data_ptr<scalar_t>();
    at::parallel_for(0, m, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const scalar_t* src = cp + i * cin * k * k;
        for (int64_t ch = 0; ch < cin; ++ch) {
          for (int64_t ky = 0; ky < k; ++ky) {
            scalar_t* dst = ip + patch_pixel(si[i], ch, ky, 0, cin, h, w, k);
            std::memcpy(dst, src + (ch * k + ky) * k, sizeof(scalar_t) * k);
          }
        }
      }
    });
  });
  return image;
}

}  // namespace cnx::sparse_ops::detail
