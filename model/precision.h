#pragma once
// Mixed precision of training (config train.precision; docs/model.md,
// "Mixed precision").
//
//   fp32  everything in float32 (the default; bit-for-bit what the code did
//         before mixed precision existed).
//   bf16  autocast semantics: matrix products and convolutions (Linear,
//         Conv2d, the sparse stem/downsample GEMMs, the sparse depthwise
//         conv) take bfloat16 inputs and accumulate in float32; statistics
//         stay in float32: LayerNorm (input cast to float32, output float32),
//         GRN's ||x|| and its mean, the norm-pix target statistics and the
//         loss. Parameters, gradients and optimizer state stay float32.
//   fp16  the same with float16, plus dynamic loss scaling in the trainer
//         (worker/loss_scaler.h). LibTorch's CPU autocast runs bfloat16 only,
//         so fp16 needs a CUDA device.
//
// The model code reads the thread's autocast state (autocast_active) at the
// few places that must stay in float32; PrecisionScope turns autocast on for
// the forward pass (the backward runs outside it, as in PyTorch).
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "common/torch_compat.h"

namespace cnx::model {

enum class Precision { kFp32, kBf16, kFp16 };

// "fp32" | "bf16" | "fp16"; anything else throws std::invalid_argument
// naming `what` (the key or flag) and the accepted values.
Precision parse_precision(const std::string& value, const std::string& what);
const char* precision_name(Precision p);
// kFloat, kBFloat16, kHalf.
at::ScalarType precision_dtype(Precision p);

// Whether autocast is on, on this thread, for x's device type (CPU or CUDA).
bool autocast_active(const at::Tensor& x);
// The reduced dtype autocast casts to on x's device (meaningful when active).
at::ScalarType autocast_dtype_for(const at::Tensor& x);

// x in float32 when autocast is active and x is float16/bfloat16 (for
// statistics that must not run in the reduced type); x itself otherwise.
at::Tensor float_under_autocast(const at::Tensor& x);
// x in autocast's reduced dtype when autocast is active and x is float32
// (the input of a convolution autocast does not see, e.g. a custom op);
// x itself otherwise.
at::Tensor reduced_under_autocast(const at::Tensor& x);

// Autocast on `device` with the precision's dtype for the scope's lifetime
// (nothing for fp32). Thread-local; wrap the forward pass only.
class PrecisionScope {
 public:
  PrecisionScope(Precision precision, at::DeviceType device);
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;

 private:
  std::optional<compat::AutocastGuard> guard_;
};

}  // namespace cnx::model
