#pragma once
// The few LibTorch APIs that differ between the versions this project builds
// against: Debian's 1.13 and pip's 2.x (GPU machines). Code outside this
// header uses these wrappers instead of version #ifs.
//
// * Autocast: 1.13 has per-backend functions (at::autocast::is_enabled() for
//   CUDA, is_cpu_enabled(), get_autocast_gpu_dtype(), ...); 2.4 replaced
//   them by functions taking the device type (the old ones are deprecated).
// * C++ standard: LibTorch 2.13 and later need C++20 (the root
//   CMakeLists.txt picks the standard from the found Torch version).
// * Not a version difference, but a trap in 1.13: Function::apply throws on
//   undefined tensor arguments ("tensor does not have a device"); custom
//   autograd Functions pass optional tensors as placeholders (sparse_ops).
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#define CNX_TORCH_VERSION_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace cnx::compat {

// Whether autocast is on for `device` (kCPU or kCUDA).
inline bool autocast_enabled(at::DeviceType device) {
#if CNX_TORCH_VERSION_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

// The reduced-precision dtype autocast uses on `device`.
inline at::ScalarType autocast_dtype(at::DeviceType device) {
#if CNX_TORCH_VERSION_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void set_autocast(at::DeviceType device, bool enabled, at::ScalarType dtype) {
#if CNX_TORCH_VERSION_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == at::kCUDA) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

// Autocast on `device` with `dtype` for the guard's lifetime (what Python's
// `with torch.autocast(device, dtype)` does): the previous state comes back
// on destruction, and the cast cache is cleared when the outermost guard
// ends. Thread-local, like autocast itself; use on the thread that runs the
// forward pass.
class AutocastGuard {
 public:
  AutocastGuard(at::DeviceType device, at::ScalarType dtype, bool enabled = true)
      : device_(device), was_enabled_(autocast_enabled(device)), was_dtype_(autocast_dtype(device)) {
    set_autocast(device, enabled, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set_autocast(device_, was_enabled_, was_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  at::DeviceType device_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
};

}  // namespace cnx::compat
