#pragma once
// Shared pieces of the generic (ATen-only) kernels.
#include <ATen/ATen.h>

namespace cnx::sparse_ops::detail {

// `rows` [R, C] with one zero row appended ([R+1, C]): the target of every
// "no site" entry of an index map.
inline at::Tensor with_zero_row(const at::Tensor& rows) {
  return at::cat({rows, at::zeros({1, rows.size(1)}, rows.options())});
}

// int32 index map -> int64 row indices with -1 replaced by `pad_row`.
inline at::Tensor padded_index(const at::Tensor& map, int64_t pad_row) {
  auto idx = map.to(at::kLong);
  return idx.masked_fill(idx.lt(0), pad_row);
}

}  // namespace cnx::sparse_ops::detail
