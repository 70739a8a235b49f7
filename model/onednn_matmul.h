#pragma once
// The pointwise Linears of a ConvNeXt V2 block (pwconv1 + GELU, pwconv2) on
// one of three GEMM paths (docs/model.md, "GEMM path"):
//
//   * cnx     the project's AVX-512 kernels (model/cnx_gemm.h): forward with
//             the bias and the exact GELU in the epilogue (in training the
//             pre-activation and the GELU output stored from one pass),
//             dgrad, and wgrad with the bias gradient fused, in a custom
//             autograd function; the GELU backward as on the onednn path.
//             Only on CPUs with AVX-512F (checked at run time).
//   * blas    at::linear (+ at::gelu): LibTorch's GEMM, i.e. the system BLAS
//             (OpenBLAS on Debian). The only path for anything but float32
//             CPU tensors (float64, CUDA, bfloat16 under autocast).
//   * onednn  oneDNN matmul primitives (Debian's libdnnl 2.6, the one
//             LibTorch 1.13 itself loads): forward with the bias and the
//             exact (erf) GELU as post-ops, and a custom autograd function
//             whose backward runs dgrad (dY W) and wgrad (dY^T X) as matmul
//             primitives on transposed views (no copies), the bias gradient
//             as a column sum, the GELU backward with LibTorch's
//             at::gelu_backward on the kept pre-activation. Primitives are
//             cached by shape, strides and thread count (the training step
//             repeats its shapes); a handful of shapes per model.
//   * auto    at 1 intra-op thread (at::get_num_threads(), read at each
//             call) onednn when this build has it, else cnx on CPUs with
//             AVX-512F, else blas; at more threads cnx on AVX-512 CPUs, else
//             blas. Measured (bench/model/README.md): at 1 thread onednn and
//             cnx tie on the step and beat blas; at 2 threads onednn lost to
//             blas, cnx beat it.
//
// The choice is process-wide: the environment variable CNX_GEMM
// (auto|cnx|onednn|blas, read at first use) or set_gemm_path (the programs'
// --gemm flag). Builds without oneDNN (CMake did not find dnnl.hpp and
// libdnnl, or LibTorch does not load Debian's libdnnl.so.2, e.g. PyPI's
// wheel) have no onednn path; CPUs without AVX-512F no cnx path; asking for
// a missing one is an error naming the flag or variable.
//
// The paths compute the same function; tests/model/onednn_matmul_test.cc and
// tests/model/cnx_gemm_test.cc check onednn and cnx against the blas path
// and a float64 oracle.
// Threading: calls may run concurrently (the primitive cache is guarded; each
// call has its own scratchpad); oneDNN runs on LibTorch's OpenMP threads
// (at::set_num_threads).
#include <ATen/ATen.h>

#include <string>

namespace cnx::model {

enum class GemmPath { kAuto, kOnednn, kBlas, kCnx };

// "auto" | "cnx" | "onednn" | "blas"; anything else (onednn in a build
// without oneDNN, cnx on a CPU without AVX-512F) throws CheckError naming
// `what` (flag or variable).
GemmPath parse_gemm_path(const std::string& value, const std::string& what);
const char* gemm_path_name(GemmPath path);

// Whether this build has the oneDNN path, and oneDNN's version ("2.6.3"; ""
// without it).
bool has_onednn_gemm();
std::string onednn_version();

// The process-wide setting (CNX_GEMM or kAuto until set) and what it runs
// for float32 CPU tensors now: kCnx, kOnednn or kBlas (never kAuto).
GemmPath gemm_path();
void set_gemm_path(GemmPath path);
GemmPath effective_gemm_path();
// One line for the start-up log, e.g. "GEMM path onednn (oneDNN 2.6.3 matmul
// for the blocks' pointwise Linears; CNX_GEMM=auto)".
std::string describe_gemm_path();
// Logs "<program>: <describe_gemm_path()>" on stderr, beside the BLAS line
// of common/blas_info.h (every program that trains or evaluates calls it
// first thing). A bad CNX_GEMM ends the program with exit status 2.
void log_gemm_path(const char* program);

// y = x w^T + b, then the exact GELU when `gelu`: x (M, K) (any leading
// dims), w (N, K), b (N) or undefined. Differentiable in x, w and b on every
// path; the path is the effective one at the call (float32 CPU tensors
// outside autocast take cnx or oneDNN when chosen, everything else blas).
at::Tensor pointwise_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool gelu);

// How the onednn and cnx paths give the GELU backward its pre-activation
// z = x w^T + b: kKeep computes z and GELU(z) in the forward (onednn: apart,
// GELU by LibTorch; cnx: both stored from the same tile) and keeps z; kRecompute runs the forward with GELU fused and
// recomputes z in the backward (one more GEMM, one M x N tensor less kept). Process-wide; kKeep unless
// CNX_ONEDNN_GELU=recompute (bench/model/README.md has the measurement). Inference (no gradient) always runs the fused
// form.
enum class GeluBackward { kKeep, kRecompute };
GeluBackward gelu_backward_mode();
void set_gelu_backward_mode(GeluBackward mode);

// The raw primitive, for tests and benchmarks: out (m, n) = a (m, k) b (k, n)
// [+ bias (n)] [then GELU], float32 CPU 2-D tensors with any strides where
// one of each operand's two strides is 1 (views such as w.t() need no copy).
// Throws CheckError in a build without oneDNN.
at::Tensor onednn_matmul(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias, bool gelu);

// oneDNN matmul executions in this process so far (tests check which path ran).
int64_t onednn_matmul_calls();

}  // namespace cnx::model
