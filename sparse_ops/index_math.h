#pragma once
// Index arithmetic shared by the CUDA kernels (cuda/*.cu) and the CPU code:
// __host__ __device__ functions, so that the CPU tests
// (tests/sparse_ops/index_math_test.cc) exercise what the kernels compute.
#include <cstdint>

#if defined(__CUDACC__)
#define CNX_HOST_DEVICE __host__ __device__
#else
#define CNX_HOST_DEVICE
#endif

namespace cnx::sparse_ops::detail {

// The segment of row `i` in CSR offsets[0..nseg] (offsets[0] <= i <
// offsets[nseg]): the last s with offsets[s] <= i, by binary search (empty
// segments, offsets[s] == offsets[s + 1], are never returned).
CNX_HOST_DEVICE inline int64_t segment_of(const int64_t* offsets, int64_t nseg, int64_t i) {
  int64_t lo = 0, hi = nseg;  // invariant: offsets[lo] <= i < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (offsets[mid] <= i)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// Offset into an (N, cin, h, w) image of pixel (ky, kx) of channel `ch` of
// the k x k patch of site `p` of the (h/k, w/k) cell grid (p = (n * (h/k) +
// y) * (w/k) + x).
CNX_HOST_DEVICE inline int64_t patch_pixel(int64_t p, int64_t ch, int64_t ky, int64_t kx, int64_t cin, int64_t h,
                                           int64_t w, int64_t k) {
  const int64_t hc = h / k, wc = w / k;
  const int64_t n = p / (hc * wc), y = (p % (hc * wc)) / wc, x = p % wc;
  return ((n * cin + ch) * h + y * k + ky) * w + x * k + kx;
}

// Column `col` of a patch row (order ch, ky, kx) split into its parts.
struct PatchColumn {
  int64_t ch, ky, kx;
};
CNX_HOST_DEVICE inline PatchColumn patch_column(int64_t col, int64_t k) {
  return PatchColumn{col / (k * k), (col / k) % k, col % k};
}

}  // namespace cnx::sparse_ops::detail
