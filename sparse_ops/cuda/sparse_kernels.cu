// CUDA kernels behind the sparse ops (declared in sparse_ops/kernels.h).
// Compiled only with CNX_WITH_CUDA. Same contracts as the CPU kernels:
// contiguous inputs on one device, float or double, int32 maps with -1 for
// "no site". Every reduction is a fixed-shape tree inside one thread block
// (no atomics), so results are deterministic. All launches go to the
// current stream.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "sparse_ops/kernels.h"

namespace cnx::sparse_ops::detail {
namespace {

constexpr int kThreads = 256;
// Reduction blocks: 32 channels (x) by 8 row lanes (y).
constexpr int kRedX = 32;
constexpr int kRedY = 8;

inline int64_t blocks_for(int64_t n) {
  return (n + kThreads - 1) / kThreads;
}

template <typename T>
__global__ void dwconv_forward_kernel(const T* __restrict__ in, const int32_t* __restrict__ map,
                                      const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ out,
                                      int64_t m, int64_t c, int64_t k) {
  using acc_t = at::acc_type<T, true>;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * c) return;
  const int64_t i = idx / c, ch = idx % c;
  acc_t acc = bias != nullptr ? static_cast<acc_t>(bias[ch]) : acc_t(0);
  for (int64_t t = 0; t < k; ++t) {
    const int32_t j = map[i * k + t];
    if (j >= 0) acc += static_cast<acc_t>(w[t * c + ch]) * static_cast<acc_t>(in[static_cast<int64_t>(j) * c + ch]);
  }
  out[idx] = static_cast<T>(acc);
}

// Block (t, channel tile): partial[t, c] = sum_i g[i, c] * in[map[i, t], c];
// t == k is the bias gradient (sum_i g[i, c]).
template <typename T>
__global__ void dwconv_wgrad_kernel(const T* __restrict__ g, const T* __restrict__ in, const int32_t* __restrict__ map,
                                    T* __restrict__ out, int64_t m, int64_t c, int64_t k) {
  using acc_t = at::acc_type<T, true>;
  __shared__ acc_t buf[kRedY][kRedX];
  const int64_t t = blockIdx.x;
  const int64_t ch = static_cast<int64_t>(blockIdx.y) * kRedX + threadIdx.x;
  acc_t acc = 0;
  if (ch < c) {
    for (int64_t i = threadIdx.y; i < m; i += kRedY) {
      if (t == k) {
        acc += static_cast<acc_t>(g[i * c + ch]);
      } else {
        const int32_t j = map[i * k + t];
        if (j >= 0) acc += static_cast<acc_t>(g[i * c + ch]) * static_cast<acc_t>(in[static_cast<int64_t>(j) * c + ch]);
      }
    }
  }
  buf[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    acc_t total = 0;
    for (int y = 0; y < kRedY; ++y) total += buf[y][threadIdx.x];
    out[t * c + ch] = static_cast<T>(total);
  }
}

// Block (segment n, channel tile): out[n, c] = sum_{rows of n} a*b (or a).
template <typename T>
__global__ void segment_dot_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                   const int64_t* __restrict__ offsets, T* __restrict__ out, int64_t c) {
  using acc_t = at::acc_type<T, true>;
  __shared__ acc_t buf[kRedY][kRedX];
  const int64_t n = blockIdx.x;
  const int64_t ch = static_cast<int64_t>(blockIdx.y) * kRedX + threadIdx.x;
  acc_t acc = 0;
  if (ch < c) {
    for (int64_t i = offsets[n] + threadIdx.y; i < offsets[n + 1]; i += kRedY) {
      const acc_t av = static_cast<acc_t>(a[i * c + ch]);
      acc += b != nullptr ? av * static_cast<acc_t>(b[i * c + ch]) : av;
    }
  }
  buf[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    acc_t total = 0;
    for (int y = 0; y < kRedY; ++y) total += buf[y][threadIdx.x];
    out[n * c + ch] = static_cast<T>(total);
  }
}

template <typename T>
__global__ void segment_affine_kernel(const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ y,
                                      const T* __restrict__ coef, const T* __restrict__ bias,
                                      const int64_t* __restrict__ offsets, T* __restrict__ out, int64_t m, int64_t c,
                                      int64_t nseg) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * c) return;
  const int64_t i = idx / c, ch = idx % c;
  // Segment of row i: the last s with offsets[s] <= i.
  int64_t lo = 0, hi = nseg;  // invariant: offsets[lo] <= i < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (offsets[mid] <= i)
      lo = mid;
    else
      hi = mid;
  }
  T v = x[idx] * scale[lo * c + ch];
  if (y != nullptr) v += y[idx] * coef[lo * c + ch];
  if (bias != nullptr) v += bias[ch];
  out[idx] = v;
}

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
  const int64_t ch = col / (k * k), ky = (col / k) % k, kx = col % k;
  const int64_t hc = h / k, wc = w / k;
  const int64_t p = sites[i], n = p / (hc * wc), yy = (p % (hc * wc)) / wc, xx = p % wc;
  const int64_t pix = ((n * cin + ch) * h + yy * k + ky) * w + xx * k + kx;
  if (kToImage) {
    image[pix] = cols[idx];
  } else {
    cols[idx] = image[pix];
  }
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

