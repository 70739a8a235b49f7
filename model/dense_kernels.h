#pragma once
// The dense ConvNeXt V2 (convnextv2.h) run through one of three kernel sets,
// all the same function of the same weights (tests/model/dense_kernels_test.cc):
//
//   * kLibTorch             ConvNeXtV2::forward on contiguous (NCHW) input;
//   * kLibTorchChannelsLast ConvNeXtV2::forward on channels-last input (LibTorch
//                           then runs its convolutions in channels-last form);
//   * kCnx                  our sparse kernels (sparse_encode, fcmae_encoder.h)
//                           on a layout where every site is visible: a dense
//                           model whose depthwise conv, GRN, stem and downsample
//                           are the hand-written kernels, then LibTorch's
//                           mean pool, LayerNorm and head.
//
// kCnx is the default: its training step (forward, cross-entropy, backward,
// AdamW) is the fastest on CPU (bench/model/README.md). It needs H and W to be
// multiples of the encoder's stride (32); other sizes run kLibTorchChannelsLast.
// Drop path: in training mode kCnx drops per sample like the dense model
// (sparse_drop_path.h; on CPU the same samples for the same seed).
//
// Threading: as ConvNeXtV2; the all-visible geometry of each batch shape is
// built once and cached process-wide (a few entries, guarded by a mutex).
#include <ATen/ATen.h>

#include <string>

#include "model/convnextv2.h"

namespace cnx::model {

enum class DenseKernels { kLibTorch, kLibTorchChannelsLast, kCnx };

// "libtorch" | "libtorch-cl" | "cnx" -> kernels; anything else throws
// CheckError naming `what` (e.g. the flag) and the accepted values.
DenseKernels parse_dense_kernels(const std::string& value, const std::string& what);
const char* dense_kernels_name(DenseKernels kernels);

// Process-wide choice used by the overloads without a `kernels` argument:
// the environment variable CNX_DENSE_KERNELS (read once, at first use) or
// kCnx; set_dense_kernels overrides it (tools set it from --kernels).
DenseKernels dense_kernels();
void set_dense_kernels(DenseKernels kernels);

// What `kernels` means for images of this size: kCnx falls back to
// kLibTorchChannelsLast when H or W is not a multiple of the encoder stride.
DenseKernels effective_dense_kernels(const ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels);

// As ConvNeXtV2Impl::forward_encoder / forward_features / forward, with
// images (N, in_chans, H, W) in any memory format.
at::Tensor dense_forward_encoder(ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels);
at::Tensor dense_forward_features(ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels);
at::Tensor dense_forward(ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels);
at::Tensor dense_forward_features(ConvNeXtV2Impl& net, const at::Tensor& images);
at::Tensor dense_forward(ConvNeXtV2Impl& net, const at::Tensor& images);

}  // namespace cnx::model
