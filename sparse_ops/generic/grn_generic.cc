// GRN segment kernels from ATen operators (any device, any floating dtype;
// statistics in float32 for float16/bfloat16). Segment sums pad every
// segment to the longest one and reduce with a plain sum, so no atomics are
// involved and the result is deterministic on every device; this costs one
// host sync (the longest segment) per call.
#include "sparse_ops/generic/index_util.h"
#include "sparse_ops/grn_kernels.h"
#include "sparse_ops/op_util.h"

namespace cnx::sparse_ops::detail {

at::Tensor segment_dot_generic(const at::Tensor& a, const at::Tensor& b, const at::Tensor& offsets) {
  const int64_t n = offsets.size(0) - 1, m = a.size(0), c = a.size(1);
  const auto acc = acc_dtype(a.scalar_type());
  auto prod = b.defined() ? a.to(acc) * b.to(acc) : a.to(acc);
  if (m == 0) return at::zeros({n, c}, prod.options());
  auto starts = offsets.narrow(0, 0, n);
  auto lens = offsets.narrow(0, 1, n) - starts;
  const int64_t longest = lens.max().item<int64_t>();
  auto pos = at::arange(longest, offsets.options()).unsqueeze(0);  // [1, L]
  auto idx = (starts.unsqueeze(1) + pos).masked_fill(pos.ge(lens.unsqueeze(1)), m);
  return with_zero_row(prod).index_select(0, idx.reshape({-1})).view({n, longest, c}).sum(1);
}

at::Tensor segment_affine_generic(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& y,
                                  const at::Tensor& coef, const at::Tensor& bias, const at::Tensor& offsets) {
  const int64_t m = x.size(0);
  const auto acc = acc_dtype(x.scalar_type());
  // Segment of row i: the last n with offsets[n] <= i.
  auto seg = at::searchsorted(offsets, at::arange(m, offsets.options()), /*out_int32=*/false, /*right=*/true) - 1;
  auto out = x.to(acc) * scale.to(acc).index_select(0, seg);
  if (y.defined()) out.addcmul_(y.to(acc), coef.to(acc).index_select(0, seg));
  if (bias.defined()) out.add_(bias.to(acc).unsqueeze(0));
  return out.to(x.scalar_type());
}

}  // namespace cnx::sparse_ops::detail
