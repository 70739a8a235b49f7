#pragma once
// Which implementation runs the kernels of the sparse ops.
//
// Every sparse op (dwconv.h, grn.h, conv_cells.h, densify.h) has its kernels
// in up to three implementations with one contract each (the op's
// *_kernels.h):
//   * cpu/      hand-written CPU loops, float and double;
//   * cuda/     CUDA kernels, float and double, built when CNX_WITH_CUDA and
//               CNX_SPARSE_CUDA_KERNELS are ON;
//   * generic/  ATen operators only: any device LibTorch supports and any
//               floating dtype (float16/bfloat16 accumulate in float32).
// A kernel call takes the fast path for its tensors' device and dtype when
// this build has one, the generic path otherwise. The generic path is also
// the reference the fast paths are tested against, and can be forced for the
// whole process:
//   * environment variable CNX_SPARSE_KERNELS=generic (or auto, the
//     default), read once at the first sparse op;
//   * set_kernel_mode(KernelMode::kGeneric), or a ScopedKernelMode.
// The mode is process-wide and read at every kernel call; changing it while
// another thread runs sparse ops is safe, but a forward and its backward may
// then run on different paths (both correct, rounding may differ).
#include <ATen/ATen.h>

#include <string>

namespace cnx::sparse_ops {

enum class KernelMode {
  kAuto,     // fast path where one exists for the device and dtype
  kGeneric,  // always the ATen-only implementation
};

// Where one kernel call runs.
enum class KernelPath { kCpu, kCuda, kGeneric };

KernelMode kernel_mode();
void set_kernel_mode(KernelMode mode);

// "auto" | "generic" -> mode; anything else throws CheckError naming `what`
// (e.g. the environment variable) and the accepted values.
KernelMode parse_kernel_mode(const std::string& value, const std::string& what);
const char* kernel_mode_name(KernelMode mode);

// The path a kernel call on tensors like `probe` takes under the current
// mode: kCpu for float/double CPU tensors, kCuda for float/double CUDA
// tensors in a build with the CUDA kernels, kGeneric otherwise.
KernelPath kernel_path(const at::Tensor& probe);
const char* kernel_path_name(KernelPath path);

// Whether this build has the hand-written CUDA kernels.
bool has_cuda_kernels();

// Sets the mode for the lifetime of the object, then restores the previous one.
class ScopedKernelMode {
 public:
  explicit ScopedKernelMode(KernelMode mode) : previous_(kernel_mode()) { set_kernel_mode(mode); }
  ~ScopedKernelMode() { set_kernel_mode(previous_); }
  ScopedKernelMode(const ScopedKernelMode&) = delete;
  ScopedKernelMode& operator=(const ScopedKernelMode&) = delete;

 private:
  KernelMode previous_;
};

}  // namespace cnx::sparse_ops
