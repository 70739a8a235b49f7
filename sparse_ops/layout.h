#pragma once
// Sparse feature layout of the FCMAE encoder (docs/model.md, "FCMAE").
//
// A sparse tensor at one resolution (N, H, W) is a feature matrix [M, C]
// (row i = one active site, channels contiguous) plus a SparseLayout that
// says where the rows live. Sites are ordered by (sample, y, x), so the rows
// of sample n are the contiguous range [offsets[n], offsets[n+1]).
//
// All index tensors live on the device of the features they describe and
// are immutable once built; a layout may be shared freely between threads
// and by every op of one stage. Building happens on the CPU (the masks are
// small) and the result is copied to the target device.
#include <ATen/ATen.h>

#include <cstdint>

namespace cnx::sparse_ops {

struct SparseLayout {
  int64_t batch = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t num_sites = 0;
  // int64 [M]: n*H*W + y*W + x of each active site, strictly increasing.
  at::Tensor site_index;
  // int64 [batch + 1]: rows of sample n are [offsets[n], offsets[n+1]).
  at::Tensor offsets;
  // int32 [batch*H*W]: row of the site at each dense position, -1 if inactive.
  at::Tensor dense_to_site;

  at::Device device() const { return site_index.device(); }
};

// Layout of the active (= visible) sites of a patch mask upsampled by
// `factor`: `patch_mask` is (N, h_patches*w_patches) or (N, h_patches,
// w_patches), any numeric dtype, 1 (non-zero) = masked / removed, 0 = visible.
// The layout has resolution (h_patches*factor, w_patches*factor).
SparseLayout layout_from_patch_mask(const at::Tensor& patch_mask, int64_t h_patches, int64_t w_patches, int64_t factor,
                                    at::Device device = at::kCPU);

// Layout of the non-zero positions of a dense (N, H, W) tensor.
SparseLayout layout_from_dense_mask(const at::Tensor& active, at::Device device = at::kCPU);

// Submanifold neighbour map: int32 [M, k*k], entry (i, t) with t = (dy+r)*k +
// (dx+r), r = k/2, is the row of the active site at (y+dy, x+dx) of the same
// sample, or -1 when that position is inactive or outside the image. k odd.
// The map is symmetric: if (i, t) -> j then (j, k*k-1-t) -> i, which the
// backward of the depthwise conv relies on.
at::Tensor neighbour_map(const SparseLayout& layout, int64_t k);

// Map from a coarse layout to the non-overlapping k x k cells of a fine one
// (fine resolution = coarse * k): int32 [M_coarse, k*k], entry (o, t) with t =
// dy*k + dx is the fine row at (k*y+dy, k*x+dx) or -1. Each fine row appears at
// most once, so scatters through this map need no atomics.
at::Tensor cell_map(const SparseLayout& fine, const SparseLayout& coarse, int64_t k);

// Row of each site's sample: int64 [M].
at::Tensor site_samples(const SparseLayout& layout);

}  // namespace cnx::sparse_ops
