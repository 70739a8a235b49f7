#pragma once
// Helpers shared by the sparse_ops tests: random masks and a central
// finite-difference gradient check (double precision).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard (ATen.h no longer brings it in LibTorch 2.x)
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace cnx::sparse_ops::testing {

// (N, h, w) 0/1 float mask with probability `p_masked` of 1, seeded.
inline at::Tensor random_mask(int64_t n, int64_t h, int64_t w, double p_masked, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::rand({n, h, w}, gen, at::kDouble).lt(p_masked).to(at::kFloat);
}

inline at::Tensor seeded_randn(at::IntArrayRef sizes, uint64_t seed, at::ScalarType dtype) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(sizes, gen, at::kDouble).to(dtype);
}

// Norm-wise relative error ||a-b||_2 / ||b||_2 (floor for all-zero b): one
// number per tensor pair, insensitive to where in the tensor rounding lands.
inline double rel_err(const at::Tensor& a, const at::Tensor& b, double floor = 1e-12) {
  auto ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  const double scale = std::max(bd.norm().item<double>(), floor);
  return (ad - bd).norm().item<double>() / scale;
}

#define CNX_EXPECT_CLOSE(a, b, tol, what)                                                      \
  do {                                                                                         \
    ASSERT_EQ((a).sizes(), (b).sizes()) << what;                                               \
    if ((a).numel() > 0) {                                                                     \
      const double cnx_err_ = ::cnx::sparse_ops::testing::rel_err((a), (b));                   \
      EXPECT_LE(cnx_err_, (tol)) << what << ": relative error " << cnx_err_ << " > " << (tol); \
    }                                                                                          \
  } while (0)

// Checks d(sum(f() * R))/d(input) of every tensor in `inputs` (double,
// requires_grad) against central differences, element by element.
inline void finite_difference_check(const std::function<at::Tensor()>& f, std::vector<at::Tensor> inputs,
                                    const std::vector<std::string>& names, double tol = 1e-6) {
  auto out = f();
  auto r = seeded_randn(out.sizes(), 1234, at::kDouble);
  for (auto& t : inputs) {
    if (t.grad().defined()) t.mutable_grad().zero_();
  }
  (out * r).sum().backward();
  const double h = 1e-6;
  for (size_t q = 0; q < inputs.size(); ++q) {
    auto& t = inputs[q];
    ASSERT_TRUE(t.grad().defined()) << names[q] << " got no gradient";
    auto analytic = t.grad().clone();
    auto numeric = at::zeros_like(analytic);
    at::NoGradGuard guard;
    auto flat = t.view({-1});
    auto num_flat = numeric.view({-1});
    for (int64_t e = 0; e < flat.numel(); ++e) {
      const double v = flat[e].item<double>();
      flat[e].fill_(v + h);
      const double lp = (f() * r).sum().item<double>();
      flat[e].fill_(v - h);
      const double lm = (f() * r).sum().item<double>();
      flat[e].fill_(v);
      num_flat[e].fill_((lp - lm) / (2 * h));
    }
    const double err =
        (analytic - numeric).abs().max().item<double>() / std::max(1.0, numeric.abs().max().item<double>());
    EXPECT_LE(err, tol) << names[q] << ": analytic vs finite-difference gradient differ by " << err;
  }
}

}  // namespace cnx::sparse_ops::testing
