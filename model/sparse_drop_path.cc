#include "model/sparse_drop_path.h"

#include "common/check.h"

namespace cnx::model {

at::Tensor sparse_drop_path(const at::Tensor& features, const at::Tensor& offsets, double p) {
  if (p == 0.0) return features;
  CNX_CHECK(p > 0.0 && p < 1.0, "sparse_drop_path: probability must be in [0, 1), got ", p);
  CNX_CHECK(features.dim() == 2, "sparse_drop_path: features must be [M, C], got ", features.sizes());
  CNX_CHECK(offsets.dim() == 1 && offsets.numel() >= 1 && offsets.scalar_type() == at::kLong,
            "sparse_drop_path: offsets must be int64 [N+1]");
  const int64_t n = offsets.numel() - 1;
  const double keep = 1.0 - p;
  // The dense drop_path's draw: N values from a contiguous tensor of the features' dtype.
  const at::Tensor mask = at::empty({n}, features.options()).bernoulli_(keep).div_(keep);
  const at::Tensor counts = offsets.slice(0, 1) - offsets.slice(0, 0, n);
  const at::Tensor scale = at::repeat_interleave(mask, counts, 0, features.size(0));
  return features * scale.unsqueeze(1);
}

}  // namespace cnx::model
