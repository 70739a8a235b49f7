#pragma once
// Per-op time and FLOP breakdown of whatever runs between start() and stop(),
// from LibTorch's RecordFunction callbacks (works with LibTorch 1.13 and 2.x).
//
// Every op that is not nested in another recorded op ("top-level": an aten op
// called by the model, an autograd node of the backward, a user scope such as
// the optimizer step) gets one row: calls, inclusive time, and the FLOPs of
// the GEMM-like ops inside it. FLOPs are counted from input shapes at the
// outermost op that has a rule (a multiply-add = 2 FLOPs):
//   aten::mm / addmm / matmul / linear / bmm : 2*M*K*N (per batch for bmm);
//   aten::convolution (and its aliases) : 2 * out elements * Cin/groups * kh*kw;
//   aten::convolution_backward : the forward count per requested input/weight gradient;
//   cnx::sparse_dwconv_forward (x [M,C], map [M,K]) : 2*M*C*K;
//   cnx::sparse_dwconv_backward (g [M,C], map [M,K]) : 2*M*C*K per gradient (input, weight).
// Element-wise work (norms, activations, GRN, residual adds, the optimizer) is
// counted as 0 FLOPs, as in the model's analytic count (model/complexity.h).
//
// Threading: the callbacks are global; ops on any thread are recorded, each
// thread nesting its own ops. Profiling costs a few microseconds per op, so
// time the step without it and use the profile for shares only.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace cnx::bench {

struct OpRow {
  std::string name;  // op or autograd node name, shortened
  bool backward = false;
  int64_t calls = 0;
  double seconds = 0.0;  // inclusive
  double flops = 0.0;
};

class OpProfile {
 public:
  OpProfile();
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  void start();  // clears and starts recording
  void stop();

  // Top-level ops, sorted by time, largest first.
  std::vector<OpRow> rows() const;
  // The FLOP-counting ops themselves (GEMMs, convolutions, sparse depthwise
  // convs), one row per op and input shapes ("T": a transposed 2-D operand),
  // sorted by time: how fast each GEMM shape runs.
  std::vector<OpRow> flop_rows() const;

 private:
  static std::vector<OpRow> sorted(const std::map<std::pair<std::string, bool>, OpRow>& rows);
  uint64_t handle_ = 0;
  bool active_ = false;
};

// A human-readable table of `rows` per step (each row's time and FLOPs
// divided by `steps`): ms, share of the profiled total, GFLOP, GFLOP/s.
// Rows under `min_share` of the profiled total are folded into one line.
std::string format_breakdown(const std::vector<OpRow>& rows, int steps, const std::string& title,
                             double min_share = 0.005);

}  // namespace cnx::bench
