#include "sparse_ops/layout.h"

#include <ATen/Parallel.h>

#include "common/check.h"

namespace cnx::sparse_ops {
namespace {

SparseLayout layout_from_active(const at::Tensor& active_u8, int64_t n, int64_t h, int64_t w, at::Device device) {
  // active_u8: contiguous uint8 (n, h, w) on the CPU.
  const uint8_t* a = active_u8.data_ptr<uint8_t>();
  const int64_t total = n * h * w;
  CNX_CHECK(total < (int64_t{1} << 31), "sparse layout: ", total, " positions exceed the int32 site index range");
  SparseLayout lay;
  lay.batch = n;
  lay.height = h;
  lay.width = w;
  auto offsets = at::empty({n + 1}, at::kLong);
  auto dense_to_site = at::empty({total}, at::kInt);
  int64_t* off = offsets.data_ptr<int64_t>();
  int32_t* d2s = dense_to_site.data_ptr<int32_t>();
  int64_t count = 0;
  for (int64_t p = 0; p < total; ++p) {
    if (p % (h * w) == 0) off[p / (h * w)] = count;
    d2s[p] = a[p] ? static_cast<int32_t>(count++) : -1;
  }
  off[n] = count;
  auto site_index = at::empty({count}, at::kLong);
  int64_t* si = site_index.data_ptr<int64_t>();
  for (int64_t p = 0; p < total; ++p) {
    if (d2s[p] >= 0) si[d2s[p]] = p;
  }
  lay.num_sites = count;
  lay.site_index = site_index.to(device);
  lay.offsets = offsets.to(device);
  lay.dense_to_site = dense_to_site.to(device);
  return lay;
}

}  // namespace

SparseLayout layout_from_patch_mask(const at::Tensor& patch_mask, int64_t h_patches, int64_t w_patches, int64_t factor,
                                    at::Device device) {
  CNX_CHECK(h_patches > 0 && w_patches > 0 && factor > 0, "layout_from_patch_mask: h_patches=", h_patches,
            " w_patches=", w_patches, " factor=", factor, " must all be positive");
  CNX_CHECK(patch_mask.dim() == 2 || patch_mask.dim() == 3,
            "layout_from_patch_mask: mask must be (N, L) or (N, h, w), got ", patch_mask.sizes());
  const int64_t n = patch_mask.size(0);
  CNX_CHECK(patch_mask.numel() == n * h_patches * w_patches, "layout_from_patch_mask: mask of shape ",
            patch_mask.sizes(), " does not hold ", h_patches, "x", w_patches, " patches per sample");
  auto visible = patch_mask.to(at::kCPU).reshape({n, h_patches, 1, w_patches, 1}).eq(0);
  auto active = visible.expand({n, h_patches, factor, w_patches, factor})
                    .reshape({n, h_patches * factor, w_patches * factor})
                    .to(at::kByte)
                    .contiguous();
  return layout_from_active(active, n, h_patches * factor, w_patches * factor, device);
}

SparseLayout layout_from_dense_mask(const at::Tensor& active, at::Device device) {
  CNX_CHECK(active.dim() == 3, "layout_from_dense_mask: expected (N, H, W), got ", active.sizes());
  auto a = active.to(at::kCPU).ne(0).to(at::kByte).contiguous();
  return layout_from_active(a, active.size(0), active.size(1), active.size(2), device);
}

at::Tensor neighbour_map(const SparseLayout& layout, int64_t k) {
  CNX_CHECK(k > 0 && k % 2 == 1, "neighbour_map: kernel size must be odd and positive, got ", k);
  const int64_t m = layout.num_sites, h = layout.height, w = layout.width, r = k / 2;
  auto site_index = layout.site_index.to(at::kCPU).contiguous();
  auto d2s_t = layout.dense_to_site.to(at::kCPU).contiguous();
  auto map = at::empty({m, k * k}, at::kInt);
  const int64_t* si = site_index.data_ptr<int64_t>();
  const int32_t* d2s = d2s_t.data_ptr<int32_t>();
  int32_t* out = map.data_ptr<int32_t>();
  at::parallel_for(0, m, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t p = si[i];
      const int64_t base = p - p % (h * w);
      const int64_t y = (p % (h * w)) / w, x = p % w;
      int32_t* row = out + i * k * k;
      for (int64_t dy = -r; dy <= r; ++dy) {
        for (int64_t dx = -r; dx <= r; ++dx) {
          const int64_t yy = y + dy, xx = x + dx;
          const bool inside = yy >= 0 && yy < h && xx >= 0 && xx < w;
          row[(dy + r) * k + (dx + r)] = inside ? d2s[base + yy * w + xx] : -1;
        }
      }
    }
  });
  return map.to(layout.device());
}

at::Tensor cell_map(const SparseLayout& fine, const SparseLayout& coarse, int64_t k) {
  CNX_CHECK(k > 0, "cell_map: cell size must be positive, got ", k);
  CNX_CHECK(fine.batch == coarse.batch && fine.height == coarse.height * k && fine.width == coarse.width * k,
            "cell_map: fine layout ", fine.batch, "x", fine.height, "x", fine.width, " is not the coarse layout ",
            coarse.batch, "x", coarse.height, "x", coarse.width, " refined by ", k);
  const int64_t m = coarse.num_sites, hc = coarse.height, wc = coarse.width, hf = fine.height, wf = fine.width;
  auto site_index = coarse.site_index.to(at::kCPU).contiguous();
  auto d2s_t = fine.dense_to_site.to(at::kCPU).contiguous();
  auto map = at::empty({m, k * k}, at::kInt);
  const int64_t* si = site_index.data_ptr<int64_t>();
  const int32_t* d2s = d2s_t.data_ptr<int32_t>();
  int32_t* out = map.data_ptr<int32_t>();
  at::parallel_for(0, m, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t p = si[i];
      const int64_t n = p / (hc * wc), y = (p % (hc * wc)) / wc, x = p % wc;
      for (int64_t dy = 0; dy < k; ++dy) {
        for (int64_t dx = 0; dx < k; ++dx) {
          out[i * k * k + dy * k + dx] = d2s[n * hf * wf + (y * k + dy) * wf + (x * k + dx)];
        }
      }
    }
  });
  return map.to(coarse.device());
}

at::Tensor site_samples(const SparseLayout& layout) {
  auto off = layout.offsets.to(at::kCPU);
  auto counts = off.slice(0, 1) - off.slice(0, 0, layout.batch);
  return at::repeat_interleave(at::arange(layout.batch, at::kLong), counts).to(layout.device());
}

}  // namespace cnx::sparse_ops