at::Tensor dwconv_forward_cuda(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                               const at::Tensor& bias) {
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  auto out = at::empty({m, c}, in.options());
  if (m * c == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_forward_cuda", [&] {
    dwconv_forward_kernel<scalar_t><<<blocks_for(m * c), kThreads, 0, stream>>>(
        in.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), w.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(bias),
        out.data_ptr<scalar_t>(), m, c, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cuda(const at::Tensor& grad_out, const at::Tensor& in,
                                                           const at::Tensor& map) {
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  auto total = at::empty({k + 1, c}, in.options());
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_weight_grad_cuda", [&] {
    dim3 grid(static_cast<unsigned>(k + 1), static_cast<unsigned>((c + kRedX - 1) / kRedX));
    dwconv_wgrad_kernel<scalar_t>
        <<<grid, dim3(kRedX, kRedY), 0, stream>>>(grad_out.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(),
                                                  map.data_ptr<int32_t>(), total.data_ptr<scalar_t>(), m, c, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {total.narrow(0, 0, k), total.select(0, k)};
}

at::Tensor segment_dot_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets) {
  const int64_t n = offsets.size(0) - 1, c = a.size(1);
  auto out = at::empty({n, c}, a.options());
  if (n * c == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sparse_segment_dot_cuda", [&] {
    dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((c + kRedX - 1) / kRedX));
    segment_dot_kernel<scalar_t><<<grid, dim3(kRedX, kRedY), 0, stream>>>(
        a.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b), offsets.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor segment_affine_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y,
                               const at::Tensor& coef, const at::Tensor& bias, const at::Tensor& offsets) {
  const int64_t m = x.size(0), c = x.size(1), n = offsets.size(0) - 1;
  auto out = at::empty({m, c}, x.options());
  if (m * c == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_segment_affine_cuda", [&] {
    segment_affine_kernel<scalar_t><<<blocks_for(m * c), kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(y), ptr_or_null<scalar_t>(coef),
        ptr_or_null<scalar_t>(bias), offsets.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), m, c, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor gather_cells_cuda(const at::Tensor& src, const at::Tensor& map) {
  const int64_t m = map.size(0), k = map.size(1), c = src.size(1);
  auto out = at::empty({m, k * c}, src.options());
  if (m * k * c == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "sparse_gather_cells_cuda", [&] {
    gather_cells_kernel<scalar_t><<<blocks_for(m * k * c), kThreads, 0, stream>>>(
        src.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), out.data_ptr<scalar_t>(), m, k, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor scatter_cells_cuda(const at::Tensor& cols, const at::Tensor& map, int64_t rows) {
  const int64_t m = map.size(0), k = map.size(1), c = cols.size(1) / k;
  auto out = at::zeros({rows, c}, cols.options());
  if (m * k * c == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(cols.scalar_type(), "sparse_scatter_cells_cuda", [&] {
    scatter_cells_kernel<scalar_t><<<blocks_for(m * k * c), kThreads, 0, stream>>>(
        cols.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), out.data_ptr<scalar_t>(), m, k, c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor patch_im2col_cuda(const at::Tensor& image, const at::Tensor& site_index, int64_t k) {
  const int64_t cin = image.size(1), h = image.size(2), w = image.size(3), m = site_index.size(0);
  auto out = at::empty({m, cin * k * k}, image.options());
  if (out.numel() == 0) return out;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "sparse_patch_im2col_cuda", [&] {
    patch_copy_kernel<scalar_t, false><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
        const_cast<scalar_t*>(image.data_ptr<scalar_t>()), out.data_ptr<scalar_t>(), site_index.data_ptr<int64_t>(), m,
        cin, h, w, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor patch_col2im_cuda(const at::Tensor& cols, const at::Tensor& site_index, at::IntArrayRef image_sizes,
                             int64_t k) {
  auto image = at::zeros(image_sizes, cols.options());
  const int64_t cin = image.size(1), h = image.size(2), w = image.size(3), m = site_index.size(0);
  if (cols.numel() == 0) return image;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(cols.scalar_type(), "sparse_patch_col2im_cuda", [&] {
    patch_copy_kernel<scalar_t, true><<<blocks_for(cols.numel()), kThreads, 0, stream>>>(
        image.data_ptr<scalar_t>(), const_cast<scalar_t*>(cols.data_ptr<scalar_t>()), site_index.data_ptr<int64_t>(), m,
        cin, h, w, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return image;
}

}  // namespace cnx::sparse_ops::detail
