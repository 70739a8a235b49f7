#pragma once
// The project's own AVX-512 GEMM kernels for the pointwise Linears (the
// `cnx` GEMM path of model/onednn_matmul.h; docs/model.md, "GEMM path"):
// float32, row-major activations (M rows of sites, any row stride), small
// weights.
//
//   forward  y = x w^T + b [then the exact GELU]   x (M, K), w (N, K)
//   dgrad    dx = dy w                              dy (M, N), w (N, K)
//   wgrad    dw = dy^T x, db = column sums of dy    reduction over M
//
// The weights (forward, dgrad) are packed once per call into panels of 16,
// 32 or 48 columns (zero-padded); a microkernel keeps an 8 x 48 (or 8 x 32,
// 8 x 16) tile of zmm accumulators over a block of the reduction and adds
// it into the output in float32. Reductions are cut into nearly equal blocks
// of at most kCnxKBlock (forward, dgrad; the panel block then stays in L1)
// or chunks of kCnxWgradChunk rows (wgrad, both operands packed per chunk),
// as OpenBLAS's driver and the oneDNN path do: one long float32 chain over
// K = 2048 rounds measurably worse. The epilogue adds the bias (first block)
// and applies the GELU (last block) while the tile is in registers; in
// training it stores the pre-activation and the GELU output from the same
// tile (two stores, one GEMM).
//
// Threading: at 1 intra-op thread everything runs on the caller's thread; at
// more, one at::parallel_for per GEMM splits the rows (forward, dgrad; each
// output row is computed the same way whatever the split) or the wgrad's row
// chunks into one contiguous range per thread (each its own partial dw, db,
// summed in thread order after the region). Results are bitwise the same run
// to run at a given thread count; forward and dgrad also across counts.
//
// Only on CPUs with AVX-512F (and the OS saving its state): cnx_gemm_supported().
// The kernels are compiled for AVX-512 in functions of their own; calling
// anything here on another CPU throws CheckError instead of faulting.
#include <ATen/ATen.h>

#include <cstdint>

namespace cnx::model {

// Whether this CPU can run the kernels (AVX-512F with OS support).
bool cnx_gemm_supported();

// Rows of the wgrad reduction added up in registers before the partial sum
// goes into the output (float32).
constexpr int64_t kCnxWgradChunk = 128;
// Largest block of the forward/dgrad reduction kept in registers.
constexpr int64_t kCnxKBlock = 160;

// y (M, N) = x (M, K) w^T + b, then GELU when `gelu`. x: float32 CPU, 2-D,
// unit column stride (any row stride); w (N, K) float32 (copied when not
// contiguous); b (N) or undefined. `pre`: when not null and `gelu`, also
// gets the pre-activation z = x w^T + b from the same pass (training keeps
// it for the GELU backward). `out`/`pre` tensors given defined and of the
// right shape (contiguous) are written in place; otherwise allocated.
at::Tensor cnx_linear_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool gelu,
                              at::Tensor* pre = nullptr, at::Tensor out = {});
// dx (M, K) = dy (M, N) w (N, K).
at::Tensor cnx_linear_dgrad(const at::Tensor& dy, const at::Tensor& w, at::Tensor out = {});
// dw (N, K) = dy (M, N)^T x (M, K); `db`, when not null, gets the column
// sums of dy (N) from the same pass.
at::Tensor cnx_linear_wgrad(const at::Tensor& dy, const at::Tensor& x, at::Tensor* db = nullptr, at::Tensor out = {});

// y = x w^T + b [GELU] for 2-D x, differentiable in x, w and b: the forward
// and the three gradients above in a custom autograd function; the GELU
// backward is LibTorch's (at::gelu_backward) on the kept pre-activation (or
// the recomputed one, GeluBackward::kRecompute of onednn_matmul.h).
at::Tensor cnx_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, bool gelu);

// GEMMs run by these kernels in this process so far (tests check which path ran).
int64_t cnx_gemm_calls();

}  // namespace cnx::model
