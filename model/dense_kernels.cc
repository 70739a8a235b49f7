#include "model/dense_kernels.h"

#include <atomic>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>

#include "common/check.h"
#include "model/fcmae_encoder.h"

namespace cnx::model {
namespace {

DenseKernels initial_kernels() {
  const char* env = std::getenv("CNX_DENSE_KERNELS");
  return env && *env ? parse_dense_kernels(env, "CNX_DENSE_KERNELS") : DenseKernels::kCnx;
}

std::atomic<DenseKernels>& current_kernels() {
  static std::atomic<DenseKernels> kernels{initial_kernels()};
  return kernels;
}

// All-visible geometries by batch shape; a handful of entries (training and
// evaluation batches, a last partial batch), the oldest dropped first.
class GeometryCache {
 public:
  std::shared_ptr<const EncoderGeometry> get(int64_t n, int64_t hp, int64_t wp, int64_t stages, int64_t stem_stride,
                                             int64_t kernel, at::Device device) {
    const Key key{n, hp, wp, stages, stem_stride, kernel, device.str()};
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [k, geo] : entries_) {
      if (k == key) return geo;
    }
    const at::Tensor none = at::zeros({n, hp * wp}, at::kByte);
    auto geo =
        std::make_shared<const EncoderGeometry>(build_geometry(none, hp, wp, stages, stem_stride, kernel, device));
    entries_.emplace_back(key, geo);
    if (entries_.size() > kMaxEntries) entries_.pop_front();
    return geo;
  }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, std::string>;
  static constexpr size_t kMaxEntries = 4;
  std::mutex mutex_;
  std::deque<std::pair<Key, std::shared_ptr<const EncoderGeometry>>> entries_;
};

GeometryCache& geometry_cache() {
  static GeometryCache cache;
  return cache;
}

at::Tensor cnx_encoder(ConvNeXtV2Impl& net, const at::Tensor& images) {
  const int64_t p = encoder_patch_size(net);
  const int64_t kernel = net.block(0, 0)->dwconv->options.kernel_size()->at(0);
  auto geo = geometry_cache().get(images.size(0), images.size(2) / p, images.size(3) / p, net.num_stages(),
                                  net.stem_conv()->options.stride()->at(0), kernel, images.device());
  return sparse_encode(net, images, *geo);
}

}  // namespace

DenseKernels parse_dense_kernels(const std::string& value, const std::string& what) {
  if (value == "libtorch") return DenseKernels::kLibTorch;
  if (value == "libtorch-cl") return DenseKernels::kLibTorchChannelsLast;
  if (value == "cnx") return DenseKernels::kCnx;
  CNX_CHECK(false, what, ": unknown kernels '", value, "' (expected libtorch, libtorch-cl or cnx)");
  return DenseKernels::kCnx;
}

const char* dense_kernels_name(DenseKernels kernels) {
  switch (kernels) {
    case DenseKernels::kLibTorch:
      return "libtorch";
    case DenseKernels::kLibTorchChannelsLast:
      return "libtorch-cl";
    case DenseKernels::kCnx:
      return "cnx";
  }
  return "?";
}

DenseKernels dense_kernels() {
  return current_kernels().load();
}

void set_dense_kernels(DenseKernels kernels) {
  current_kernels().store(kernels);
}

DenseKernels effective_dense_kernels(const ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels) {
  if (kernels != DenseKernels::kCnx) return kernels;
  const int64_t p = encoder_patch_size(net);
  const bool fits = images.dim() == 4 && images.size(2) > 0 && images.size(3) > 0 && images.size(2) % p == 0 &&
                    images.size(3) % p == 0;
  return fits ? kernels : DenseKernels::kLibTorchChannelsLast;
}

at::Tensor dense_forward_encoder(ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels) {
  switch (effective_dense_kernels(net, images, kernels)) {
    case DenseKernels::kLibTorch:
      return net.forward_encoder(images.contiguous());
    case DenseKernels::kLibTorchChannelsLast:
      return net.forward_encoder(images.contiguous(at::MemoryFormat::ChannelsLast));
    case DenseKernels::kCnx:
      return cnx_encoder(net, images);
  }
  return {};
}

at::Tensor dense_forward_features(ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels) {
  return net.final_norm()->forward(dense_forward_encoder(net, images, kernels).mean({-2, -1}));
}

at::Tensor dense_forward(ConvNeXtV2Impl& net, const at::Tensor& images, DenseKernels kernels) {
  auto features = dense_forward_features(net, images, kernels);
  auto head = net.head();
  return head ? head->forward(features) : features;
}

at::Tensor dense_forward_features(ConvNeXtV2Impl& net, const at::Tensor& images) {
  return dense_forward_features(net, images, dense_kernels());
}

at::Tensor dense_forward(ConvNeXtV2Impl& net, const at::Tensor& images) {
  return dense_forward(net, images, dense_kernels());
}

}  // namespace cnx::model
