#pragma once
// Internal helpers of the sparse op layer (dwconv.cc, grn.cc, conv_cells.cc,
// densify.cc): input checks with messages naming the op and the argument,
// the dtype policy, and the kernel dispatch.
//
// Dtype policy: features (and images) are float32, float64, float16 or
// bfloat16. Parameters (weights, biases, GRN gamma/beta) must have the
// features' dtype, except that float32 parameters are cast to float16 /
// bfloat16 features' dtype (mixed precision as autocast produces it); the
// cast is differentiable, so their gradients come back in float32.
#include <ATen/ATen.h>

#include <optional>

#include "common/torch_compat.h"
#include "sparse_ops/backend.h"

namespace cnx::sparse_ops::detail {

bool is_supported_dtype(at::ScalarType dtype);
// Floating [M, C] features of a supported dtype.
void check_features(const char* op, const at::Tensor& x);
// `t` on the device of `like`; floating `t` of like's dtype.
void check_same(const char* op, const char* what, const at::Tensor& t, const at::Tensor& like);
// An int32 [rows, k*k] index map on the features' device (rows < 0: any).
void check_map(const char* op, const at::Tensor& map, int64_t rows, const at::Tensor& like);
// `param` (may be undefined) under the dtype policy above, checked against `like`.
at::Tensor match_param(const char* op, const char* what, const at::Tensor& param, const at::Tensor& like);
// `bias`, or an empty placeholder on like's device when it is undefined:
// LibTorch 1.13's Function::apply throws on undefined tensor arguments, so
// optional tensors travel as a placeholder plus a has_bias flag.
at::Tensor bias_or_placeholder(const at::Tensor& bias, const at::Tensor& like);
// Accumulation dtype of the generic kernels: float32 for float16/bfloat16, else the dtype itself.
at::ScalarType acc_dtype(at::ScalarType dtype);

// Mixed precision (docs/model.md, "Mixed precision"):
// * autocast_conv_input: the input of an op autocast would run in reduced
//   precision if it were a Conv2d (the sparse depthwise conv): float32
//   features become autocast's dtype when autocast is on for their device;
//   anything else is returned as it is.
// * float_kernels_for: whether float16/bfloat16 features should run through
//   the float32 kernels with casts at the op's boundary (inputs and
//   parameters rounded to the reduced type, float32 arithmetic, output
//   rounded back): on CPU in kernel mode auto, where the hand-written kernels
//   are float32 only and the generic ATen path in bfloat16 is several times
//   slower (bench/model/README.md, "Mixed precision on CPU").
at::Tensor autocast_conv_input(const at::Tensor& x);
bool float_kernels_for(const at::Tensor& x);

// Autocast off on `like`'s device for the object's lifetime (and back on
// after), around an op whose kernels must see the dtypes the front end chose:
// CUDA autocast would otherwise run e.g. the generic kernels' sums in float32.
class AutocastOff {
 public:
  explicit AutocastOff(const at::Tensor& like);
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

 private:
  std::optional<compat::AutocastGuard> guard_;
};

}  // namespace cnx::sparse_ops::detail

#ifdef CNX_SPARSE_CUDA_KERNELS
#define CNX_SPARSE_CUDA_CASE(fn, ...)        \
  case ::cnx::sparse_ops::KernelPath::kCuda: \
    return ::cnx::sparse_ops::detail::fn##_cuda(__VA_ARGS__);
#else
#define CNX_SPARSE_CUDA_CASE(fn, ...)
#endif

// Calls detail::fn##_cpu / _cuda / _generic(args...) by kernel_path(probe).
// The arguments are captured by reference (no structured bindings).
#define CNX_SPARSE_DISPATCH(fn, probe, ...)                          \
  [&] {                                                              \
    switch (::cnx::sparse_ops::kernel_path(probe)) {                 \
      case ::cnx::sparse_ops::KernelPath::kCpu:                      \
        return ::cnx::sparse_ops::detail::fn##_cpu(__VA_ARGS__);     \
        CNX_SPARSE_CUDA_CASE(fn, __VA_ARGS__)                        \
      default:                                                       \
        return ::cnx::sparse_ops::detail::fn##_generic(__VA_ARGS__); \
    }                                                                \
  }()
