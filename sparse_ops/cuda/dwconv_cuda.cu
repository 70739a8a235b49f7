// CUDA kernels of the submanifold depthwise convolution (dwconv_kernels.h).
// No atomics: one thread per output element, and the weight gradient sums
// fixed row chunks into partials that a second kernel adds in chunk order,
// so results are deterministic.
#include <algorithm>

#include "sparse_ops/cuda/cuda_util.cuh"
#include "sparse_ops/dwconv_kernels.h"

namespace cnx::sparse_ops::detail {
namespace {

// Rows per weight-gradient chunk: a function of M only (never of the GPU),
// so the summation order, and the result, is the same on every run.
constexpr int64_t kWgradChunkRows = 1024;
constexpr int64_t kMaxGridZ = 65535;

int64_t wgrad_chunk_rows(int64_t m) {
  return std::max<int64_t>(kWgradChunkRows, (m + kMaxGridZ - 1) / kMaxGridZ);
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

// Block (tap t, channel tile, chunk q): partial[q, t, c] = sum over the rows i
// of chunk q of g[i, c] * in[map[i, t], c]; t == k is the bias gradient
// (sum of g[i, c]). Each of the kRedY row lanes sums a fixed stride of rows,
// then the lane sums are added in lane order.
template <typename T>
__global__ void dwconv_wgrad_partial_kernel(const T* __restrict__ g, const T* __restrict__ in,
                                            const int32_t* __restrict__ map,
                                            at::acc_type<T, true>* __restrict__ partial, int64_t m, int64_t c,
                                            int64_t k, int64_t chunk_rows) {
  using acc_t = at::acc_type<T, true>;
  __shared__ acc_t buf[kRedY][kRedX];
  const int64_t t = blockIdx.x;
  const int64_t ch = static_cast<int64_t>(blockIdx.y) * kRedX + threadIdx.x;
  const int64_t q = blockIdx.z;
  const int64_t r0 = q * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < m ? r0 + chunk_rows : m;
  acc_t acc = 0;
  if (ch < c) {
    for (int64_t i = r0 + threadIdx.y; i < r1; i += kRedY) {
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
    partial[(q * (k + 1) + t) * c + ch] = total;
  }
}

// out[x] = sum over q = 0..chunks-1, in that order, of partial[q, x].
template <typename T>
__global__ void sum_partials_kernel(const at::acc_type<T, true>* __restrict__ partial, T* __restrict__ out,
                                    int64_t chunks, int64_t width) {
  using acc_t = at::acc_type<T, true>;
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (x >= width) return;
  acc_t total = 0;
  for (int64_t q = 0; q < chunks; ++q) total += partial[q * width + x];
  out[x] = static_cast<T>(total);
}

}  // namespace

at::Tensor dwconv_forward_cuda(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                               const at::Tensor& bias) {
  LaunchScope scope(in);
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  auto out = at::empty({m, c}, in.options());
  if (m * c == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_forward_cuda", [&] {
    dwconv_forward_kernel<scalar_t><<<blocks_for(m * c), kThreads, 0, scope.stream()>>>(
        in.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), w.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(bias),
        out.data_ptr<scalar_t>(), m, c, k);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_cuda(const at::Tensor& grad_out, const at::Tensor& in,
                                                           const at::Tensor& map) {
  LaunchScope scope(in);
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  // No rows or no channels: nothing to launch (a grid dimension would be 0).
  if (m == 0 || c == 0) {
    auto zero = at::zeros({k + 1, c}, in.options());
    return {zero.narrow(0, 0, k), zero.select(0, k)};
  }
  const int64_t chunk_rows = wgrad_chunk_rows(m);
  const int64_t chunks = (m + chunk_rows - 1) / chunk_rows;
  const int64_t width = (k + 1) * c;
  auto total = at::empty({k + 1, c}, in.options());
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "sparse_dwconv_weight_grad_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    auto partial = at::empty({chunks, k + 1, c}, in.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    const dim3 grid(static_cast<unsigned>(k + 1), tiles_for(c), static_cast<unsigned>(chunks));
    dwconv_wgrad_partial_kernel<scalar_t><<<grid, dim3(kRedX, kRedY), 0, scope.stream()>>>(
        grad_out.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), map.data_ptr<int32_t>(), partial.data_ptr<acc_t>(), m,
        c, k, chunk_rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sum_partials_kernel<scalar_t><<<blocks_for(width), kThreads, 0, scope.stream()>>>(
        partial.data_ptr<acc_t>(), total.data_ptr<scalar_t>(), chunks, width);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {total.narrow(0, 0, k), total.select(0, k)};
}

}  // namespace cnx::sparse_ops::detail
