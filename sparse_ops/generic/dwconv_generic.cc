// Depthwise conv kernels from ATen operators (any device, any floating dtype;
// float16/bfloat16 accumulate in float32). One gather per kernel tap keeps
// the memory at O(M*C) and the tap order that of the CPU kernel.
#include "sparse_ops/dwconv_kernels.h"
#include "sparse_ops/generic/index_util.h"
#include "sparse_ops/op_util.h"

namespace cnx::sparse_ops::detail {

at::Tensor dwconv_forward_generic(const at::Tensor& in, const at::Tensor& map, const at::Tensor& w,
                                  const at::Tensor& bias) {
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  const auto acc = acc_dtype(in.scalar_type());
  auto src = with_zero_row(in.to(acc));
  auto taps = padded_index(map, m).t().contiguous();  // [K, M]
  auto wa = w.to(acc);
  auto out = bias.defined() ? bias.to(acc).unsqueeze(0).expand({m, c}).contiguous() : at::zeros({m, c}, src.options());
  for (int64_t t = 0; t < k; ++t) {
    out.addcmul_(src.index_select(0, taps[t]), wa[t].unsqueeze(0));
  }
  return out.to(in.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> dwconv_weight_grad_generic(const at::Tensor& grad_out, const at::Tensor& in,
                                                              const at::Tensor& map) {
  const int64_t m = in.size(0), c = in.size(1), k = map.size(1);
  const auto acc = acc_dtype(in.scalar_type());
  auto g = grad_out.to(acc);
  auto src = with_zero_row(in.to(acc));
  auto taps = padded_index(map, m).t().contiguous();
  auto dw = at::empty({k, c}, g.options());
  for (int64_t t = 0; t < k; ++t) {
    dw[t].copy_((g * src.index_select(0, taps[t])).sum(0));
  }
  auto db = g.sum(0);
  return {dw.to(in.scalar_type()), db.to(in.scalar_type())};
}

}  // namespace cnx::sparse_ops::detail
