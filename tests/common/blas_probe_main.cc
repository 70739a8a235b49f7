// cnx-blas-probe (test helper): runs the start-up BLAS check every computing
// program runs, prints the kernel set that ended up loaded, and checks that
// set's sgemm against a float64 oracle on the FCMAE step's GEMM shapes
// (through LibTorch, as the model calls it). blas_info_test.cc runs it with
// OPENBLAS_CORETYPE forced to each kernel set this CPU can run.
//
// stdout: "core=<name>" then one "shape ... max_err=... bound=... ok|FAIL" line
// per GEMM. Exit 0 when every GEMM is within its bound, 1 otherwise.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "common/blas_info.h"

namespace {

// C = op(A) @ op(B) in float32 through torch::mm against a float64 loop over
// every `row_stride`-th row of C. Bound per element: 4 sqrt(K) eps32
// sum_k |a_ik b_kj| (rounding of a float32 dot product of length K, with a
// wide margin; a wrong kernel is off by O(1)).
bool check(const char* what, int64_t m, int64_t k, int64_t n, bool trans_a, bool trans_b, int64_t row_stride) {
  torch::manual_seed(m + 7 * k + 13 * n);
  // Stored as the transposes when trans_*, so the GEMM sees strided operands.
  auto a_store = trans_a ? torch::randn({k, m}) : torch::randn({m, k});
  auto b_store = trans_b ? torch::randn({n, k}) : torch::randn({k, n});
  auto a = trans_a ? a_store.t() : a_store;
  auto b = trans_b ? b_store.t() : b_store;
  auto c = torch::mm(a, b).contiguous();
  auto a64 = a.to(torch::kDouble).contiguous(), b64 = b.to(torch::kDouble).t().contiguous();  // b64: n x k
  const double* pa = a64.data_ptr<double>();
  const double* pb = b64.data_ptr<double>();
  const float* pc = c.data_ptr<float>();
  const double eps = std::ldexp(1.0, -24), scale = 4.0 * std::sqrt(static_cast<double>(k)) * eps;
  double worst_ratio = 0, worst_err = 0, worst_bound = 0;
  for (int64_t i = 0; i < m; i += row_stride) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0, abs_sum = 0;
      const double* ra = pa + i * k;
      const double* rb = pb + j * k;
      for (int64_t t = 0; t < k; ++t) {
        const double p = ra[t] * rb[t];
        sum += p;
        abs_sum += std::fabs(p);
      }
      const double err = std::fabs(static_cast<double>(pc[i * n + j]) - sum);
      const double bound = scale * abs_sum + 1e-30;
      if (err / bound > worst_ratio || std::isnan(err)) {
        worst_ratio = std::isnan(err) ? INFINITY : err / bound;
        worst_err = err;
        worst_bound = bound;
      }
    }
  }
  const bool ok = worst_ratio <= 1.0;
  std::printf("shape %s (%lldx%lld)%s(%lldx%lld)%s max_err=%.3g bound=%.3g %s\n", what, static_cast<long long>(m),
              static_cast<long long>(k), trans_a ? "T" : "", static_cast<long long>(k), static_cast<long long>(n),
              trans_b ? "T" : "", worst_err, worst_bound, ok ? "ok" : "FAIL");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  cnx::blas::init_compute_environment("cnx-blas-probe", argc, argv);
  const std::string only_core = argc > 1 ? argv[1] : "";
  std::printf("core=%s\n", cnx::blas::query_blas().core.c_str());
  if (only_core == "--core-only") return 0;
  at::set_num_threads(2);
  bool ok = true;
  // The FCMAE-atto stage-0 pointwise Linears at batch 32 (38912 visible
  // cells ~ 40000 rows, C = 40, 4C = 160): forward of fc1 and fc2, and their
  // input and weight gradients; then a square GEMM (the ceiling's shape,
  // smaller).
  ok &= check("fc1.fwd", 40000, 40, 160, false, true, 7);
  ok &= check("fc2.fwd", 40000, 160, 40, false, true, 7);
  ok &= check("fc1.dgrad", 40000, 160, 40, false, false, 7);
  ok &= check("fc1.wgrad", 160, 40000, 40, true, false, 1);
  ok &= check("square", 512, 512, 512, false, false, 3);
  std::fflush(stdout);
  return ok ? 0 : 1;
}
