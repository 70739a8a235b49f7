#pragma once
// The FCMAE reconstruction loss on the CPU as one fused kernel (internal;
// fcmae_loss in fcmae.h picks it): per masked patch the target is gathered
// from the image, standardised (norm_pix_loss: mean and unbiased variance in
// double, eps 1e-6 inside the square root) and compared with the prediction;
// the gradient for the prediction is written in the same pass. Visible
// patches (mask 0) cost a zero fill of their gradient rows only.
#include <torch/torch.h>

namespace cnx::model::detail {

// images: (N, C, H, W) float or double on the CPU; pred: (N, p*p*C, H/p, W/p)
// of the same dtype, NCHW or channels-last memory; m: (N, L) weights of the
// same dtype with sum(m) > 0. Returns the scalar loss
// sum_{n,l} m[n,l] * mean_d (pred - target)^2 / sum m, differentiable for pred.
torch::Tensor fused_masked_loss_cpu(const torch::Tensor& images, const torch::Tensor& pred, const torch::Tensor& m,
                                    int64_t patch_size, bool norm_pix_loss);

}  // namespace cnx::model::detail
