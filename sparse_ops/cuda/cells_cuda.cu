// CUDA gathers/scatters of non-overlapping cells and pixel patches
// (cells_kernels.h). Every source row / pixel is referenced at most once, so
// each output element has exactly one writer: no atomics.
#include "sparse_ops/cells_kernels.h"
#include "sparse_ops/cuda/cuda_util.cuh"
#include "sparse_ops/index_math.h"

namespace cnx::sparse_ops::detail {
namespace {

template <typename T>
__global__ void gather_cells_kernel(const T* __restrict__ src, const int32_t* __restrict__ map, T* __restrict__ out,
                                    int64_t m, int64_t k, int64_t c) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * k * c) return;
  const int64_t ot = idx / c, ch = idx % c;
  const int32_t j = map[ot];
  out[idx] = j >= 0 ? src[static_cast<int64_t>(j) * c + ch] : T(0);
}

template <typename T>
__global__ void scatter_cells_kernel(const T* __restrict__ cols, const int32_t* __restrict__ map, T* __restrict__ out,
                                     int64_t m, int64_t k, int64_t c) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * k * c) return;
  const int64_t ot = idx / c, ch = idx % c;
  const int32_t j = map[ot];
  if (j >= 0) out[static_cast<int64_t>(j) * c + ch] = cols[idx];  // each j appears once
}

// One thread per (site, column); column = (ch*k + ky)*k + kx.
template <typename T, bool kToImage>
__global__ void patch_copy_kernel(T* __restrict__ image, T* __restrict__ cols, const int64_t* __restrict__ sites,
                                  int64_t m, int64_t cin, int64_t h, int64_t w, int64_t k) {
  const int64_t width = cin * k * k;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * width) return;
  const int64_t i = idx / width, col = idx % width;
  const PatchColumn pc = patch_column(col, k);
  const int64_t pix = patch_pixel(sites[i], pc.ch, pc.ky, pc.kx, cin, h, w, k);
  if (kToImage) {
    image[pix] = cols[idx];
  } else {
    cols[idx] = image[pix];
  }
}

}  // namespace

at::Tensor gather_cells_cuda(const at::Tensor& src, const at::Tensor& map) {
  LaunchScope scope(src);
  const int64_t m = map.size(0), k = map.size(1), c = src.size(1);
  auto out = at::empty({m, k * c}, src.options());
  if (m * k * c == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "sparse_gather_cells_cuda", [&] {
    gather_cells_kernel<scalar_t><<<blocks_for(m * k * c), kThreads, 0, scope.stream()>>>(
        src.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), out.data_ptr<scalar_t>(), m, k, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor scatter_cells_cuda(const at::Tensor& cols, const at::Tensor& map, int64_t rows) {
  LaunchScope scope(cols);
  const int64_t m = map.size(0), k = map.size(1), c = k > 0 ? cols.size(1) / k : 0;
  auto out = at::zeros({rows, c}, cols.options());
  if (m * k * c == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(cols.scalar_type(), "sparse_scatter_cells_cuda", [&] {
    scatter_cells_kernel<scalar_t><<<blocks_for(m * k * c), kThreads, 0, scope.stream()>>>(
        cols.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), out.data_ptr<scalar_t>(), m, k, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor patch_im2col_cuda(const at::Tensor& image, const at::Tensor& site_index, int64_t k) {
  LaunchScope scope(image);
  const int64_t cin = image.size(1), h = image.size(2), w = image.size(3), m = site_index.size(0);
  auto out = at::empty({m, cin * k * k}, image.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "sparse_patch_im2col_cuda", [&] {
    patch_copy_kernel<scalar_t, false><<<blocks_for(out.numel()), kThreads, 0, scope.stream()>>>(
        const_cast<scalar_t*>(image.data_ptr<scalar_t>()), out.data_ptr<scalar_t>(), site_index.data_ptr<int64_t>(), m,
        cin, h, w, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor patch_col2im_cuda(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                             int64_t k) {
  LaunchScope scope(cols);
  auto image = at::zeros(image_sizes, cols.options());
  const int64_t cin = image.size(1), h = image.size(2), w = image.size(3), m = site_index.size(0);
  if (cols.numel() == 0) return image;
  AT_DISPATCH_FLOATING_TYPES(cols.scalar_type(), "sparse_patch_col2im_cuda", [&] {
    patch_copy_kernel<scalar_t, true><<<blocks_for(cols.numel()), kThreads, 0, scope.stream()>>>(
        image.data_ptr<scalar_t>(), const_cast<scalar_t*>(cols.data_ptr<scalar_t>()), site_index.data_ptr<int64_t>(), m,
        cin, h, w, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return image;
}

}  // namespace cnx::sparse_ops::detail
