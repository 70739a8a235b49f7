#include "tools/export/run_config.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/safetensors.h"
#include "worker/checkpoint.h"

namespace cnx::tools {

namespace fs = std::filesystem;

namespace {

std::string join(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// The metadata of a .safetensors file (its header only), or an empty map for
// anything else.
std::map<std::string, std::string> safetensors_metadata(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char len_bytes[8];
  if (!in.read(len_bytes, 8)) return {};
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<unsigned char>(len_bytes[i]);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  // Not a safetensors file (a .pt is a zip: its first bytes are "PK..."), or
  // an implausible header: no metadata.
  if (ec || len < 2 || len > (uint64_t{100} << 20) || 8 + len > size) return {};
  std::string prefix(8 + len, '\0');
  std::memcpy(prefix.data(), len_bytes, 8);
  if (!in.read(prefix.data() + 8, static_cast<std::streamsize>(len))) return {};
  if (prefix[8] != '{') return {};
  return model::parse_safetensors_header(prefix, size, path).metadata;
}

}  // namespace

std::optional<SavedRunConfig> saved_run_config(const std::string& state_file) {
  std::error_code ec;
  const fs::path beside = fs::path(state_file).parent_path() / worker::kRunConfigFile;
  if (fs::path(state_file).filename() == worker::kModelFile && fs::is_regular_file(beside, ec)) {
    std::ifstream in(beside);
    std::stringstream ss;
    ss << in.rdbuf();
    return SavedRunConfig{ss.str(), beside.string()};
  }
  const auto meta = safetensors_metadata(state_file);
  if (auto it = meta.find(kConfigMetadataKey); it != meta.end())
    return SavedRunConfig{it->second, state_file + " (metadata " + kConfigMetadataKey + ")"};
  return std::nullopt;
}

std::string model_difference(const Config& a, const Config& b) {
  const ModelConfig &x = a.model, &y = b.model;
  if (x.depths != y.depths) return "model.depths " + join(x.depths) + " vs " + join(y.depths);
  if (x.dims != y.dims) return "model.dims " + join(x.dims) + " vs " + join(y.dims);
  if (x.in_chans != y.in_chans)
    return "model.in_chans " + std::to_string(x.in_chans) + " vs " + std::to_string(y.in_chans);
  if (x.block != y.block) return "model.block " + x.block + " vs " + y.block;
  if (x.decoder_dim != y.decoder_dim)
    return "model.decoder_dim " + std::to_string(x.decoder_dim) + " vs " + std::to_string(y.decoder_dim);
  if (x.decoder_depth != y.decoder_depth)
    return "model.decoder_depth " + std::to_string(x.decoder_depth) + " vs " + std::to_string(y.decoder_depth);
  return "";
}

ToolConfig tool_config(const std::string& config_path, const std::vector<std::string>& overrides,
                       const std::optional<SavedRunConfig>& saved) {
  ToolConfig t;
  std::optional<Config> from_saved;
  if (saved)
    from_saved =
        load_config_text(saved->yaml, saved->origin, config_path.empty() ? overrides : std::vector<std::string>{});
  if (!config_path.empty()) {
    t.config = load_config(config_path, overrides);
    t.source = "--config " + config_path;
    if (from_saved) {
      const std::string diff = model_difference(t.config, *from_saved);
      if (!diff.empty())
        throw ConfigError(config_path + ": describes another model than the one saved with the checkpoint (" + diff +
                          ", saved in " + saved->origin +
                          "); drop --config to use the saved config, or pass the run's own");
    }
  } else if (from_saved) {
    t.config = *from_saved;
    t.source = saved->origin + " (saved with the checkpoint)";
    t.from_saved = true;
  } else {
    t.config = load_config_text("{}", "(defaults)", overrides);
    t.source = "defaults";
  }
  return t;
}

}  // namespace cnx::tools
