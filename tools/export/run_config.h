#pragma once
// The run's config as the tools see it.
//
// Every checkpoint carries the effective config of the run that wrote it
// (config.yaml, worker/checkpoint.h), and cnx-export copies it into the
// metadata of the .safetensors it writes ("cnx_config"). The tools that open
// a checkpoint or an exported encoder (cnx-visualize, cnx-export, cnx-eval,
// cnx-finetune) take their settings, in this order, from
//   1. their own flags (--input-size, --mean, --std, ...),
//   2. --config FILE (with --set), when given,
//   3. the saved config (with --set), when the source has one,
//   4. the defaults (with --set).
// A --config whose model differs from the saved one describes another run
// and is refused (ConfigError, exit 2); other differences are logged.
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"

namespace cnx::tools {

// Metadata key of cnx-export's .safetensors: the saved config's text.
inline constexpr const char* kConfigMetadataKey = "cnx_config";
inline constexpr const char* kVersionMetadataKey = "cnx_version";

struct SavedRunConfig {
  std::string yaml;    // as saved
  std::string origin;  // where: ".../config.yaml" or "<file> (metadata cnx_config)"
};

// The config saved with `state_file` (a checkpoint's model.pt: config.yaml
// beside it; a .safetensors: its cnx_config metadata), or nullopt when there
// is none (checkpoints from before it was saved, weights from elsewhere).
std::optional<SavedRunConfig> saved_run_config(const std::string& state_file);

struct ToolConfig {
  Config config;
  std::string source;  // "--config <file>", "<origin> (saved with the checkpoint)" or "defaults"
  bool from_saved = false;
};

// Steps 2-4 above. Throws ConfigError for a bad config, and when both
// --config and a saved config are there and their models differ.
ToolConfig tool_config(const std::string& config_path, const std::vector<std::string>& overrides,
                       const std::optional<SavedRunConfig>& saved);

// "" when `a` and `b` describe the same model (name, depths, dims, in_chans,
// decoder), else what differs ("model.dims [..] vs [..]").
std::string model_difference(const Config& a, const Config& b);

}  // namespace cnx::tools
