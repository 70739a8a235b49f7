// CUDA segment kernels behind the sparse GRN (grn_kernels.h). Reductions are
// fixed-shape trees inside one thread block (no atomics): deterministic.
#include "sparse_ops/cuda/cuda_util.cuh"
#include "sparse_ops/grn_kernels.h"
#include "sparse_ops/index_math.h"

namespace cnx::sparse_ops::detail {
namespace {

// Block (segment n, channel tile): out[n, c] = sum over the rows of n of a*b (or a).
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
  const int64_t lo = segment_of(offsets, nseg, i);
  T v = x[idx] * scale[lo * c + ch];
  if (y != nullptr) v += y[idx] * coef[lo * c + ch];
  if (bias != nullptr) v += bias[ch];
  out[idx] = v;
}

}  // namespace

at::Tensor segment_dot_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets) {
  LaunchScope scope(a);
  const int64_t n = offsets.size(0) - 1, c = a.size(1);
  auto out = at::empty({n, c}, a.options());
  if (n * c == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "sparse_segment_dot_cuda", [&] {
    const dim3 grid(static_cast<unsigned>(n), tiles_for(c));
    segment_dot_kernel<scalar_t><<<grid, dim3(kRedX, kRedY), 0, scope.stream()>>>(
        a.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(b), offsets.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), c);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor segment_affine_cuda(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y,
                               const at::Tensor& coef, const at::Tensor& bias, const at::Tensor& offsets) {
  LaunchScope scope(x);
  const int64_t m = x.size(0), c = x.size(1), n = offsets.size(0) - 1;
  auto out = at::empty({m, c}, x.options());
  if (m * c == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparse_segment_affine_cuda", [&] {
    segment_affine_kernel<scalar_t><<<blocks_for(m * c), kThreads, 0, scope.stream()>>>(
        x.data_ptr<scalar_t>(), scale.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(y), ptr_or_null<scalar_t>(coef),
        ptr_or_null<scalar_t>(bias), offsets.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), m, c, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cnx::sparse_ops::detail
