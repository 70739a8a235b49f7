#include "sparse_ops/backend.h"

#include <atomic>
#include <cstdlib>

#include "common/check.h"

namespace cnx::sparse_ops {
namespace {

constexpr const char* kModeEnv = "CNX_SPARSE_KERNELS";

KernelMode mode_from_env() {
  const char* value = std::getenv(kModeEnv);
  if (value == nullptr || *value == '\0') return KernelMode::kAuto;
  return parse_kernel_mode(value, cnx::str("environment variable ", kModeEnv));
}

std::atomic<KernelMode>& mode_slot() {
  static std::atomic<KernelMode> mode{mode_from_env()};
  return mode;
}

}  // namespace

KernelMode kernel_mode() {
  return mode_slot().load(std::memory_order_relaxed);
}

void set_kernel_mode(KernelMode mode) {
  mode_slot().store(mode, std::memory_order_relaxed);
}

KernelMode parse_kernel_mode(const std::string& value, const std::string& what) {
  if (value == "auto") return KernelMode::kAuto;
  if (value == "generic") return KernelMode::kGeneric;
  CNX_CHECK(false, what, ": '", value, "' is not a sparse kernel mode (expected auto or generic)");
  return KernelMode::kAuto;
}

const char* kernel_mode_name(KernelMode mode) {
  return mode == KernelMode::kGeneric ? "generic" : "auto";
}

bool has_cuda_kernels() {
#ifdef CNX_SPARSE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

KernelPath kernel_path(const at::Tensor& probe) {
  if (kernel_mode() == KernelMode::kGeneric) return KernelPath::kGeneric;
  const auto dtype = probe.scalar_type();
  if (dtype != at::kFloat && dtype != at::kDouble) return KernelPath::kGeneric;
  if (probe.device().is_cpu()) return KernelPath::kCpu;
  if (probe.is_cuda() && has_cuda_kernels()) return KernelPath::kCuda;
  return KernelPath::kGeneric;
}

const char* kernel_path_name(KernelPath path) {
  switch (path) {
    case KernelPath::kCpu:
      return "cpu";
    case KernelPath::kCuda:
      return "cuda";
    case KernelPath::kGeneric:
      return "generic";
  }
  return "?";
}

}  // namespace cnx::sparse_ops
