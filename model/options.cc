#include "model/options.h"

#include <sstream>
#include <stdexcept>

#include "common/variants.h"

namespace cnx::model {
namespace {

std::string join(const std::vector<int64_t>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  os << "]";
  return os.str();
}

}  // namespace

const std::vector<std::string>& variant_names() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const auto& v : variant_table()) names.emplace_back(v.name);
    return names;
  }();
  return kNames;
}

ConvNeXtV2Options variant_options(const std::string& name) {
  if (const VariantShape* v = find_variant(name)) {
    ConvNeXtV2Options o;
    o.depths = v->depths;
    o.dims = v->dims;
    return o;
  }
  std::string accepted;
  for (const auto& n : variant_names()) accepted += (accepted.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown ConvNeXt V2 variant '" + name + "' (expected one of: " + accepted + ")");
}

void validate(const ConvNeXtV2Options& o) {
  auto fail = [](const std::string& msg) { throw std::invalid_argument("ConvNeXtV2Options: " + msg); };
  if (o.depths.size() != 4) fail("depths must have 4 entries, got " + join(o.depths));
  if (o.dims.size() != 4) fail("dims must have 4 entries, got " + join(o.dims));
  for (auto d : o.depths) {
    if (d < 1) fail("every depth must be >= 1, got " + join(o.depths));
  }
  for (auto d : o.dims) {
    if (d < 1) fail("every dim must be >= 1, got " + join(o.dims));
  }
  if (o.in_chans < 1) fail("in_chans must be >= 1, got " + std::to_string(o.in_chans));
  if (o.num_classes < 0) fail("num_classes must be >= 0, got " + std::to_string(o.num_classes));
  if (!(o.drop_path_rate >= 0.0 && o.drop_path_rate < 1.0)) {
    fail("drop_path_rate must be in [0, 1), got " + std::to_string(o.drop_path_rate));
  }
  if (!is_block_type(o.block)) fail("block must be v2 or v1, got '" + o.block + "'");
  if (o.block == "v1" && !(o.layer_scale_init > 0.0)) {
    fail("layer_scale_init must be > 0 for v1 blocks, got " + std::to_string(o.layer_scale_init));
  }
}

bool is_block_type(const std::string& block) {
  return block == "v2" || block == "v1";
}

std::string describe(const ConvNeXtV2Options& o) {
  std::ostringstream os;
  os << "depths=" << join(o.depths) << " dims=" << join(o.dims) << " in_chans=" << o.in_chans
     << " num_classes=" << o.num_classes << " drop_path_rate=" << o.drop_path_rate
     << " head_init_scale=" << o.head_init_scale;
  if (o.block != "v2") os << " block=" << o.block << " layer_scale_init=" << o.layer_scale_init;
  return os.str();
}

}  // namespace cnx::model
