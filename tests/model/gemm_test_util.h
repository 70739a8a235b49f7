#pragma once
// Shared by the GEMM-path tests (onednn_matmul_test, cnx_gemm_test): a
// scoped GEMM-path switch and one FCMAE training step whose loss and
// parameter gradients two paths are compared on.
#include <ATen/ATen.h>
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "model/fcmae.h"
#include "model/onednn_matmul.h"
#include "model/precision.h"
#include "tests/sparse_ops/test_util.h"

namespace cnx::model::testing {

// Restores the process-wide GEMM path and GELU-backward mode a test changes.
class ScopedGemm {
 public:
  explicit ScopedGemm(GemmPath path, GeluBackward mode = GeluBackward::kKeep)
      : path_(gemm_path()), mode_(gelu_backward_mode()) {
    set_gemm_path(path);
    set_gelu_backward_mode(mode);
  }
  ~ScopedGemm() {
    set_gemm_path(path_);
    set_gelu_backward_mode(mode_);
  }
  ScopedGemm(const ScopedGemm&) = delete;
  ScopedGemm& operator=(const ScopedGemm&) = delete;

 private:
  GemmPath path_;
  GeluBackward mode_;
};

// Float64 and bfloat16 autocast stay on LibTorch's GEMM whatever `path`
// says: pointwise_linear (+ GELU) under `path` equals, bit for bit, its
// result under the BLAS path. The caller checks that `path` made no call.
inline void expect_float64_and_bf16_on_blas(GemmPath path, const at::Tensor& x, const at::Tensor& w,
                                            const at::Tensor& b) {
  at::Tensor ref_f64, ref_bf16;
  {
    ScopedGemm g(GemmPath::kBlas);
    ref_f64 = pointwise_linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble), true);
    PrecisionScope amp(Precision::kBf16, at::kCPU);
    ref_bf16 = pointwise_linear(x, w, b, true);
  }
  ScopedGemm g(path);
  EXPECT_TRUE(at::equal(pointwise_linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble), true), ref_f64));
  PrecisionScope amp(Precision::kBf16, at::kCPU);
  const auto y = pointwise_linear(x, w, b, true);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(y, ref_bf16));
}

struct StepResult {
  at::Tensor loss;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

// The model of the step comparisons: FCMAE atto (std02 init, decoder 64
// wide) with GRN gamma/beta drawn from N(0, 0.5) so that their gradients
// flow; 4 images of 64 px and a mask of half the 2x2 patches.
struct StepCase {
  Fcmae model{nullptr};
  at::Tensor images, mask;
};
inline StepCase make_step_case() {
  torch::manual_seed(5);
  auto options = fcmae_options("atto");
  options.init = "std02";
  options.decoder_dim = 64;
  StepCase c{Fcmae(options), {}, {}};
  {
    torch::NoGradGuard ng;
    for (auto& p : c.model->named_parameters()) {
      if (p.key().find(".grn.") != std::string::npos) p.value().normal_(0.0, 0.5);
    }
  }
  c.images = sparse_ops::testing::seeded_randn({4, 3, 64, 64}, 21, at::kFloat);
  c.mask = generate_mask(4, 2, 2, 0.5, 22);
  return c;
}

// One forward (under `precision`'s autocast) and backward: the loss and a
// copy of every parameter gradient.
inline StepResult fcmae_step(Fcmae& model, const at::Tensor& images, const at::Tensor& mask,
                             Precision precision = Precision::kFp32) {
  model->zero_grad();
  FcmaeOutput out;
  {
    PrecisionScope amp(precision, at::kCPU);
    out = model->forward(images, mask);
  }
  out.loss.backward();
  StepResult r{out.loss.detach(), {}};
  for (const auto& p : model->named_parameters()) r.grads.emplace_back(p.key(), p.value().grad().clone());
  return r;
}

}  // namespace cnx::model::testing
