#include "model/precision.h"

#include <stdexcept>

namespace cnx::model {

Precision parse_precision(const std::string& value, const std::string& what) {
  if (value == "fp32") return Precision::kFp32;
  if (value == "bf16") return Precision::kBf16;
  if (value == "fp16") return Precision::kFp16;
  throw std::invalid_argument(what + ": '" + value + "' is not a precision (expected fp32, bf16 or fp16)");
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFp32:
      return "fp32";
    case Precision::kBf16:
      return "bf16";
    case Precision::kFp16:
      return "fp16";
  }
  return "?";
}

at::ScalarType precision_dtype(Precision p) {
  switch (p) {
    case Precision::kBf16:
      return at::kBFloat16;
    case Precision::kFp16:
      return at::kHalf;
    case Precision::kFp32:
      break;
  }
  return at::kFloat;
}

namespace {

bool autocast_device(at::DeviceType type) {
  return type == at::kCPU || type == at::kCUDA;
}

bool reduced(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16;
}

}  // namespace

bool autocast_active(const at::Tensor& x) {
  const auto type = x.device().type();
  return autocast_device(type) && compat::autocast_enabled(type);
}

at::ScalarType autocast_dtype_for(const at::Tensor& x) {
  return compat::autocast_dtype(x.device().type());
}

at::Tensor float_under_autocast(const at::Tensor& x) {
  return reduced(x.scalar_type()) && autocast_active(x) ? x.to(at::kFloat) : x;
}

at::Tensor reduced_under_autocast(const at::Tensor& x) {
  return x.scalar_type() == at::kFloat && autocast_active(x) ? x.to(autocast_dtype_for(x)) : x;
}

PrecisionScope::PrecisionScope(Precision precision, at::DeviceType device) {
  if (precision != Precision::kFp32) guard_.emplace(device, precision_dtype(precision));
}

}  // namespace cnx::model
