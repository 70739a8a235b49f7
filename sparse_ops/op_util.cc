#include "sparse_ops/op_util.h"

#include "common/check.h"
#include "common/torch_compat.h"

namespace cnx::sparse_ops::detail {

bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

at::ScalarType acc_dtype(at::ScalarType dtype) {
  return dtype == at::kHalf || dtype == at::kBFloat16 ? at::kFloat : dtype;
}

void check_features(const char* op, const at::Tensor& x) {
  CNX_CHECK(x.defined() && x.dim() == 2, op, ": features must be [M, C], got ",
            x.defined() ? x.sizes() : at::IntArrayRef{});
  CNX_CHECK(is_supported_dtype(x.scalar_type()), op, ": features must be float32, float64, float16 or bfloat16, got ",
            x.scalar_type());
}

void check_same(const char* op, const char* what, const at::Tensor& t, const at::Tensor& like) {
  CNX_CHECK(t.device() == like.device(), op, ": ", what, " is on ", t.device(), ", features on ", like.device());
  if (at::isFloatingType(t.scalar_type())) {
    CNX_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", what, " has dtype ", t.scalar_type(), ", features have ",
              like.scalar_type());
  }
}

void check_map(const char* op, const at::Tensor& map, int64_t rows, const at::Tensor& like) {
  CNX_CHECK(map.defined() && map.dim() == 2 && map.scalar_type() == at::kInt, op,
            ": index map must be int32 [rows, k*k], got ", map.defined() ? map.sizes() : at::IntArrayRef{});
  CNX_CHECK(rows < 0 || map.size(0) == rows, op, ": index map has ", map.size(0), " rows, features have ", rows);
  check_same(op, "index map", map, like);
}

at::Tensor match_param(const char* op, const char* what, const at::Tensor& param, const at::Tensor& like) {
  if (!param.defined()) return param;
  const auto dtype = like.scalar_type();
  if (param.scalar_type() == at::kFloat && (dtype == at::kHalf || dtype == at::kBFloat16)) {
    CNX_CHECK(param.device() == like.device(), op, ": ", what, " is on ", param.device(), ", features on ",
              like.device());
    return param.to(dtype);
  }
  check_same(op, what, param, like);
  return param;
}

at::Tensor autocast_conv_input(const at::Tensor& x) {
  if (!x.defined() || x.scalar_type() != at::kFloat) return x;
  const auto type = x.device().type();
  if ((type != at::kCPU && type != at::kCUDA) || !compat::autocast_enabled(type)) return x;
  return x.to(compat::autocast_dtype(type));
}

bool float_kernels_for(const at::Tensor& x) {
  return (x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16) && x.device().is_cpu() &&
         kernel_mode() == KernelMode::kAuto;
}

AutocastOff::AutocastOff(const at::Tensor& like) {
  const auto type = like.device().type();
  if ((type == at::kCPU || type == at::kCUDA) && compat::autocast_enabled(type))
    guard_.emplace(type, compat::autocast_dtype(type), /*enabled=*/false);
}

at::Tensor bias_or_placeholder(const at::Tensor& bias, const at::Tensor& like) {
  return bias.defined() ? bias : at::empty({0}, like.options());
}

}  // namespace cnx::sparse_ops::detail
