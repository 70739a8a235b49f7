#include "model/fcmae.h"

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/init.h>

#include <cmath>
#include <stdexcept>

#include "common/check.h"
#include "common/rng.h"
#include "model/fcmae_encoder.h"
#include "model/fcmae_loss.h"
#include "model/onednn_matmul.h"
#include "sparse_ops/backend.h"
#include "sparse_ops/layout.h"

namespace cnx::model {
namespace {

namespace nn = torch::nn;

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("FcmaeOptions: " + message);
}

void init_conv(nn::Conv2d& conv, double std) {
  torch::NoGradGuard no_grad;
  trunc_normal_(conv->weight, std);
  if (conv->bias.defined()) conv->bias.zero_();
}

void init_linear(nn::Linear& linear, double std) {
  torch::NoGradGuard no_grad;
  trunc_normal_(linear->weight, std);
  if (linear->bias.defined()) linear->bias.zero_();
}

void init_norm(LayerNorm& norm) {
  torch::NoGradGuard no_grad;
  norm->weight.fill_(1.0);
  norm->bias.zero_();
}

void init_block(Block& blk, double conv_std, bool default_linears, double linear_std) {
  init_conv(blk->dwconv, conv_std);
  init_norm(blk->norm);
  if (!default_linears) {
    init_linear(blk->pwconv1, linear_std);
    init_linear(blk->pwconv2, linear_std);
  }
  if (!blk->has_grn()) return;  // a v1 block keeps its layer scale at layer_scale_init
  torch::NoGradGuard no_grad;
  blk->grn->gamma.zero_();
  blk->grn->beta.zero_();
}

ConvNeXtV2Options encoder_net_options(const FcmaeOptions& options) {
  ConvNeXtV2Options o = options.encoder;
  o.num_classes = 0;
  o.drop_path_rate = 0.0;
  return o;
}

// Masked mean of per-patch mean squared errors with a hand-written backward:
// loss = sum_{n,l} m[n,l] * mean_d (pr - target)^2 / sum m, gradient for pr
// only (target is a constant). One pass forward (difference; its per-patch
// sum of squares is read through a norm, no squared copy) and one backward,
// instead of autograd's chain of full-size temporaries (sub, pow, mean and
// their backwards) over the N x L x D prediction.
class MaskedMseFn : public torch::autograd::Function<MaskedMseFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& pr,
                               const torch::Tensor& target, const torch::Tensor& m) {
    auto diff = pr - target;
    auto norm = at::linalg_vector_norm(diff, 2, at::IntArrayRef{-1}, /*keepdim=*/false, c10::nullopt);
    const double d = static_cast<double>(pr.size(-1));
    auto msum = m.sum();
    ctx->save_for_backward({diff, m, msum});
    ctx->saved_data["d"] = d;
    ctx->saved_data["dtype"] = static_cast<int64_t>(pr.scalar_type());
    return (norm * norm / d * m).sum() / msum;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const double d = ctx->saved_data["d"].toDouble();
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    auto scale = (saved[1] * (grads[0] * (2.0 / d) / saved[2])).unsqueeze(-1);
    return {(saved[0] * scale).to(dtype), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

FcmaeOptions fcmae_options(const std::string& variant) {
  FcmaeOptions o;
  o.encoder = variant_options(variant);
  return o;
}

namespace {
bool known_encoder_type(const std::string& type) {
  return type == "sparse" || type == "dense_masked" || type == "dense";
}
}  // namespace

void validate(const FcmaeOptions& options) {
  validate(encoder_net_options(options));
  require(options.decoder_dim > 0, "decoder_dim must be positive, got " + std::to_string(options.decoder_dim));
  require(options.decoder_depth >= 1, "decoder_depth must be >= 1, got " + std::to_string(options.decoder_depth));
  require(known_encoder_type(options.encoder_type),
          "encoder must be \"sparse\", \"dense_masked\" or \"dense\", got \"" + options.encoder_type + "\"");
  require(options.init == "reference" || options.init == "std02",
          "init must be \"reference\" or \"std02\", got \"" + options.init + "\"");
}

int64_t num_visible(int64_t num_patches, double ratio) {
  CNX_CHECK(ratio >= 0.0 && ratio <= 1.0, "mask ratio must be in [0, 1], got ", ratio);
  return static_cast<int64_t>(static_cast<double>(num_patches) * (1.0 - ratio));
}

torch::Tensor generate_mask(int64_t n, int64_t h_patches, int64_t w_patches, double ratio, uint64_t seed) {
  CNX_CHECK(n > 0 && h_patches > 0 && w_patches > 0, "generate_mask: n=", n, " h_patches=", h_patches,
            " w_patches=", w_patches, " must all be positive");
  const int64_t l = h_patches * w_patches;
  const int64_t keep = num_visible(l, ratio);
  auto mask = torch::ones({n, l}, torch::kFloat);
  float* m = mask.data_ptr<float>();
  std::vector<int64_t> perm(l);
  for (int64_t row = 0; row < n; ++row) {
    uint64_t state = seed;
    state = splitmix64(state) ^ (static_cast<uint64_t>(row) + 1) * 0xD1B54A32D192ED03ULL;
    for (int64_t i = 0; i < l; ++i) perm[i] = i;
    // Partial Fisher-Yates: the first `keep` entries are a uniform sample.
    for (int64_t j = 0; j < keep; ++j) {
      const uint64_t bound = static_cast<uint64_t>(l - j);
      const uint64_t r = splitmix64(state);
      const int64_t pick = j + static_cast<int64_t>((static_cast<unsigned __int128>(r) * bound) >> 64);
      std::swap(perm[j], perm[pick]);
      m[row * l + perm[j]] = 0.f;
    }
  }
  return mask;
}

torch::Tensor patchify(const torch::Tensor& images, int64_t p) {
  CNX_CHECK(images.dim() == 4 && images.size(2) % p == 0 && images.size(3) % p == 0, "patchify: images ",
            images.sizes(), " are not (N, C, H, W) with H, W multiples of ", p);
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2) / p, w = images.size(3) / p;
  return images.reshape({n, c, h, p, w, p}).permute({0, 2, 4, 3, 5, 1}).reshape({n, h * w, p * p * c});
}

torch::Tensor unpatchify(const torch::Tensor& patches, int64_t p, int64_t h, int64_t w) {
  CNX_CHECK(patches.dim() == 3 && patches.size(1) == h * w && patches.size(2) % (p * p) == 0, "unpatchify: patches ",
            patches.sizes(), " do not hold ", h, "x", w, " patches of size ", p);
  const int64_t n = patches.size(0), c = patches.size(2) / (p * p);
  return patches.reshape({n, h, w, p, p, c}).permute({0, 5, 1, 3, 2, 4}).reshape({n, c, h * p, w * p});
}

torch::Tensor fcmae_loss(const torch::Tensor& images, const torch::Tensor& pred, const torch::Tensor& mask, int64_t p,
                         bool norm_pix_loss) {
  RECORD_FUNCTION("cnx::fcmae_loss", std::vector<c10::IValue>());
  const at::Tensor images_f =
      images.scalar_type() == at::kHalf || images.scalar_type() == at::kBFloat16 ? images.to(at::kFloat) : images;
  CNX_CHECK(images.dim() == 4 && images.size(2) % p == 0 && images.size(3) % p == 0, "patchify: images ",
            images.sizes(), " are not (N, C, H, W) with H, W multiples of ", p);
  const int64_t n = images.size(0), l = (images.size(2) / p) * (images.size(3) / p), d = p * p * images.size(1);
  CNX_CHECK(pred.dim() == 4 && pred.size(0) == n && pred.size(1) == d && pred.size(2) * pred.size(3) == l,
            "fcmae_loss: prediction ", pred.sizes(), " does not match ", l, " patches of ", d, " values");
  CNX_CHECK(mask.numel() == n * l, "fcmae_loss: mask ", mask.sizes(), " does not hold ", l, " patches per image");
  // The loss in float32 (at least): a reduced-precision prediction (mixed
  // precision, precision.h) is cast up; float32/float64 ones are used as they are.
  const at::Tensor pred_f =
      pred.scalar_type() == at::kHalf || pred.scalar_type() == at::kBFloat16 ? pred.to(at::kFloat) : pred;
  auto m = mask.reshape({n, l}).to(pred_f.scalar_type());
  const double masked = m.sum().item<double>();
  CNX_CHECK(masked > 0, "fcmae_loss: no patch is masked (mask_ratio 0?), the reconstruction loss is undefined");
  if (!images.requires_grad() && images_f.scalar_type() == pred_f.scalar_type() && images_f.device().is_cpu() &&
      pred.size(2) == images.size(2) / p && sparse_ops::kernel_path(pred_f) == sparse_ops::KernelPath::kCpu) {
    // CPU float/double in kernel mode auto: the fused kernel (fcmae_loss.h);
    // kernel mode generic keeps the ATen formulation below as its reference.
    return detail::fused_masked_loss_cpu(images_f, pred_f, m, p, norm_pix_loss);
  }
  auto target = patchify(images_f, p);
  if (norm_pix_loss) {
    auto mean = target.mean(-1, true);
    auto var = target.var(-1, /*unbiased=*/true, /*keepdim=*/true);
    target = (target - mean) / (var + 1e-6).sqrt();
  }
  // (N, L, D) view of the prediction, without a copy for either memory format.
  auto pr = pred_f.permute({0, 2, 3, 1}).is_contiguous() ? pred_f.permute({0, 2, 3, 1}).reshape({n, l, d})
                                                         : pred_f.reshape({n, d, l}).permute({0, 2, 1});
  if (images.requires_grad()) {
    auto per_patch = (pr - target).pow(2).mean(-1);
    return (per_patch * m).sum() / m.sum();
  }
  return MaskedMseFn::apply(pr, target, m);
}

FcmaeEncoderImpl::FcmaeEncoderImpl(ConvNeXtV2 model) : net(std::move(model)) {
  register_module("downsample_layers", net->downsample_layers());
  register_module("stages", net->stages());
}

FcmaeImpl::FcmaeImpl(FcmaeOptions options) : options_(std::move(options)) {
  validate(options_);
  encoder = register_module("encoder", FcmaeEncoder(ConvNeXtV2(encoder_net_options(options_))));
  patch_size_ = encoder_patch_size(*encoder->net);
  const int64_t c3 = options_.encoder.dims.back();
  proj = register_module("proj", nn::Conv2d(nn::Conv2dOptions(c3, options_.decoder_dim, 1)));
  mask_token = register_parameter("mask_token", torch::zeros({1, options_.decoder_dim, 1, 1}));
  decoder = register_module("decoder", nn::Sequential());
  for (int64_t i = 0; i < options_.decoder_depth; ++i) decoder->push_back(Block(options_.decoder_dim, 0.0));
  pred = register_module("pred", nn::Conv2d(nn::Conv2dOptions(
                                     options_.decoder_dim, patch_size_ * patch_size_ * options_.encoder.in_chans, 1)));
  init_weights();
}

void FcmaeImpl::init_weights() {
  // reference: the reference FCMAE's _init_weights (docs/model.md, "Init");
  // std02: 0.02 everywhere like the dense model.
  const bool ref = options_.init == "reference";
  const double big = ref ? 1.0 : 0.02;
  auto& net = *encoder->net;
  auto stem = net.stem_conv();
  init_conv(stem, big);
  auto stem_norm = net.stem_norm();
  init_norm(stem_norm);
  for (int64_t s = 1; s < net.num_stages(); ++s) {
    auto conv = net.downsample_conv(s);
    init_conv(conv, 0.02);
    auto ln = net.downsample_norm(s);
    init_norm(ln);
  }
  for (int64_t s = 0; s < net.num_stages(); ++s) {
    for (auto blk : net.stage_blocks(s)) init_block(blk, big, /*default_linears=*/false, big);
  }
  init_conv(proj, big);
  init_conv(pred, big);
  for (auto& m : *decoder) {
    auto blk = m.ptr<BlockImpl>();
    CNX_CHECK(blk != nullptr, "FCMAE decoder holds a module that is not a Block");
    Block b(blk);
    init_block(b, big, /*default_linears=*/ref, 0.02);
  }
  torch::NoGradGuard no_grad;
  mask_token.normal_(0.0, 0.02);
}

void FcmaeImpl::set_encoder_type(const std::string& type) {
  CNX_CHECK(known_encoder_type(type), "FCMAE encoder must be \"sparse\", \"dense_masked\" or \"dense\", got \"", type,
            "\"");
  options_.encoder_type = type;
}

torch::Tensor FcmaeImpl::forward_encoder(const torch::Tensor& images, const torch::Tensor& mask) {
  if (options_.encoder_type == "sparse") return sparse_encode(*encoder->net, images, mask);
  if (options_.encoder_type == "dense") return dense_encode(*encoder->net, images, mask);
  return dense_masked_encode(*encoder->net, images, mask, options_.dense_channels_last);
}

torch::Tensor FcmaeImpl::forward_decoder(const torch::Tensor& latent, const torch::Tensor& mask) {
  // The dense encoder's latent is dense at masked patches too; the mask
  // tokens replace them in either decoder.
  if (options_.encoder_type != "dense_masked") return sparse_decoder(latent, mask);
  auto x = proj->forward(latent);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  CNX_CHECK(mask.numel() == n * h * w, "FCMAE decoder: mask ", mask.sizes(), " does not hold ", h, "x", w,
            " patches for each of ", n, " images");
  at::Tensor m;
  {
    RECORD_FUNCTION("cnx::fcmae_mask_tokens", std::vector<c10::IValue>());
    m = mask.reshape({n, 1, h, w}).to(x.scalar_type());
    x = x * (1 - m) + mask_token * m;
  }
  x = decoder->forward(x);
  return pred->forward(x);
}

torch::Tensor FcmaeImpl::sparse_decoder(const torch::Tensor& latent, const torch::Tensor& mask) {
  CNX_CHECK(latent.dim() == 4, "FCMAE decoder: latent must be (N, C, h, w), got ", latent.sizes());
  const int64_t n = latent.size(0), c = latent.size(1), h = latent.size(2), w = latent.size(3);
  const int64_t d = options_.decoder_dim, out = pred->options.out_channels();
  CNX_CHECK(mask.numel() == n * h * w, "FCMAE decoder: mask ", mask.sizes(), " does not hold ", h, "x", w,
            " patches for each of ", n, " images");
  // Rows (n, y, x), channels contiguous: a view of the sparse encoder's output.
  auto x = pointwise_linear(latent.permute({0, 2, 3, 1}).reshape({n * h * w, c}), proj->weight.reshape({d, c}),
                            proj->bias, /*gelu=*/false);
  {
    RECORD_FUNCTION("cnx::fcmae_mask_tokens", std::vector<c10::IValue>());
    auto m = mask.reshape({n * h * w, 1}).to(x.scalar_type());
    x = x * (1 - m) + mask_token.reshape({1, d}) * m;
  }
  auto layout =
      sparse_ops::layout_from_patch_mask(at::zeros({n, h * w}, mask.options().dtype(at::kFloat)), h, w, 1, x.device());
  at::Tensor neighbours;
  for (auto& m : *decoder) {
    auto blk = m.ptr<BlockImpl>();
    CNX_CHECK(blk != nullptr, "FCMAE decoder holds a module that is not a Block");
    if (!neighbours.defined())
      neighbours = sparse_ops::neighbour_map(layout, blk->dwconv->options.kernel_size()->at(0));
    x = sparse_block(*blk, x, neighbours, layout.offsets, is_training());
  }
  auto p = pointwise_linear(x, pred->weight.reshape({out, d}), pred->bias, /*gelu=*/false);
  return p.view({n, h, w, out}).permute({0, 3, 1, 2});
}

FcmaeOutput FcmaeImpl::forward(const torch::Tensor& images, const torch::Tensor& mask) {
  CNX_CHECK(images.dim() == 4 && images.size(2) % patch_size_ == 0 && images.size(3) % patch_size_ == 0,
            "FCMAE: images must be (N, C, H, W) with H and W multiples of ", patch_size_, ", got ", images.sizes());
  FcmaeOutput out;
  out.mask = mask.to(images.device());
  auto latent = forward_encoder(images, out.mask);
  out.pred = forward_decoder(latent, out.mask);
  out.loss = fcmae_loss(images, out.pred, out.mask, patch_size_, options_.norm_pix_loss);
  return out;
}

}  // namespace cnx::model
