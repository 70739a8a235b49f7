#pragma once
// The eight published ConvNeXt V2 sizes: the one table that the config
// loader (model.name) and the model library (variant_options) both read.
// Header-only and free of LibTorch so the lowest layers can use it.
#include <cstdint>
#include <string_view>
#include <vector>

namespace cnx {

struct VariantShape {
  const char* name;
  std::vector<int64_t> depths;  // blocks per stage
  std::vector<int64_t> dims;    // channels per stage
};

// Smallest first.
inline const std::vector<VariantShape>& variant_table() {
  static const std::vector<VariantShape> kVariants = {
      {"atto", {2, 2, 6, 2}, {40, 80, 160, 320}},      {"femto", {2, 2, 6, 2}, {48, 96, 192, 384}},
      {"pico", {2, 2, 6, 2}, {64, 128, 256, 512}},     {"nano", {2, 2, 8, 2}, {80, 160, 320, 640}},
      {"tiny", {3, 3, 9, 3}, {96, 192, 384, 768}},     {"base", {3, 3, 27, 3}, {128, 256, 512, 1024}},
      {"large", {3, 3, 27, 3}, {192, 384, 768, 1536}}, {"huge", {3, 3, 27, 3}, {352, 704, 1408, 2816}},
  };
  return kVariants;
}

// The entry called `name`, or nullptr.
inline const VariantShape* find_variant(std::string_view name) {
  for (const auto& v : variant_table()) {
    if (name == v.name) return &v;
  }
  return nullptr;
}

}  // namespace cnx
